"""``python -m bff dev`` as a real process on free loopback ports, for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

CONFIG = str(Path(__file__).resolve().parents[2] / "config" / "dev.toml")
START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass
class DevStack:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        """Ctrl-C, as a developer would; returns the launcher's exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout=STOP_TIMEOUT)


@contextmanager
def running_dev_stack(work_dir: Path) -> Iterator[DevStack]:
    """The whole local stack, healthy; whatever the test did, nothing of it outlives the block."""
    bff_port, sandbox_port, idp_port = free_ports(3)
    log = work_dir / "bff-dev.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "bff", "dev", "--config", CONFIG,
                "--port", str(bff_port),
                "--sandbox-port", str(sandbox_port),
                "--idp-port", str(idp_port),
                "--data-dir", str(work_dir / "data"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    stack = DevStack(process, f"http://127.0.0.1:{bff_port}", log)
    try:
        _wait_healthy(stack)
        yield stack
    finally:
        if process.poll() is None:
            try:
                stack.stop()
            except subprocess.TimeoutExpired:
                # The launcher leads its own process group: nothing of the stack may outlive it.
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def _wait_healthy(stack: DevStack) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    with httpx.Client(trust_env=False, timeout=1.0) as client:
        while time.monotonic() < deadline:
            if stack.process.poll() is not None:
                break
            try:
                if client.get(f"{stack.url}/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)  # polling a starting process, not waiting out a timer
    raise AssertionError(f"the BFF did not become healthy; output:\n{stack.output()}")
