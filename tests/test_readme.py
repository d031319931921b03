"""The commands of the READMEs and of ``docs/`` run as written from a clone after ``make dev``
or ``make test``: the project's programs come from its ``.venv``, never from whatever ``python``
or ``bff`` is on the reader's ``PATH`` (outside the venv, ``python -m sandbox`` cannot even import
its dependencies). The production shape's commands are run by ``tests/test_config_files.py``."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import pytest

from tests.support.ports import free_port
from tests.support.processes import clean_environ, serving

REPO = Path(__file__).resolve().parents[1]
READMES = [REPO / "README.md", REPO / "bench" / "README.md", *sorted((REPO / "docs").glob("*.md"))]
INTERPRETERS = {"python", "python3", "pip", "pytest", "ruff", "mypy", "uvicorn"}
"""Programs of the venv that are never the name of something else."""
ASSIGNMENT = re.compile(r"[A-Z_][A-Z0-9_]*=\S*")


def _commands(text: str) -> list[str]:
    """Inline code spans and the lines of shell blocks, without a ``$`` prompt."""
    spans = re.findall(r"(?<!`)`([^`\n]+)`(?!`)", re.sub(r"```.*?```", "", text, flags=re.DOTALL))
    blocks = re.findall(r"```(?:sh|bash|console)\n(.*?)```", text, flags=re.DOTALL)
    lines = [line.strip() for block in blocks for line in block.splitlines()]
    return [command.removeprefix("$ ") for command in spans + lines if command]


def _is_a_command_to_run(command: str) -> bool:
    """An interpreter with anything after it, or ``bff`` given more than a subcommand's name:
    options, paths or placeholders (``bff keys rotate --stage``, ``bff audit verify FILE…``).
    ``bff serve`` alone names the command."""
    words = command.split()
    while words and ASSIGNMENT.fullmatch(words[0]):
        words = words[1:]
    if not words:
        return False
    program = words[0].removeprefix(".venv/bin/")
    if program in INTERPRETERS:
        return len(words) > 1
    return program == "bff" and any(
        word.startswith("-") or word.isupper() or any(c in word for c in "/.…")
        for word in words[1:]
    )


def _venv_program(command: str) -> str:
    words = [word for word in command.split() if not ASSIGNMENT.fullmatch(word)]
    return words[0]


def test_the_rule_tells_commands_from_names() -> None:
    assert _is_a_command_to_run("python -m sandbox serve --config config/dev.toml")
    assert _is_a_command_to_run("BFF__X=1 bff serve --workers 2")
    assert _is_a_command_to_run("bff audit verify FILE…")
    assert not _is_a_command_to_run("bff serve")
    assert not _is_a_command_to_run("bff keys rotate")
    assert not _is_a_command_to_run("make dev")
    assert _commands("Run `python -m x` or:\n\n```sh\n$ bff keys --config a.toml\n```\n") == [
        "python -m x",
        "bff keys --config a.toml",
    ]


@pytest.mark.parametrize("readme", READMES, ids=lambda path: str(path.relative_to(REPO)))
def test_every_command_of_the_readme_runs_the_programs_of_the_venv(readme: Path) -> None:
    commands = [c for c in _commands(readme.read_text()) if _is_a_command_to_run(c)]
    if readme != REPO / "docs" / "security.md":  # the one page without a command to run
        assert commands, "the rule finds the page's commands"
    outside = [c for c in commands if not _venv_program(c).startswith(".venv/bin/")]
    assert outside == [], "write these as .venv/bin/…, which make dev and make test install"


def _sandbox_command() -> list[str]:
    text = (REPO / "README.md").read_text()
    start = text.index("\n## The sandbox backend on its own\n")
    (command,) = re.findall(r"`((?:\.venv/bin/)?python3? -m sandbox serve [^`]+)`", text[start:])
    return shlex.split(command)


@pytest.mark.e2e
def test_the_sandbox_on_its_own_starts_as_the_readme_writes_it(tmp_path: Path) -> None:
    # A clone after `make dev`, run from its root; only the port is one that is free here.
    (tmp_path / ".venv").symlink_to(REPO / ".venv")
    (tmp_path / "config").symlink_to(REPO / "config")
    argv = _sandbox_command()
    port = free_port()
    argv[argv.index("--port") + 1] = str(port)
    environ = clean_environ()
    environ.pop("VIRTUAL_ENV", None)
    environ["PATH"] = ":".join(
        part
        for part in environ.get("PATH", "").split(":")
        if Path(sys.prefix) not in Path(part).parents
    )
    with serving(
        argv, name="the sandbox", url=f"http://127.0.0.1:{port}", cwd=tmp_path, env=environ
    ):
        pass
    assert (tmp_path / ".data" / "sandbox.db").exists()
