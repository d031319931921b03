"""Real server processes on loopback: started, awaited until they answer, always stopped.

:func:`serving` is how every test runs a server as a process (``bff serve``, ``bff dev``, the
sandbox, the development provider, ``redis-server``). What the process prints goes to a log file;
when the server does not come up, the error carries that output.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

POLL_INTERVAL = 0.05
BFF_SCRIPT = Path(sys.executable).parent / "bff"
"""The ``bff`` console script of the environment running the tests."""


class ServerDidNotStart(AssertionError):
    """The server exited or did not answer in time; the message holds what it printed."""


@dataclass
class ServerProcess:
    """A server started by :func:`serving`."""

    process: subprocess.Popen[bytes]
    url: str
    log: Path
    stop_signal: signal.Signals
    grace: float

    def output(self) -> str:
        """Everything it has printed so far, stdout and stderr."""
        return self.log.read_text(errors="replace")

    def stop(self, signum: signal.Signals | None = None) -> int:
        """Send ``signum`` (the stop signal unless told), wait up to the grace; its exit status.

        Raises ``subprocess.TimeoutExpired`` when it still runs after the grace period.
        """
        if self.process.poll() is None:
            self.process.send_signal(signum or self.stop_signal)
        return self.process.wait(timeout=self.grace)


@contextmanager
def serving(
    argv: Sequence[str],
    *,
    name: str,
    url: str,
    ready: str | Callable[[], bool] = "/healthz",
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    log: Path | None = None,
    start_timeout: float = 20.0,
    stop_signal: signal.Signals = signal.SIGTERM,
    grace: float = 10.0,
) -> Iterator[ServerProcess]:
    """Run ``argv`` for the length of the block, entered once the server answers.

    ``url`` is where the server listens; ``ready`` is a path under it that must answer 200, or a
    check of its own for a server that does not speak HTTP. Its output goes to ``log`` (a
    temporary file unless given). ``name`` says in errors which server did not start.

    The process leads a process group of its own. On leaving the block it gets ``stop_signal``;
    if it still runs ``grace`` seconds later, the whole group is killed, so nothing it started
    outlives the test.
    """
    answers = _answers_200(url + ready) if isinstance(ready, str) else ready
    with ExitStack() as temporary:
        if log is None:
            log = Path(temporary.enter_context(tempfile.TemporaryDirectory())) / "output.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=None if env is None else dict(env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        server = ServerProcess(process, url, log, stop_signal, grace)
        try:
            _wait_until_ready(server, name, answers, start_timeout)
            yield server
        finally:
            _stop(server)


def clean_environ(**overrides: str) -> dict[str, str]:
    """This process's environment without any BFF setting, plus ``overrides``.

    A :data:`BFF_SCRIPT` process started with it sees only the settings the test gives it,
    whatever the developer running the tests has exported.
    """
    environ = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("BFF__") and name != "BFF_CONFIG"
    }
    environ.update(overrides)
    return environ


def _answers_200(url: str) -> Callable[[], bool]:
    def answers() -> bool:
        try:
            return httpx.get(url, timeout=1.0, trust_env=False).status_code == 200
        except httpx.TransportError:
            return False

    return answers


def _wait_until_ready(
    server: ServerProcess, name: str, answers: Callable[[], bool], timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while server.process.poll() is None:
        if answers():
            return
        if time.monotonic() > deadline:
            raise ServerDidNotStart(
                f"{name} did not answer within {timeout:g} s; its output:\n{server.output()}"
            )
        time.sleep(POLL_INTERVAL)  # polling a starting process, not waiting out a timer
    raise ServerDidNotStart(
        f"{name} exited with status {server.process.returncode} before it answered; "
        f"its output:\n{server.output()}"
    )


def _stop(server: ServerProcess) -> None:
    if server.process.poll() is not None:
        return
    try:
        server.stop()
    except subprocess.TimeoutExpired:
        os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait()
