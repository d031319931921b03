"""The dashboard's TypeScript package (``clients/typescript``): its generated API types are those
of ``bff/openapi.json`` as it is now, and its typed client behaves at run time.

Both need the package's Node modules (``npm ci --prefix clients/typescript``, which ``make lint``
and ``make test`` run when npm is installed). Without them the tests skip locally; with
``REQUIRE_TYPESCRIPT=1`` or ``CI=true`` they fail instead. Nothing is downloaded here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "clients" / "typescript"
BIN = PACKAGE / "node_modules" / ".bin"
GENERATED = PACKAGE / "src" / "api.d.ts"
OPENAPI = REPO / "bff" / "openapi.json"
TIMEOUT = 120


@pytest.fixture(scope="module")
def node_bin() -> Path:
    missing = [tool for tool in ("openapi-typescript", "tsc") if not (BIN / tool).exists()]
    if shutil.which("node") is None or missing:
        reason = (
            "node and clients/typescript/node_modules are needed "
            "(npm ci --prefix clients/typescript)"
        )
        if os.environ.get("REQUIRE_TYPESCRIPT") == "1" or os.environ.get("CI") == "true":
            pytest.fail(reason + "; REQUIRE_TYPESCRIPT=1 or CI=true needs them")
        pytest.skip(reason)
    return BIN


def _run(*argv: str | Path, cwd: Path = PACKAGE) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(arg) for arg in argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
        env={**os.environ, "NO_COLOR": "1", "FORCE_COLOR": "0"},
    )


def test_the_generated_types_are_those_of_the_openapi_document(
    node_bin: Path, tmp_path: Path
) -> None:
    fresh = tmp_path / "api.d.ts"
    result = _run(node_bin / "openapi-typescript", OPENAPI, "--output", fresh)
    assert result.returncode == 0, result.stdout + result.stderr
    assert fresh.read_text(encoding="utf-8") == GENERATED.read_text(encoding="utf-8"), (
        "clients/typescript/src/api.d.ts is stale: run `make types` and commit it"
    )


def test_the_typed_client_sends_csrf_signs_in_on_401_exposes_problems_and_revalidates(
    node_bin: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    compiled = _run(node_bin / "tsc", "-p", "tsconfig.test.json", "--outDir", out)
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
    (out / "package.json").write_text(json.dumps({"type": "module"}), encoding="utf-8")
    shutil.copy(PACKAGE / "test" / "client.test.mjs", out)
    result = _run("node", "--test", "client.test.mjs", cwd=out)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "# fail 0" in result.stdout and "# pass 10" in result.stdout, result.stdout


def test_the_package_pins_its_tools_exactly() -> None:
    manifest = json.loads((PACKAGE / "package.json").read_text(encoding="utf-8"))
    lock = json.loads((PACKAGE / "package-lock.json").read_text(encoding="utf-8"))
    for name, version in manifest["devDependencies"].items():
        assert version[0].isdigit(), f"{name} {version}: pin an exact version"
        assert lock["packages"][f"node_modules/{name}"]["version"] == version, name


def test_the_session_events_helper_hands_over_typed_events_and_closes_after_ended(
    node_bin: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    compiled = _run(node_bin / "tsc", "-p", "tsconfig.test.json", "--outDir", out)
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
    (out / "package.json").write_text(json.dumps({"type": "module"}), encoding="utf-8")
    shutil.copy(PACKAGE / "test" / "session_events.test.mjs", out)
    result = _run("node", "--test", "session_events.test.mjs", cwd=out)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "# fail 0" in result.stdout and "# pass 2" in result.stdout, result.stdout
