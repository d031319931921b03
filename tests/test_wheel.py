"""The wheel, installed where no checkout is near: ``bff`` runs on its embedded default config."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import httpx
import pytest

from tests.support.ports import free_port
from tests.support.processes import clean_environ, serving

REPO = Path(__file__).resolve().parents[1]
# Local state and earlier builds: a stale build/ would leak old files into the wheel.
NOT_SOURCE = shutil.ignore_patterns(
    ".git",
    ".venv",
    ".data",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".*cache*",
    "node_modules",
)
# Building, installing the runtime dependencies into a new venv (from pip's index and cache).
PIP_TIMEOUT = 300

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from a copy of the checkout, so the build leaves the checkout untouched."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    # symlinks=True: the copy keeps bff/dev.toml a link, as in the checkout.
    shutil.copytree(REPO, source, symlinks=True, ignore=NOT_SOURCE)
    # With build isolation: the project asks for setuptools>=69, which the dev venv need not have.
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", work / "dist", source)
    (built,) = (work / "dist").glob("flows_bff-*.whl")
    return built


def test_the_wheel_carries_the_default_config_and_no_tests(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        default = archive.read("bff/dev.toml")
    assert default == (REPO / "config" / "dev.toml").read_bytes()
    assert not [name for name in names if name.startswith("tests/")]


def test_an_installed_wheel_checks_and_serves_with_no_config(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", venv)
    _run(venv / "bin" / "python", "-m", "pip", "install", "--quiet", wheel)  # no dev extra
    environ = clean_environ()
    environ.pop("PYTHONPATH", None)

    where = _run(
        venv / "bin" / "python",
        "-c",
        "from bff.settings import DEFAULT_CONFIG; print(DEFAULT_CONFIG)",
        cwd=tmp_path,
        env=environ,
    )
    assert Path(where.strip()).is_relative_to(venv.resolve()), "it must not read the checkout"

    checked = _run(venv / "bin" / "bff", "check-config", cwd=tmp_path, env=environ)
    assert checked.startswith("ok: upstream http://127.0.0.1:8001")

    # The development stack is in the wheel, but without the dev extra it says what it needs.
    refused = _run(venv / "bin" / "bff", "dev", cwd=tmp_path, env=environ, expect=2)
    assert "needs the development extra" in refused
    assert "Traceback" not in refused

    port = free_port()
    argv = [str(venv / "bin" / "bff"), "serve", "--port", str(port)]
    with serving(
        argv, name="installed bff serve", url=f"http://127.0.0.1:{port}", env=environ, cwd=tmp_path
    ) as server:
        assert httpx.get(f"{server.url}/healthz", trust_env=False).status_code == 200


def _run(
    *argv: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None, expect: int = 0
) -> str:
    """Run ``argv``; its exit status must be ``expect``. Returns stdout (stderr if it failed)."""
    result = subprocess.run(
        [str(arg) for arg in argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=PIP_TIMEOUT,
        check=False,
    )
    assert result.returncode == expect, (
        f"{argv} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    )
    return result.stdout if expect == 0 else result.stderr
