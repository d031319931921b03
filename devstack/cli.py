"""``bff dev``: registered on the ``bff`` command through the ``bff.commands`` entry point."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from typing import Any

from bff.settings import DEFAULT_CONFIG, DEFAULT_PORT, DEV_PROVIDER_PORT, DEV_UPSTREAM_PORT

# What the development provider needs beyond the gateway's own dependencies (the dev extra).
_DEV_MODULES = ("flask", "oidc_provider_mock")


def register(commands: argparse._SubParsersAction[Any]) -> None:
    local = commands.add_parser("dev", help="sandbox + development provider + BFF on loopback")
    local.add_argument("--config", help=f"TOML file (default: {DEFAULT_CONFIG.name})")
    local.add_argument("--port", type=int, default=DEFAULT_PORT)
    local.add_argument("--sandbox-port", type=int, default=DEV_UPSTREAM_PORT)
    local.add_argument("--idp-port", type=int, default=DEV_PROVIDER_PORT)
    local.add_argument("--data-dir", default=".data")
    local.set_defaults(handler=dev)


def dev(args: argparse.Namespace) -> int:
    missing = [name for name in _DEV_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        sys.stderr.write(
            f"bff dev: needs the development extra ({', '.join(missing)} missing): "
            "pip install 'flows-bff[dev]'\n"
        )
        return 2
    from .stack import run_dev_stack

    return run_dev_stack(
        args.config or str(DEFAULT_CONFIG),
        port=args.port,
        sandbox_port=args.sandbox_port,
        idp_port=args.idp_port,
        data_dir=args.data_dir,
    )
