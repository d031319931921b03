"""The container image and the compose stack: Dockerfile, .dockerignore, docker-compose.yml.

There is no Docker engine in the test environment, so these tests check what can be checked
without one: the compose file and the Dockerfile name commands, modules, files and settings that
exist, the one-shot ``keys`` service's command really makes the key ring the bff then reads (named
volumes are directories of the test), the build context holds what the image needs and nothing
else, and the image's health check works against a real ``bff serve``.
"""

from __future__ import annotations

import json
import re
import shlex
import stat
import subprocess
import sys
import tomllib
from importlib.util import find_spec
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import httpx
import msgspec
import pytest
import yaml

import sandbox.config
from bff import Settings, load_settings
from bff.checks import check_files
from bff.cli import parser as bff_parser
from tests.support.keys import RING_FILE
from tests.support.ports import free_ports
from tests.support.processes import BFF_SCRIPT, clean_environ, serving

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "config"
COMPOSE_TOML = CONFIG_DIR / "compose.toml"
PYPROJECT = REPO / "pyproject.toml"
IMAGE_CONFIG_DIR = "/etc/flows-bff"
OUR_IMAGES = {"flows-bff:local", "flows-bff-demo:local"}
STARTUP_SECONDS = 20.0


def _env_setting(name: str) -> tuple[str, str]:
    """(section, key) named by ``BFF__SECTION__KEY``; fails the test when there is none."""
    assert name.startswith("BFF__"), name
    section, _, key = name.removeprefix("BFF__").lower().partition("__")
    sections = {field.name: field.type for field in msgspec.structs.fields(Settings)}
    assert section in sections, f"{name}: no section [{section}]"
    keys = {field.name for field in msgspec.structs.fields(sections[section])}
    assert key in keys, f"{name}: no key {key!r} in [{section}]"
    return section, key


# ---------------------------------------------------------------------------------------------
# docker-compose.yml
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return document


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return _instructions((REPO / "Dockerfile").read_text())


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        word, _, rest = (pending + line).strip().partition(" ")
        instructions.append((word.upper(), rest.strip()))
        pending = ""
    return instructions


def _exec_form(arguments: str) -> list[str]:
    value = json.loads(arguments)
    assert isinstance(value, list) and all(isinstance(item, str) for item in value), arguments
    return value


def _image_entrypoint(dockerfile: list[tuple[str, str]]) -> list[str]:
    return _exec_form(next(args for word, args in dockerfile if word == "ENTRYPOINT"))


def _image_cmd(dockerfile: list[tuple[str, str]]) -> list[str]:
    return _exec_form(next(args for word, args in dockerfile if word == "CMD"))


def _command_line(service: dict[str, Any], dockerfile: list[tuple[str, str]]) -> list[str]:
    """What the container runs: its entrypoint (or the image's) followed by its command."""
    entrypoint = service.get("entrypoint", _image_entrypoint(dockerfile))
    command = service.get("command", _image_cmd(dockerfile))
    if isinstance(entrypoint, str):
        entrypoint = shlex.split(entrypoint)
    if isinstance(command, str):
        command = shlex.split(command)
    return [str(item) for item in [*entrypoint, *command]]


def _our_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in compose["services"].items()
        if service.get("image") in OUR_IMAGES
    }


def _option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def _service_environ(service: dict[str, Any]) -> dict[str, str]:
    environment = service.get("environment", {})
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    return {name: str(value) for name, value in environment.items()}


def _host_path(
    container_path: str,
    service: dict[str, Any],
    compose: dict[str, Any],
    volumes: Path | None = None,
) -> Path:
    """The file a container sees at ``container_path``: a repository file (bind mounts and
    secrets), or, given ``volumes``, one in ``volumes/<name>`` (named volumes)."""
    if container_path.startswith("/run/secrets/"):
        secret = compose["secrets"][container_path.removeprefix("/run/secrets/")]
        return REPO / secret["file"]
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if not container_path.startswith(target + "/"):
            continue
        inside = container_path.removeprefix(target + "/")
        if source.startswith("."):
            return REPO / source / inside
        if volumes is not None and source in compose["volumes"]:
            return volumes / source / inside
    raise AssertionError(f"{container_path}: not a file mounted in the container")


def _named_volume_at(target: str, service: dict[str, Any]) -> tuple[str, bool]:
    """(volume name, read-only) of the named volume ``service`` mounts at ``target``."""
    for volume in service.get("volumes", []):
        source, mounted, *options = volume.split(":")
        if mounted == target and not source.startswith("."):
            return source, options == ["ro"]
    raise AssertionError(f"no named volume at {target}")


def _bff_environ(
    service: dict[str, Any],
    compose: dict[str, Any],
    dockerfile: list[tuple[str, str]],
    volumes: Path,
) -> dict[str, str]:
    """The service's ``BFF__…`` variables, and overrides for the absolute ``*_file`` paths of
    its config file, with every path turned into the file the test finds there."""
    argv = _command_line(service, dockerfile)
    raw = tomllib.loads(_host_path(_option(argv, "--config"), service, compose).read_text())
    sections = {field.name for field in msgspec.structs.fields(Settings)}
    environ = {
        f"BFF__{section.upper()}__{key.upper()}": value
        for section, values in raw.items()
        if section in sections
        for key, value in values.items()
        if key.endswith("_file") and value.startswith("/")
    }
    environ.update(_service_environ(service))
    return {
        name: str(_host_path(value, service, compose, volumes)) if name.endswith("_FILE") else value
        for name, value in environ.items()
    }


class Volumes(NamedTuple):
    root: Path
    """A directory per named volume of the compose file."""
    first_run: subprocess.CompletedProcess[str]
    """What the ``keys`` service's command did when its volume was new."""


def _run_keys_service(
    compose: dict[str, Any], dockerfile: list[tuple[str, str]], volumes: Path
) -> subprocess.CompletedProcess[str]:
    """The ``keys`` service's command, run here as the container would run it."""
    service = compose["services"]["keys"]
    argv = _command_line(service, dockerfile)
    assert argv[0] == "bff", argv
    config = _host_path(_option(argv, "--config"), service, compose)
    argv = [str(BFF_SCRIPT), *argv[1:]]
    argv[argv.index("--config") + 1] = str(config)
    return subprocess.run(
        argv,
        cwd=REPO,
        env=clean_environ(**_bff_environ(service, compose, dockerfile, volumes)),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def volumes(
    compose: dict[str, Any],
    dockerfile: list[tuple[str, str]],
    tmp_path_factory: pytest.TempPathFactory,
) -> Volumes:
    root = tmp_path_factory.mktemp("volumes")
    for name in compose["volumes"]:
        (root / name).mkdir()
    return Volumes(root, _run_keys_service(compose, dockerfile, root))


def test_the_compose_file_has_the_five_services(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"redis", "sandbox", "idp", "keys", "bff"}
    assert compose["services"]["redis"]["image"].startswith("redis:7-alpine")
    assert set(_our_services(compose)) == {"sandbox", "idp", "keys", "bff"}


def test_the_bff_starts_once_every_dependency_is_ready(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["bff"]["depends_on"] == {
        "keys": {"condition": "service_completed_successfully"},
        "redis": {"condition": "service_healthy"},
        "sandbox": {"condition": "service_healthy"},
        "idp": {"condition": "service_healthy"},
    }
    for service in services.values():
        for name, condition in service.get("depends_on", {}).items():
            assert name in services, f"depends_on names no service: {name}"
            if condition == {"condition": "service_healthy"}:
                assert services[name].get("healthcheck", {}).get("test"), f"{name}: no check"
                continue
            assert condition == {"condition": "service_completed_successfully"}, name
            # A one-shot: it exits and stays exited; nothing to publish, nothing to probe.
            assert services[name].get("restart") == "no", name
            assert "ports" not in services[name], name
            assert services[name].get("healthcheck") == {"disable": True}, name


def test_published_ports_are_on_loopback_only(compose: dict[str, Any]) -> None:
    published = [
        (name, str(port))
        for name, service in compose["services"].items()
        for port in service.get("ports", [])
    ]
    assert published, "the stack publishes the BFF at least"
    for name, port in published:
        assert port.startswith("127.0.0.1:"), f"{name}: {port} is not bound to 127.0.0.1"


def test_every_command_runs_an_existing_program(
    compose: dict[str, Any], dockerfile: list[tuple[str, str]]
) -> None:
    scripts = tomllib.loads(PYPROJECT.read_text())["project"]["scripts"]
    for name, service in _our_services(compose).items():
        argv = _command_line(service, dockerfile)
        if argv[:2] == ["python", "-m"]:
            module = argv[2]
            assert find_spec(module) is not None, f"{name}: no module {module}"
            if find_spec(module).submodule_search_locations:  # type: ignore[union-attr]
                assert find_spec(f"{module}.__main__") is not None, f"{name}: {module} not runnable"
        else:
            assert argv[0] in scripts, f"{name}: {argv[0]} is not a console script of the package"
            assert BFF_SCRIPT.exists()


def test_the_bff_keys_and_sandbox_commands_parse(
    compose: dict[str, Any], dockerfile: list[tuple[str, str]]
) -> None:
    from sandbox.__main__ import _parser as sandbox_parser

    bff_args = bff_parser().parse_args(_command_line(compose["services"]["bff"], dockerfile)[1:])
    assert (bff_args.command, bff_args.host, bff_args.port) == ("serve", "0.0.0.0", 8000)
    keys = _command_line(compose["services"]["keys"], dockerfile)
    keys_args = bff_parser().parse_args(keys[1:])
    assert (keys_args.command, keys_args.action) == ("keys", None)
    assert keys_args.config == bff_args.config, "the keys are made from the bff's own config"
    sandbox_args = sandbox_parser().parse_args(
        _command_line(compose["services"]["sandbox"], dockerfile)[3:]
    )
    assert (sandbox_args.host, sandbox_args.port, sandbox_args.db) == (
        "0.0.0.0",
        8001,
        "/data/sandbox.db",
    )
    data_volume = next(v for v in compose["services"]["sandbox"]["volumes"] if v.endswith(":/data"))
    assert data_volume.split(":")[0] in compose["volumes"], "the sandbox database needs a volume"


def test_the_provider_command_parses(
    compose: dict[str, Any], dockerfile: list[tuple[str, str]]
) -> None:
    from devstack.idp import _parse_args

    args = _parse_args(_command_line(compose["services"]["idp"], dockerfile)[3:])
    assert (args.host, args.port, args.issuer) == ("0.0.0.0", 8002, "http://idp.localhost:8002")


def test_referenced_config_and_secret_files_exist(
    compose: dict[str, Any], dockerfile: list[tuple[str, str]]
) -> None:
    checked = 0
    for name, service in _our_services(compose).items():
        argv = _command_line(service, dockerfile)
        paths = [arg for arg in argv if arg.startswith(IMAGE_CONFIG_DIR + "/")]
        paths += [
            value for key, value in _service_environ(service).items() if key.endswith("_FILE")
        ]
        assert paths, f"{name}: runs without a config file"
        for container_path in paths:
            assert _host_path(container_path, service, compose).is_file(), (
                f"{name}: {container_path} is not in the repository"
            )
            checked += 1
        for secret in service.get("secrets", []):
            assert (REPO / compose["secrets"][secret]["file"]).is_file()
    assert checked >= 6


def test_every_environment_variable_names_a_setting_and_loads(
    compose: dict[str, Any], dockerfile: list[tuple[str, str]], volumes: Volumes
) -> None:
    for name, service in _our_services(compose).items():
        for variable in _service_environ(service):
            _env_setting(variable)
        argv = _command_line(service, dockerfile)
        config = _host_path(_option(argv, "--config"), service, compose)
        if argv[0] == "bff":
            # With the files it sees in place, the keys service's ring among them.
            settings = load_settings(
                config, environ=_bff_environ(service, compose, dockerfile, volumes.root)
            )
            check_files(settings)
        else:
            # The sandbox and the provider read their own sections; no key file of the bff's.
            local = {
                key: str(_host_path(value, service, compose)) if key.endswith("_FILE") else value
                for key, value in _service_environ(service).items()
            }
            # The key ring is made by the keys service at first start: a test ring stands in.
            local["BFF__SESSIONS__ENCRYPTION_KEYS_FILE"] = str(RING_FILE)
            settings = load_settings(config, environ=local)
        assert settings.oidc.client_secret == "compose-demo-client-secret", name


def test_the_keys_service_makes_the_key_ring_the_bff_reads_and_never_replaces_it(
    compose: dict[str, Any], dockerfile: list[tuple[str, str]], volumes: Volumes
) -> None:
    services = compose["services"]
    assert volumes.first_run.returncode == 0, volumes.first_run.stderr
    settings = load_settings(COMPOSE_TOML, environ={}, for_keys=True)
    ring = settings.sessions.encryption_keys_file
    assert settings.sessions.backend == "redis" and ring is not None
    # Both containers see the ring on one named volume; the bff cannot write it.
    target = str(Path(ring).parent)
    assert _named_volume_at(target, services["keys"]) == ("session-keys", False)
    assert _named_volume_at(target, services["bff"]) == ("session-keys", True)
    made = _host_path(ring, services["bff"], compose, volumes.root)
    assert made == _host_path(ring, services["keys"], compose, volumes.root)
    assert volumes.first_run.stdout.startswith(f"wrote {made}: the session key ring")
    assert stat.S_IMODE(made.stat().st_mode) == 0o600
    # The bff, as it starts (bff serve runs these checks), reads the ring the keys service made.
    bff = load_settings(
        COMPOSE_TOML, environ=_bff_environ(services["bff"], compose, dockerfile, volumes.root)
    )
    assert bff.sessions.encryption_keys_file == str(made)
    check_files(bff)

    # Every `docker compose up` runs the service again: the ring stays as it is.
    before = made.read_text()
    again = _run_keys_service(compose, dockerfile, volumes.root)
    assert again.returncode == 0, again.stderr
    assert "nothing to write" in again.stdout
    assert made.read_text() == before

    # A new volume takes the owner of the image's directory: the image's user, who alone reads it.
    runs = " ".join(args for word, args in dockerfile if word == "RUN")
    assert f"chown flows:flows {target}" in runs
    assert f"chmod 0700 {target}" in runs


def test_the_compose_environment_agrees_with_compose_toml(compose: dict[str, Any]) -> None:
    raw = tomllib.loads(COMPOSE_TOML.read_text())
    compared = 0
    for service in _our_services(compose).values():
        for variable, value in _service_environ(service).items():
            section, key = _env_setting(variable)
            if key.endswith("_file"):
                continue  # a container path, checked by test_referenced_config_and_secret_files
            assert str(raw[section][key]) == value, f"{variable}={value} but compose.toml differs"
            compared += 1
    assert compared >= 5


def test_one_issuer_url_for_the_browser_and_the_containers(
    compose: dict[str, Any], dockerfile: list[tuple[str, str]]
) -> None:
    services = compose["services"]
    settings = load_settings(COMPOSE_TOML, environ={}, for_keys=True)
    issuer = urlsplit(settings.oidc.issuer)
    idp_argv = _command_line(services["idp"], dockerfile)
    assert _option(idp_argv, "--issuer") == settings.oidc.issuer
    # Browsers resolve *.localhost to loopback; containers resolve it through the alias.
    assert issuer.hostname is not None and issuer.hostname.endswith(".localhost")
    assert issuer.hostname in services["idp"]["networks"]["default"]["aliases"]
    assert f"127.0.0.1:{issuer.port}:{_option(idp_argv, '--port')}" in services["idp"]["ports"]
    assert f"'Host': '{issuer.netloc}'" in " ".join(services["idp"]["healthcheck"]["test"])

    origin = urlsplit(settings.bff.public_origin)
    assert origin.hostname == "localhost"
    assert f"127.0.0.1:{origin.port}:8000" in services["bff"]["ports"]
    trusted = {
        item.issuer: item.jwks_uri
        for item in sandbox.config.load_settings(COMPOSE_TOML).trusted_issuers
    }
    assert trusted[settings.bff.public_origin] == "http://bff:8000/api/bff/v1/.well-known/jwks.json"
    assert trusted[settings.oidc.issuer] == f"{settings.oidc.issuer}/jwks"


# ---------------------------------------------------------------------------------------------
# Dockerfile and .dockerignore
# ---------------------------------------------------------------------------------------------


def test_the_image_is_a_slim_python_311_running_the_bff_as_a_user(
    dockerfile: list[tuple[str, str]],
) -> None:
    assert ("ARG", "PYTHON_IMAGE=python:3.11-slim") in dockerfile
    stages = [args for word, args in dockerfile if word == "FROM"]
    assert stages[0] == "${PYTHON_IMAGE} AS build"
    assert stages[-1] == "runtime", "the default target is the runtime image"
    users = [args for word, args in dockerfile if word == "USER"]
    assert users[-1] not in {"root", "0", "0:0"}
    assert ("EXPOSE", "8000") in dockerfile
    assert _image_entrypoint(dockerfile) == ["bff"]
    cmd = _image_cmd(dockerfile)
    assert cmd == [
        "serve",
        "--config",
        "/etc/flows-bff/compose.toml",
        "--host",
        "0.0.0.0",
        "--port",
        "8000",
    ]
    args = bff_parser().parse_args(cmd)
    assert args.port == 8000
    assert ("COPY", f"config/ {IMAGE_CONFIG_DIR}/") in dockerfile
    assert (CONFIG_DIR / Path(args.config).name).is_file()


def test_the_image_installs_the_wheel_without_the_dev_extra(
    dockerfile: list[tuple[str, str]],
) -> None:
    runs = " ".join(args for word, args in dockerfile if word == "RUN")
    assert "pip wheel --no-deps" in runs
    assert "pip install -c requirements.lock /wheels/flows_bff-*.whl" in runs
    assert "[dev]" not in runs and "-e " not in runs


def test_the_demo_image_adds_the_provider_dependency_of_the_dev_extra(
    dockerfile: list[tuple[str, str]],
) -> None:
    dev_extra = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]["dev"]
    requirement = next(item for item in dev_extra if item.startswith("oidc-provider-mock"))
    runs = [args for word, args in dockerfile if word == "RUN"]
    assert any(f'"{requirement}"' in run for run in runs), requirement


def _docker_pattern(pattern: str) -> re.Pattern[str]:
    regex = ""
    index = 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            regex, index = regex + "(?:.*/)?", index + 3
        elif pattern[index] == "*":
            regex, index = regex + "[^/]*", index + 1
        elif pattern[index] == "?":
            regex, index = regex + "[^/]", index + 1
        elif pattern[index] == "[":
            end = pattern.index("]", index)
            regex, index = regex + pattern[index : end + 1], end + 1
        else:
            regex, index = regex + re.escape(pattern[index]), index + 1
    return re.compile(regex)


def _excluded(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern matches a path or a parent."""
    parts = path.split("/")
    candidates = ["/".join(parts[:end]) for end in range(1, len(parts) + 1)]
    excluded = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        compiled = _docker_pattern(pattern.removeprefix("!").rstrip("/"))
        if any(compiled.fullmatch(candidate) for candidate in candidates):
            excluded = not negated
    return excluded


def test_the_build_context_is_what_the_image_needs(dockerfile: list[tuple[str, str]]) -> None:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    sources = [
        source
        for word, args in dockerfile
        if word == "COPY" and not args.startswith("--from")
        for source in args.split()[:-1]
    ]
    assert sources
    for source in sources:
        assert (REPO / source).exists(), f"COPY {source}: not in the repository"
        needed = [
            path for path in tracked if path == source or path.startswith(source.rstrip("/") + "/")
        ]
        assert needed, source
        for path in needed:
            assert not _excluded(path, patterns), f"{path} is needed but excluded"
    for path in [
        ".venv/bin/python",
        ".data/sandbox.db",
        ".git/HEAD",
        "tests/test_container_files.py",
        "bff/__pycache__/app.cpython-311.pyc",
        "Dockerfile",
    ]:
        assert _excluded(path, patterns), f"{path} reaches the build context"


# ---------------------------------------------------------------------------------------------
# Real processes
# ---------------------------------------------------------------------------------------------


def _healthcheck_snippet(dockerfile: list[tuple[str, str]], port: int) -> list[str]:
    arguments = next(args for word, args in dockerfile if word == "HEALTHCHECK")
    options, _, command = arguments.partition(" CMD ")
    assert "--interval=" in options and "--timeout=" in options
    argv = _exec_form(command)
    assert argv[:2] == ["python", "-c"]
    assert argv[2].count("http://127.0.0.1:8000/healthz") == 1
    return [sys.executable, "-c", argv[2].replace("127.0.0.1:8000", f"127.0.0.1:{port}")]


@pytest.mark.e2e
def test_the_image_health_check_passes_on_a_live_bff_whose_dependencies_are_down(
    compose: dict[str, Any], dockerfile: list[tuple[str, str]], volumes: Volumes
) -> None:
    port, upstream, provider, redis = free_ports(4)
    snippet = _healthcheck_snippet(dockerfile, port)
    refused = subprocess.run(snippet, capture_output=True, timeout=30)
    assert refused.returncode != 0, "the health check passes with nothing listening"

    environ = clean_environ(
        BFF__UPSTREAM__BASE_URL=f"http://127.0.0.1:{upstream}",
        BFF__OIDC__ISSUER=f"http://127.0.0.1:{provider}",
        BFF__SESSIONS__REDIS_URL=f"redis://127.0.0.1:{redis}/0",
        # The key ring where the keys service of docker-compose.yml puts it.
        BFF__SESSIONS__ENCRYPTION_KEYS_FILE=_bff_environ(
            compose["services"]["bff"], compose, dockerfile, volumes.root
        )["BFF__SESSIONS__ENCRYPTION_KEYS_FILE"],
    )
    argv = [str(BFF_SCRIPT), *_image_cmd(dockerfile)]
    argv[argv.index("--config") + 1] = str(COMPOSE_TOML)
    argv[argv.index("--host") + 1] = "127.0.0.1"
    argv[argv.index("--port") + 1] = str(port)
    with serving(
        argv,
        name="bff serve",
        url=f"http://127.0.0.1:{port}",
        env=environ,
        cwd=REPO,
        start_timeout=STARTUP_SECONDS,
    ) as bff:
        healthy = subprocess.run(snippet, capture_output=True, timeout=30)
        assert healthy.returncode == 0, healthy.stderr.decode()
        with httpx.Client(base_url=bff.url, timeout=10.0) as client:
            assert client.get("/healthz").json() == {"status": "ok"}
            ready = client.get("/readyz")
    assert ready.status_code == 503
    checks = ready.json()["checks"]
    assert set(checks) == {"upstream", "identityProvider", "sessions"}
    assert all(value.startswith("failing") for value in checks.values()), checks
