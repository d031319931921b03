"""``bff``: run the gateway (``serve``), check a config (``check-config``), make its keys
(``keys``), check the audit trail (``audit verify``); ``bff dev`` (the
whole local stack) is added by the development package ``devstack`` when it is installed.

Output meant for the person at the terminal goes through :func:`say`; everything else is logging.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import os
import signal
import socket
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points
from pathlib import Path
from types import FrameType

import uvicorn
from starlette.applications import Starlette

from . import logs
from .app import create_app
from .checks import check_files, probe, write_missing_keys
from .settings import (
    DEFAULT_PORT,
    LOOPBACK,
    ConfigError,
    Settings,
    config_file,
    load_settings,
)
from .state.sealing import KeyRingError, promote_staged, rotate_ring

COMMANDS_GROUP = "bff.commands"
"""Entry points of this group are called with the subcommand parsers to add their own."""


def say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def app_from_environment() -> Starlette:
    """uvicorn factory for worker processes: the config path travels in ``BFF_CONFIG``."""
    settings = load_settings()
    # Worker processes start afresh: their logging is configured here, as in the parent.
    _configure_logging(settings)
    return create_app(settings, drain_on_signals=True)


def _configure_logging(settings: Settings) -> None:
    logs.configure(settings.log.format, settings.log.level, access=settings.log.access)


def _load(path: str | None) -> Settings:
    try:
        return load_settings(path, more_checks=check_files)
    except ConfigError as exc:
        sys.stderr.write(f"bff: configuration error: {exc}\n")
        raise SystemExit(2) from None


def serve(args: argparse.Namespace) -> int:
    settings = _load(args.config)
    if args.workers > 1 and (problem := _single_process_only(settings)):
        sys.stderr.write(f"bff: configuration error: {problem} (--workers {args.workers})\n")
        return 2
    if problem := port_problem(args.host, args.port, flag="--port"):
        sys.stderr.write(f"bff serve: {problem}\n")
        return 2
    if args.config:
        os.environ["BFF_CONFIG"] = os.path.abspath(args.config)
    _configure_logging(settings)
    # uvicorn shuts down gracefully on SIGTERM and SIGINT, then raises the signal again for the
    # handler it found: this one, which ends the process with status 0 (a clean stop).
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _exit_cleanly)
    say(f"bff: serving on http://{args.host}:{args.port} (upstream {settings.upstream.base_url})")
    uvicorn.run(
        "bff.cli:app_from_environment",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=settings.log.level,
        # Logging is ours (bff.logs): uvicorn's records go through it; its access log is off,
        # the gateway writes its own access line.
        log_config=None,
        server_header=False,
        date_header=False,
        proxy_headers=False,
        access_log=False,
        lifespan="on",
        # Requests still in flight after this are cancelled and their connections closed.
        timeout_graceful_shutdown=settings.server.shutdown_grace_seconds,
    )
    return 0


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def port_problem(host: str, port: int, *, flag: str, name: str = "") -> str | None:
    """Why nothing can listen on ``host:port``, in a sentence that names the ``flag`` choosing
    another port when this one is taken (``name`` says whose port it is); None when it is free."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # SO_REUSEADDR, as uvicorn binds: a socket in TIME_WAIT from a previous run leaves the
        # port free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            port_of = f"port {port} for the {name}" if name else f"port {port}"
            if exc.errno == errno.EADDRINUSE:
                return (
                    f"{port_of} on {host} is already in use; stop what holds it or choose "
                    f"another port ({flag})"
                )
            return f"{port_of} on {host} cannot be listened on: {exc.strerror}"
    return None


def _single_process_only(settings: Settings) -> str | None:
    """What in ``settings`` lives inside one process, so that workers could not share it."""
    if settings.sessions.backend == "memory":
        return "[sessions].backend: 'memory' keeps sign-ins in one process; use 'redis'"
    if (
        settings.upstream.credential == "internal-jwt"
        and not settings.internal_jwt.signing_key_file
    ):
        return "[internal_jwt].signing_key_file: required, or each worker signs with its own key"
    return None


def check_config(args: argparse.Namespace) -> int:
    settings = _load(args.config)
    say(
        f"ok: upstream {settings.upstream.base_url} ({settings.upstream.credential}), "
        f"provider {settings.oidc.issuer}, sessions in {settings.sessions.backend}, "
        f"public origin {settings.bff.public_origin}, from {config_file(args.config)}"
    )
    if not args.probe:
        return 0
    checks = asyncio.run(probe(settings))
    for check in checks:
        say(f"{'ok  ' if check.passed else 'FAIL'} {check.name}: {check.detail}")
    return 0 if all(check.passed for check in checks) else 1


def keys(args: argparse.Namespace) -> int:
    """Write the key files the configuration names that do not exist yet, or rotate the ring."""
    try:
        settings = load_settings(args.config, for_keys=True)
    except ConfigError as exc:
        sys.stderr.write(f"bff: configuration error: {exc}\n")
        return 2
    ring = settings.sessions.encryption_keys_file
    try:
        if args.action == "rotate":
            if ring is None or not Path(ring).exists():
                sys.stderr.write(
                    "bff keys rotate: no key ring to rotate ([sessions].encryption_keys_file "
                    "names none that exists; bff keys --config FILE makes it)\n"
                )
                return 2
            if args.promote:
                key_id = promote_staged(Path(ring))
                say(f"promoted key {key_id} in {ring}: it seals from the next start")
            elif args.stage:
                key_id = rotate_ring(Path(ring), stage=True)
                say(
                    f"staged new key {key_id} in {ring}: it opens from the next start; once "
                    "every instance runs with it, bff keys rotate --promote"
                )
            else:
                key_id = rotate_ring(Path(ring))
                say(f"rotated {ring}: new key {key_id} seals from the next start; the others open")
            return 0
        written = write_missing_keys(settings)
    except (OSError, KeyRingError) as exc:
        sys.stderr.write(f"bff keys: {exc}\n")
        return 1
    for line in written or ["nothing to write: every key file the configuration names exists"]:
        say(line)
    return 0


def audit_verify(args: argparse.Namespace) -> int:
    from .audit import verify

    try:
        checked, broken = verify(args.files)
    except OSError as exc:
        sys.stderr.write(f"bff audit verify: {exc.filename}: {exc.strerror}\n")
        return 2
    if broken is not None:
        say(f"broken: {broken} ({checked} event(s) before it held)")
        return 1
    say(f"ok: {checked} event(s), every chain whole")
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="bff", description="The delivery-flows gateway of the dashboard."
    )
    commands = root.add_subparsers(dest="command", required=True)

    run = commands.add_parser("serve", help="serve the BFF under uvicorn")
    run.add_argument("--config", help="TOML file (default: $BFF_CONFIG or the embedded dev.toml)")
    run.add_argument("--host", default=LOOPBACK)
    run.add_argument("--port", type=int, default=DEFAULT_PORT)
    run.add_argument("--workers", type=int, default=1)
    run.set_defaults(handler=serve)

    check = commands.add_parser("check-config", help="validate a configuration and exit")
    check.add_argument("--config", help="TOML file (default: $BFF_CONFIG or the embedded dev.toml)")
    check.add_argument(
        "--probe",
        action="store_true",
        help="also contact the identity provider (discovery, keys, the client's credentials) "
        "and the upstream; exit 1 if one fails",
    )
    check.set_defaults(handler=check_config)

    key_files = commands.add_parser(
        "keys",
        help="write the key files the configuration names that do not exist yet (never over "
        "one); 'rotate' puts a new first key on the session key ring",
    )
    key_files.add_argument("action", nargs="?", choices=["rotate"])
    order = key_files.add_mutually_exclusive_group()
    order.add_argument(
        "--stage",
        action="store_true",
        help="rotate: add the new key second (it opens, not seals), for a fleet to learn it first",
    )
    order.add_argument(
        "--promote", action="store_true", help="rotate: move the staged second key to the top"
    )
    key_files.add_argument(
        "--config", help="TOML file (default: $BFF_CONFIG or the embedded dev.toml)"
    )
    key_files.set_defaults(handler=keys)

    audit = commands.add_parser("audit", help="work with the audit trail")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_commands.add_parser(
        "verify", help="check the hash chains of audit files; exit 1 at the first break"
    )
    verify.add_argument("files", nargs="+", metavar="FILE")
    verify.set_defaults(handler=audit_verify)

    # Commands other packages add (``bff dev`` comes from the development stack, ``devstack``):
    # the gateway does not import them, they register themselves under this entry-point group.
    for entry_point in sorted(entry_points(group=COMMANDS_GROUP), key=lambda ep: ep.name):
        entry_point.load()(commands)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    result: int = args.handler(args)
    return result
