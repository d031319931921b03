"""``bff``: run the gateway (``serve``), the whole local stack (``dev``), or check a config.

Output meant for the person at the terminal goes through :func:`say`; everything else is logging.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

import uvicorn
from starlette.applications import Starlette

from .app import create_app
from .settings import DEFAULT_CONFIG, ConfigError, Settings, load_settings

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def app_from_environment() -> Starlette:
    """uvicorn factory for worker processes: the config path travels in ``BFF_CONFIG``."""
    return create_app(load_settings())


def _load(path: str | None) -> Settings:
    try:
        return load_settings(path)
    except ConfigError as exc:
        sys.stderr.write(f"bff: configuration error: {exc}\n")
        raise SystemExit(2) from None


def serve(args: argparse.Namespace) -> int:
    settings = _load(args.config)
    if args.workers > 1 and (problem := _single_process_only(settings)):
        sys.stderr.write(f"bff: configuration error: {problem} (--workers {args.workers})\n")
        return 2
    if args.config:
        os.environ["BFF_CONFIG"] = os.path.abspath(args.config)
    logging.basicConfig(level=settings.bff.log_level.upper(), format=LOG_FORMAT)
    # httpx logs every request at INFO; the BFF's own metrics and logs already cover them.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    say(f"bff: serving on http://{args.host}:{args.port} (upstream {settings.upstream.base_url})")
    uvicorn.run(
        "bff.cli:app_from_environment",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=settings.bff.log_level,
        server_header=False,
        date_header=False,
        proxy_headers=False,
        access_log=args.access_log,
        lifespan="on",
    )
    return 0


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


def dev(args: argparse.Namespace) -> int:
    from .devstack import run_dev_stack

    return run_dev_stack(
        args.config or str(DEFAULT_CONFIG),
        port=args.port,
        sandbox_port=args.sandbox_port,
        idp_port=args.idp_port,
        data_dir=args.data_dir,
    )


def check_config(args: argparse.Namespace) -> int:
    settings = _load(args.config)
    say(
        f"ok: upstream {settings.upstream.base_url} ({settings.upstream.credential}), "
        f"provider {settings.oidc.issuer}, sessions in {settings.sessions.backend}, "
        f"public origin {settings.bff.public_origin}"
    )
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="bff", description=__doc__.splitlines()[0])
    commands = root.add_subparsers(dest="command", required=True)

    run = commands.add_parser("serve", help="serve the BFF under uvicorn")
    run.add_argument("--config", help="TOML file (default: $BFF_CONFIG or config/dev.toml)")
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, default=8000)
    run.add_argument("--workers", type=int, default=1)
    run.add_argument("--access-log", action="store_true", help="log every request")
    run.set_defaults(handler=serve)

    local = commands.add_parser("dev", help="sandbox + development provider + BFF on loopback")
    local.add_argument("--config", help="TOML file (default: config/dev.toml)")
    local.add_argument("--port", type=int, default=8000)
    local.add_argument("--sandbox-port", type=int, default=8001)
    local.add_argument("--idp-port", type=int, default=8002)
    local.add_argument("--data-dir", default=".data")
    local.set_defaults(handler=dev)

    check = commands.add_parser("check-config", help="validate a configuration and exit")
    check.add_argument("--config", help="TOML file (default: $BFF_CONFIG or config/dev.toml)")
    check.set_defaults(handler=check_config)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    result: int = args.handler(args)
    return result
