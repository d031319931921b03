"""A real `redis-server` on a free loopback port, once per test session.

Tests that need it use the `redis_server` fixture (registered in `tests/conftest.py`) and carry
the `redis` marker. Without `redis-server` on PATH they skip with the reason, unless
`REQUIRE_REDIS=1` (or `CI=true`) is set: then they fail, so CI cannot silently skip them.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest

from tests.support.ports import free_port
from tests.support.processes import ServerDidNotStart, serving

_START_TIMEOUT = 10.0
_START_ATTEMPTS = 3


@dataclass(frozen=True)
class RedisServer:
    """Where the test Redis listens."""

    host: str
    port: int

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"


def _redis_required() -> bool:
    return os.environ.get("REQUIRE_REDIS") == "1" or os.environ.get("CI") == "true"


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _start(binary: str, workdir: Path, running: ExitStack) -> RedisServer:
    failure: ServerDidNotStart | None = None
    # A free port can be taken between choosing and binding it; try a few.
    for _attempt in range(_START_ATTEMPTS):
        port = free_port()
        argv = [
            binary,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(workdir),
        ]  # fmt: skip
        server = RedisServer("127.0.0.1", port)
        try:
            running.enter_context(
                serving(
                    argv,
                    name=f"redis-server on 127.0.0.1:{port}",
                    url=server.url,
                    ready=partial(_answers_ping, port),
                    log=workdir / f"redis-{port}.log",
                    start_timeout=_START_TIMEOUT,
                    grace=5.0,
                )
            )
        except ServerDidNotStart as exc:
            failure = exc
            continue
        return server
    pytest.fail(str(failure))


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """Start `redis-server` on 127.0.0.1:<free port> for the test session; stop it after."""
    binary = shutil.which("redis-server")
    if binary is None:
        reason = "redis-server is not on PATH (apt-get install redis-server)"
        if _redis_required():
            pytest.fail(f"{reason}; REQUIRE_REDIS=1 or CI=true forbids skipping")
        pytest.skip(reason)

    with tempfile.TemporaryDirectory(prefix="bff-redis-") as tmp, ExitStack() as running:
        yield _start(binary, Path(tmp), running)
