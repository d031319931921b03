"""``python -m bff dev`` on free loopback ports, for the end-to-end and browser tests."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from tests.support.ports import free_ports
from tests.support.processes import ServerProcess, serving

CONFIG = str(Path(__file__).resolve().parents[2] / "config" / "dev.toml")
START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0


@contextmanager
def running_dev_stack(
    work_dir: Path, env: Mapping[str, str] | None = None
) -> Iterator[ServerProcess]:
    """The whole local stack, healthy; whatever the test did, nothing of it outlives the block.

    ``stop()`` sends Ctrl-C (SIGINT), as a developer would, and returns the launcher's status.
    ``env`` adds variables (``BFF__…`` settings) to the launcher's environment.
    """
    bff_port, sandbox_port, idp_port = free_ports(3)
    argv = [
        sys.executable, "-m", "bff", "dev", "--config", CONFIG,
        "--port", str(bff_port),
        "--sandbox-port", str(sandbox_port),
        "--idp-port", str(idp_port),
        "--data-dir", str(work_dir / "data"),
    ]  # fmt: skip
    with serving(
        argv,
        name="the BFF",
        url=f"http://127.0.0.1:{bff_port}",
        log=work_dir / "bff-dev.log",
        env=None if env is None else {**os.environ, **env},
        start_timeout=START_TIMEOUT,
        stop_signal=signal.SIGINT,
        grace=STOP_TIMEOUT,
    ) as stack:
        yield stack
