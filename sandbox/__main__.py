"""Command line: ``python -m sandbox serve --config config/dev.toml [options]``."""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys
from collections.abc import Sequence
from types import FrameType

import uvicorn

from sandbox.app import create_app
from sandbox.config import ConfigError, load_settings, with_changes, with_issuers


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the backend flows API under uvicorn")
    serve.add_argument("--config", required=True, help="TOML file with a [sandbox] table")
    serve.add_argument("--host", help="interface to bind (default: sandbox.host, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (default: sandbox.port, 8001)")
    serve.add_argument(
        "--db", help="SQLite file, created with its directory; ':memory:' keeps nothing"
    )
    serve.add_argument(
        "--trusted-issuer",
        action="append",
        default=[],
        metavar="ISSUER=JWKS_URI",
        help="trust this JWT issuer instead of the configured ones (repeatable)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments and run the requested command; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(args.config, db=args.db)
        if args.trusted_issuer:
            issuers: dict[str, str] = {}
            for item in args.trusted_issuer:
                issuer, sep, jwks_uri = item.partition("=")
                if not sep or not issuer or not jwks_uri:
                    raise ConfigError(f"--trusted-issuer {item!r}: expected ISSUER=JWKS_URI")
                issuers[issuer] = jwks_uri
            settings = with_issuers(settings, issuers)
        overrides = {
            name: value
            for name, value in (("host", args.host), ("port", args.port))
            if value is not None
        }
        settings = with_changes(settings, **overrides)
    except ConfigError as exc:
        print(f"sandbox: {exc}", file=sys.stderr)
        return 2
    app = create_app(settings)
    # One line per request (with the traceparent received) on stdout; uvicorn says only problems.
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stdout,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
        lifespan="on",
    )
    server = _AnnouncingServer(config, db=settings.db)
    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then re-raises the signal to whatever
    # handler was installed before it; ours turns that into a normal exit with status 0.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _exit_quietly)
    try:
        server.run()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


class _AnnouncingServer(uvicorn.Server):
    """Prints one line with the bound address once the socket is listening."""

    def __init__(self, config: uvicorn.Config, *, db: str) -> None:
        super().__init__(config)
        self._db = db

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        listeners = [listener for server in self.servers for listener in server.sockets]
        if listeners:
            # With --port 0 the kernel picks the port; report the one actually bound.
            host, port = listeners[0].getsockname()[:2]
            print(f"sandbox listening on http://{host}:{port} (db {self._db})", flush=True)


def _exit_quietly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


if __name__ == "__main__":
    sys.exit(main())
