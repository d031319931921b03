"""``bff dev``: the sandbox backend, the development OpenID provider and the BFF, in one command.

:func:`run_dev_stack` checks that the three loopback ports are free, starts the sandbox and the
provider, waits until each answers, starts the BFF pointed at both, waits for it, prints where
everything is and who can sign in, and then supervises: the children's output is shown line by
line with their name in front; if one of them exits, the others are stopped and its last output is
shown; Ctrl-C (SIGINT) or SIGTERM stops all three (terminate, then kill after a grace period).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import tomllib
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO

import httpx

from bff.cli import port_problem
from bff.paths import CALLBACK_PATH, JWKS_PATH, LOGIN_PATH
from bff.settings import DEFAULT_PORT, DEV_PROVIDER_PORT, DEV_UPSTREAM_PORT, LOOPBACK

__all__ = ["DevStackError", "run_dev_stack"]

HOST = LOOPBACK
READY_TIMEOUT_SECONDS = 30.0
"""How long a child may take to answer its readiness URL."""
POLL_INTERVAL_SECONDS = 0.1
STOP_GRACE_SECONDS = 5.0
"""How long children get to exit after SIGTERM before they are killed."""
LAST_LINES = 30
"""Output lines kept per child, shown when it exits unexpectedly."""


class DevStackError(Exception):
    """The stack could not start; the message says why in words a developer can act on."""


class _Output:
    """Line-oriented writes to one stream, safe from several threads."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def line(self, text: str = "") -> None:
        with self._lock:
            self._stream.write(text + "\n")
            self._stream.flush()


@dataclass
class _Child:
    name: str
    argv: list[str]
    ready_url: str
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[str] | None = None
    reader: threading.Thread | None = None
    last_lines: deque[str] = field(default_factory=lambda: deque(maxlen=LAST_LINES))

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def exited(self) -> int | None:
        return None if self.process is None else self.process.poll()


def run_dev_stack(
    config_path: str,
    *,
    port: int = DEFAULT_PORT,
    sandbox_port: int = DEV_UPSTREAM_PORT,
    idp_port: int = DEV_PROVIDER_PORT,
    data_dir: str = ".data",
    bff_command: Sequence[str] | None = None,
    stdout: IO[str] | None = None,
) -> int:
    """Run the development stack until interrupted; returns the process exit status.

    ``bff_command`` replaces ``[sys.executable, "-m", "bff", "serve", "--config", …]`` (tests
    use a stand-in). Returns 0 after Ctrl-C or SIGTERM, 2 if the config file is missing or a port
    is busy (nothing started), 1 if a child fails to start or exits.
    """
    out = _Output(stdout or sys.stdout)
    try:
        children = _plan(config_path, port, sandbox_port, idp_port, data_dir, bff_command)
        _check_ports(
            {
                "BFF": (port, "--port"),
                "sandbox": (sandbox_port, "--sandbox-port"),
                "identity provider": (idp_port, "--idp-port"),
            }
        )
        Path(data_dir).mkdir(parents=True, exist_ok=True)
    except DevStackError as exc:
        out.line(f"bff dev: {exc}")
        return 2

    stop = threading.Event()
    restore = _install_signal_handlers(stop)
    try:
        return _run(config_path, children, stop, out, port, sandbox_port, idp_port)
    finally:
        _stop_all(children, out)
        restore()


def _plan(
    config_path: str,
    port: int,
    sandbox_port: int,
    idp_port: int,
    data_dir: str,
    bff_command: Sequence[str] | None,
) -> list[_Child]:
    if not Path(config_path).is_file():
        raise DevStackError(f"config file {config_path} not found")
    bff_origin = f"http://{HOST}:{port}"
    idp_origin = f"http://{HOST}:{idp_port}"
    sandbox_origin = f"http://{HOST}:{sandbox_port}"
    python = [sys.executable, "-u", "-m"]
    sandbox = _Child(
        name="sandbox",
        argv=[
            *python,
            "sandbox",
            "serve",
            "--config",
            config_path,
            "--host",
            HOST,
            "--port",
            str(sandbox_port),
            "--db",
            str(Path(data_dir) / "sandbox.db"),
            "--trusted-issuer",
            f"{bff_origin}={bff_origin}{JWKS_PATH}",
            # The provider's access tokens are JWTs too: credential mode "relay" works in dev.
            "--trusted-issuer",
            f"{idp_origin}={idp_origin}/jwks",
        ],
        ready_url=f"{sandbox_origin}/healthz",
    )
    idp = _Child(
        name="idp",
        argv=[
            *python,
            "devstack.idp",
            "--config",
            config_path,
            "--host",
            HOST,
            "--port",
            str(idp_port),
            "--redirect-uri",
            f"{bff_origin}{CALLBACK_PATH}",
        ],
        ready_url=f"{idp_origin}/.well-known/openid-configuration",
    )
    bff = _Child(
        name="bff",
        argv=list(bff_command)
        if bff_command is not None
        else [
            *python,
            "bff",
            "serve",
            "--config",
            config_path,
            "--host",
            HOST,
            "--port",
            str(port),
        ],
        ready_url=f"{bff_origin}/healthz",
        env={
            "BFF__BFF__PUBLIC_ORIGIN": bff_origin,
            "BFF__UPSTREAM__BASE_URL": sandbox_origin,
            "BFF__OIDC__ISSUER": idp_origin,
            # Logs for a person at a terminal, and the audit trail in the data directory (kept
            # across restarts), unless the caller asked otherwise.
            "BFF__LOG__FORMAT": os.environ.get("BFF__LOG__FORMAT", "text"),
            "BFF__AUDIT__SINK": os.environ.get("BFF__AUDIT__SINK", "file"),
            "BFF__AUDIT__PATH": os.environ.get(
                "BFF__AUDIT__PATH", str(Path(data_dir) / "audit.jsonl")
            ),
        },
    )
    return [sandbox, idp, bff]


def _check_ports(ports: Mapping[str, tuple[int, str]]) -> None:
    """Each child's port (by name: the port and the flag that changes it) is free, and its own."""
    seen: dict[int, str] = {}
    for name, (number, _) in ports.items():
        if number in seen:
            raise DevStackError(f"the {name} and the {seen[number]} cannot share port {number}")
        seen[number] = name
    for name, (number, flag) in ports.items():
        if problem := port_problem(HOST, number, flag=flag, name=name):
            raise DevStackError(problem)


def _install_signal_handlers(stop: threading.Event) -> Callable[[], None]:
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore


def _run(
    config_path: str,
    children: list[_Child],
    stop: threading.Event,
    out: _Output,
    port: int,
    sandbox_port: int,
    idp_port: int,
) -> int:
    sandbox, idp, bff = children
    with httpx.Client(timeout=1.0, trust_env=False) as http:
        for stage in ([sandbox, idp], [bff]):
            for child in stage:
                _start(child, out)
            for child in stage:
                failed = _wait_ready(child, children, stop, http)
                if stop.is_set():
                    out.line("bff dev: stopping")
                    return 0
                if failed is not None:
                    _report_exit(failed, out)
                    return 1
    _banner(out, config_path, port, sandbox_port, idp_port)
    while not stop.wait(POLL_INTERVAL_SECONDS):
        for child in children:
            if child.exited() is not None:
                _report_exit(child, out)
                return 1
    out.line("bff dev: stopping")
    return 0


def _start(child: _Child, out: _Output) -> None:
    env = {**os.environ, **child.env, "PYTHONUNBUFFERED": "1"}
    child.process = subprocess.Popen(
        child.argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        text=True,
        errors="replace",
        bufsize=1,
        # Own process group: Ctrl-C reaches only the launcher, which stops the children in order.
        start_new_session=True,
    )
    out.line(f"bff dev: started {child.name} (pid {child.process.pid})")
    child.reader = threading.Thread(
        target=_relay_output, args=(child, out), name=f"bff-dev-{child.name}", daemon=True
    )
    child.reader.start()


def _relay_output(child: _Child, out: _Output) -> None:
    assert child.process is not None and child.process.stdout is not None
    for raw in child.process.stdout:
        line = raw.rstrip("\n")
        child.last_lines.append(line)
        out.line(f"[{child.name}] {line}")


def _wait_ready(
    child: _Child, children: Sequence[_Child], stop: threading.Event, http: httpx.Client
) -> _Child | None:
    """Wait until ``child`` answers 200; return the child that died meanwhile, if any."""
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while not stop.is_set():
        for other in children:
            if other.exited() is not None:
                return other
        try:
            if http.get(child.ready_url).status_code == httpx.codes.OK:
                return None
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            child.last_lines.append(
                f"(no answer from {child.ready_url} within {READY_TIMEOUT_SECONDS:.0f} s)"
            )
            return child
        stop.wait(POLL_INTERVAL_SECONDS)
    return None


def _report_exit(child: _Child, out: _Output) -> None:
    if child.reader is not None:
        child.reader.join(timeout=1.0)
    status = child.exited()
    how = "did not become ready" if status is None else f"exited with status {status}"
    out.line(f"bff dev: {child.name} {how}; its last output:")
    for line in child.last_lines:
        out.line(f"    {line}")


def _stop_all(children: Sequence[_Child], out: _Output) -> None:
    running = [c for c in reversed(children) if c.process is not None and c.exited() is None]
    for child in running:
        _signal(child, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for child in running:
        assert child.process is not None
        try:
            child.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            out.line(f"bff dev: {child.name} did not stop in {STOP_GRACE_SECONDS:.0f} s; killing")
            _signal(child, signal.SIGKILL)
            child.process.wait()
    for child in children:
        if child.reader is not None:
            child.reader.join(timeout=1.0)
        if child.process is not None and child.process.stdout is not None:
            child.process.stdout.close()
    if running:
        out.line("bff dev: stopped " + ", ".join(child.name for child in running))


def _signal(child: _Child, sig: int) -> None:
    assert child.process is not None
    # The whole group: a child that started helpers of its own takes them down with it.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.process.pid, sig)


def _banner(out: _Output, config_path: str, port: int, sandbox_port: int, idp_port: int) -> None:
    with Path(config_path).open("rb") as fh:
        config = tomllib.load(fh)
    users = config.get("dev", {}).get("users", [])
    api_keys = config.get("sandbox", {}).get("api_keys", [])
    bff = f"http://{HOST}:{port}"
    lines = [
        "",
        "Flows BFF development stack is running (Ctrl-C stops all three).",
        "",
        f"  BFF:                {bff}",
        f"  Sign in:            {bff}{LOGIN_PATH}?returnTo=/",
        f"  Dev console:        {bff}/",
        f"  Sandbox backend:    http://{HOST}:{sandbox_port}",
        f"  Identity provider:  http://{HOST}:{idp_port}",
        "",
        "  Demo logins (type the name in the provider's form):",
        *(f"    {u.get('sub', '?'):<8} {_grants(u.get('zen_tenants', {}))}" for u in users),
        "",
        "  Sandbox API keys (Authorization: Bearer <key>, or X-API-Key: <key>):",
        *(
            f"    {k.get('key', '?'):<24} {_grants({k.get('tenant_id', '?'): k.get('scopes', [])})}"
            for k in api_keys
        ),
        "",
    ]
    for line in lines:
        out.line(line)


def _grants(tenants: Mapping[str, Sequence[str]]) -> str:
    if not tenants:
        return "no tenants"
    return "; ".join(f"{tenant}: {', '.join(scopes)}" for tenant, scopes in tenants.items())
