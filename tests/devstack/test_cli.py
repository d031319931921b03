"""``bff dev`` comes from the development package through the ``bff.commands`` entry point."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

import sandbox.config
from bff.cli import parser
from bff.settings import DEFAULT_PORT, DEV_PROVIDER_PORT, DEV_UPSTREAM_PORT, Settings
from devstack.cli import dev


def test_bff_dev_keeps_its_flags_and_defaults() -> None:
    args = parser().parse_args(["dev"])
    assert args.handler is dev
    assert (args.port, args.sandbox_port, args.idp_port) == (
        DEFAULT_PORT,
        DEV_UPSTREAM_PORT,
        DEV_PROVIDER_PORT,
    )
    assert args.data_dir == ".data"
    custom = parser().parse_args(
        ["dev", "--port", "9000", "--sandbox-port", "9001", "--idp-port", "9002"]
    )
    assert (custom.port, custom.sandbox_port, custom.idp_port) == (9000, 9001, 9002)


def test_the_development_ports_agree_across_packages() -> None:
    # The sandbox stands alone and keeps its own default; the gateway's defaults point at it.
    assert sandbox.config.DEFAULT_PORT == DEV_UPSTREAM_PORT
    defaults = Settings()
    assert defaults.upstream.base_url.endswith(f":{DEV_UPSTREAM_PORT}")
    assert defaults.oidc.issuer.endswith(f":{DEV_PROVIDER_PORT}")
    assert defaults.bff.public_origin.endswith(f":{DEFAULT_PORT}")


def test_an_unknown_subcommand_is_refused() -> None:
    with pytest.raises(SystemExit):
        parser().parse_args(["devv"])


REPO = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_dev_passes_its_args_on_to_bff_dev() -> None:
    planned = subprocess.run(
        # --no-print-directory: under `make test` this make is a sub-make, which would otherwise
        # announce the directory it enters and leaves.
        ["make", "--no-print-directory", "--dry-run", "dev", "ARGS=--port 9000 --idp-port 9002"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert planned.stdout.splitlines()[-1] == ".venv/bin/bff dev --port 9000 --idp-port 9002"
