"""Imports go one way: ``bff`` → ``upstream_client``; ``devstack`` → ``bff``, ``sandbox``;
``sandbox`` and ``upstream_client`` stand alone. The development provider's dependencies (flask,
oidc-provider-mock) never enter the gateway."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIRST_PARTY = {"bff", "upstream_client", "sandbox", "devstack"}
DEV_ONLY = {"flask", "werkzeug", "oidc_provider_mock"}

MAY_IMPORT = {
    "bff": {"bff", "upstream_client"},
    "upstream_client": {"upstream_client"},
    "sandbox": {"sandbox"},
    "devstack": {"devstack", "bff", "sandbox"},
}


def _imported_tops(path: Path, package: str) -> set[str]:
    """Top-level names of every module ``path`` imports, wherever in the file (lazy ones too)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    tops: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            tops.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: within the package itself
                tops.add(package)
            elif node.module:
                tops.add(node.module.split(".")[0])
    return tops


@pytest.mark.parametrize("package", sorted(MAY_IMPORT))
def test_each_package_imports_only_what_it_may(package: str) -> None:
    offences = []
    for path in sorted((ROOT / package).rglob("*.py")):
        tops = _imported_tops(path, package)
        wrong = (tops & FIRST_PARTY) - MAY_IMPORT[package]
        if package != "devstack":
            wrong |= tops & DEV_ONLY
        offences += [f"{path.relative_to(ROOT)} imports {name}" for name in sorted(wrong)]
    assert offences == []


def test_the_checker_sees_a_forbidden_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from devstack.stack import run_dev_stack\n    import flask\n")
    assert _imported_tops(module, "bff") >= {"devstack", "flask"}


def test_the_running_gateway_loads_nothing_of_the_development_stack() -> None:
    code = (
        "import sys, bff.app, bff.cli; bff.cli.parser();"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in"
        " {'devstack', 'flask', 'werkzeug', 'oidc_provider_mock', 'sandbox'}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    # Building the command line loads devstack.cli (the `dev` entry point) and nothing more.
    assert result.stdout.strip() == "['devstack', 'devstack.cli']"


def _modules(package: str) -> list[str]:
    names = []
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def test_every_module_of_the_gateway_imports_first_without_a_cycle() -> None:
    # A cycle shows only when its modules are imported in one order: each goes first, alone.
    # bff.otel is left out: it needs the otel extra and is imported only when tracing is on.
    # bff.__main__ runs the command line on import.
    modules = [name for name in _modules("bff") if name not in {"bff.otel", "bff.__main__"}]
    script = (
        "import subprocess, sys\n"
        "from concurrent.futures import ThreadPoolExecutor\n"
        "def first(name):\n"
        "    done = subprocess.run([sys.executable, '-c', 'import ' + name],\n"
        "                          capture_output=True, text=True)\n"
        "    return name if done.returncode else None\n"
        "with ThreadPoolExecutor(8) as pool:\n"
        "    failed = [n for n in pool.map(first, sys.argv[1:]) if n]\n"
        "print(' '.join(failed))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, *modules],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    assert done.stdout.split() == [], f"these fail when imported first: {done.stdout}"
