"""A real `redis-server` on a free loopback port, once per test session.

Tests that need it use the `redis_server` fixture (registered in `tests/conftest.py`) and carry
the `redis` marker. Without `redis-server` on PATH they skip with the reason, unless
`REQUIRE_REDIS=1` (or `CI=true`) is set: then they fail, so CI cannot silently skip them.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

_START_TIMEOUT = 10.0


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


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _start(binary: str, workdir: Path) -> tuple[subprocess.Popen[bytes], int, Path]:
    port = _free_port()
    log = workdir / f"redis-{port}.log"
    process = subprocess.Popen(
        [
            binary,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(workdir),
            "--logfile", str(log),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    return process, port, log


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """Start `redis-server` on 127.0.0.1:<free port> for the test session; stop it after."""
    binary = shutil.which("redis-server")
    if binary is None:
        reason = "redis-server is not on PATH (apt-get install redis-server)"
        if _redis_required():
            pytest.fail(f"{reason}; REQUIRE_REDIS=1 or CI=true forbids skipping")
        pytest.skip(reason)

    with tempfile.TemporaryDirectory(prefix="bff-redis-") as tmp:
        workdir = Path(tmp)
        # A free port can be taken between probing and binding; try a few.
        for _attempt in range(3):
            process, port, log = _start(binary, workdir)
            deadline = time.monotonic() + _START_TIMEOUT
            while time.monotonic() < deadline and process.poll() is None:
                if _answers_ping(port):
                    break
                time.sleep(0.02)
            if process.poll() is None and _answers_ping(port):
                break
            _stop(process)
        else:
            detail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            pytest.fail(f"redis-server did not answer PING on 127.0.0.1:{port}\n{detail}")
        try:
            yield RedisServer("127.0.0.1", port)
        finally:
            _stop(process)
