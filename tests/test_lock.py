"""requirements.lock, which every install takes its versions from, agrees with pyproject.toml:
each dependency and each package of the dev and otel extras is locked, at a version its range
allows, for Python 3.11 (the lock's own resolution checks the rest when it is made)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements.lock"
LOCKED_EXTRAS = ("dev", "otel")


def _declared() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = [Requirement(item) for item in project["dependencies"]]
    for extra in LOCKED_EXTRAS:
        declared += [Requirement(item) for item in project["optional-dependencies"][extra]]
    return declared


def _locked() -> dict[str, list[str]]:
    """Package → the versions locked for it (one per environment marker)."""
    locked: dict[str, list[str]] = {}
    for line in LOCK.read_text().splitlines():
        if match := re.match(r"^([A-Za-z0-9_.-]+)==([^\s;]+)", line):
            locked.setdefault(canonicalize_name(match[1]), []).append(match[2])
    return locked


def test_every_declared_dependency_is_locked_within_its_range() -> None:
    locked = _locked()
    linux_311 = {**default_environment(), "python_version": "3.11", "sys_platform": "linux"}
    for requirement in _declared():
        if requirement.marker is not None and not requirement.marker.evaluate(linux_311):
            continue
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{requirement} is not in requirements.lock: run make lock"
        for version in locked[name]:
            assert requirement.specifier.contains(version, prereleases=True), (
                f"requirements.lock has {name}=={version}, outside {requirement}: run make lock"
            )


def test_the_lock_says_how_it_was_made() -> None:
    header = LOCK.read_text().splitlines()[:2]
    command = "uv pip compile pyproject.toml --extra dev --extra otel --python-version 3.11"
    assert command in header[1]
    assert command in (REPO / "Makefile").read_text().replace("\\\n\t  ", "")


def test_every_install_is_constrained_by_the_lock() -> None:
    assert (
        "pip install --quiet -c requirements.lock -e '.[dev,otel]'"
        in (REPO / "Makefile").read_text()
    )
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "pip install -c requirements.lock /wheels/flows_bff-*.whl" in dockerfile
    assert "-c /opt/venv/requirements.lock" in dockerfile
    assert "!requirements.lock" in (REPO / ".dockerignore").read_text()
