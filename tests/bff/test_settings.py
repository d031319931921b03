"""Loading settings: TOML, environment overrides, secrets from files, errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from bff.cli import main
from bff.settings import ConfigError, load_settings


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bff.toml"
    path.write_text(text)
    return path


def test_environment_overrides_scalars_and_lists(tmp_path: Path) -> None:
    path = _config(tmp_path, "[cache]\nttl_seconds = 2.0\n")
    settings = load_settings(
        path,
        environ={
            "BFF__CACHE__TTL_SECONDS": "0.5",
            "BFF__BFF__ALLOWED_ORIGINS": "https://a.example,https://b.example",
            "BFF__UPSTREAM__BASE_URL": "https://flows.internal",
        },
    )
    assert settings.cache.ttl_seconds == 0.5
    assert settings.bff.allowed_origins == ["https://a.example", "https://b.example"]
    assert settings.upstream.base_url == "https://flows.internal"


@pytest.mark.parametrize(
    ("text", "environ", "message"),
    [
        ("[cache]\nttl = 1\n", {}, "[cache]"),
        ("", {"BFF__CACHE__NOPE": "1"}, "BFF__CACHE__NOPE: no key 'nope' in section [cache]"),
        ("", {"BFF__NOSECTION__X": "1"}, "BFF__NOSECTION__X: no such setting"),
        ("", {"BFF__CACHE__TTL_SECONDS": "soon"}, "[cache].ttl_seconds: Expected `float`"),
        ('[upstream]\nbase_url = "ftp://x"\n', {}, "[upstream].base_url: expected an http(s) URL"),
        ('[sessions]\nbackend = "redis"\n', {}, "[sessions].redis_url: required"),
        ("[bff\n", {}, "invalid TOML"),
    ],
)
def test_bad_settings_fail_naming_the_key(
    tmp_path: Path, text: str, environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as error:
        load_settings(_config(tmp_path, text), environ=environ)
    assert message in str(error.value)


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("upstream", "connect_timeout", 0),
        ("upstream", "read_timeout", -1),
        ("upstream", "total_timeout", 0),
        ("upstream", "max_attempts", 0),
        ("upstream", "max_connections", 0),
        ("upstream", "retry_backoff_seconds", -1),
        ("sessions", "idle_timeout_seconds", 0),
        ("sessions", "absolute_timeout_seconds", 0),
        ("internal_jwt", "ttl_seconds", 0.5),
        ("cache", "max_entries", 0),
        ("sessions", "redis_max_connections", 0),
    ],
)
def test_values_the_app_cannot_start_with_fail_at_load_naming_the_key(
    tmp_path: Path, section: str, key: str, value: float
) -> None:
    # check-config must not say "ok" about a file that serve then refuses with a traceback.
    with pytest.raises(ConfigError, match=rf"^\[{section}\]\.{key}: "):
        load_settings(_config(tmp_path, f"[{section}]\n{key} = {value}\n"), environ={})


@pytest.mark.parametrize("level", ["verbose", "INFO", "trace"])
def test_a_log_level_serve_cannot_use_fails_at_load(tmp_path: Path, level: str) -> None:
    # serve hands it to logging and to uvicorn, which know only these five, in lower case.
    with pytest.raises(ConfigError, match=r"^\[bff\]\.log_level: "):
        load_settings(_config(tmp_path, f'[bff]\nlog_level = "{level}"\n'), environ={})
    settings = load_settings(_config(tmp_path, '[bff]\nlog_level = "debug"\n'), environ={})
    assert settings.bff.log_level == "debug"


def test_file_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "client-secret").write_text("s3cret\n")
    (tmp_path / "secrets" / "ca.pem").write_text("not read before start")
    path = _config(
        tmp_path,
        '[oidc]\nclient_secret_file = "secrets/client-secret"\n'
        '[upstream]\nca_file = "secrets/ca.pem"\n',
    )
    settings = load_settings(path, environ={})
    assert settings.oidc.client_secret == "s3cret"
    assert settings.upstream.ca_file == str(tmp_path / "secrets" / "ca.pem")


def test_a_missing_file_names_its_key(tmp_path: Path) -> None:
    path = _config(tmp_path, '[internal_jwt]\nsigning_key_file = "nowhere.pem"\n')
    with pytest.raises(ConfigError, match=r"^\[internal_jwt\]\.signing_key_file: cannot read"):
        load_settings(path, environ={})


def test_several_workers_need_shared_sessions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _config(tmp_path, "")
    assert main(["serve", "--config", str(path), "--workers", "2"]) == 2
    assert "[sessions].backend: 'memory'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("origin", "accepted"),
    [
        ("http://127.0.0.1:8000", True),
        ("http://localhost:8000", True),
        ("http://[::1]:8000", True),
        ("https://dash.example.com", True),
        ("http://dash.example.com", False),
        ("http://10.0.0.5:8000", False),
    ],
)
def test_plain_http_origins_are_for_loopback_only(
    tmp_path: Path, origin: str, accepted: bool
) -> None:
    path = _config(tmp_path, f'[bff]\npublic_origin = "{origin}"\n')
    if accepted:
        assert load_settings(path, environ={}).bff.public_origin == origin
    else:
        with pytest.raises(ConfigError, match=r"^\[bff\]\.public_origin: use https"):
            load_settings(path, environ={})
