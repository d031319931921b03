"""Loading settings: TOML, environment overrides, secrets from files, errors that name the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bff.cli import main
from bff.settings import DEFAULT_CONFIG, ConfigError, load_settings

REPO = Path(__file__).resolve().parents[2]


def _config(tmp_path: Path, text: str) -> Path:
    """A config file of ``text``, given a client secret unless it sets one (or a file of it)."""
    path = tmp_path / "bff.toml"
    secret = 'client_secret = "test-client-secret"\n'
    if "client_secret" in text:
        pass
    elif "[oidc]\n" in text:
        text = text.replace("[oidc]\n", "[oidc]\n" + secret, 1)
    else:
        text += "\n[oidc]\n" + secret
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


def test_a_table_of_strings_is_name_value_pairs_in_the_environment(tmp_path: Path) -> None:
    settings = load_settings(
        _config(tmp_path, ""),
        environ={
            "BFF__OIDC__EXTRA_AUTHORIZATION_PARAMS": (
                "audience=https://flows-api.example,resource=urn:flows?v=1"
            )
        },
    )
    assert settings.oidc.extra_authorization_params == {
        "audience": "https://flows-api.example",
        "resource": "urn:flows?v=1",
    }
    with pytest.raises(ConfigError) as error:
        load_settings(
            _config(tmp_path, ""),
            environ={"BFF__OIDC__EXTRA_AUTHORIZATION_PARAMS": "audience"},
        )
    assert "BFF__OIDC__EXTRA_AUTHORIZATION_PARAMS: expected name=value pairs" in str(error.value)


@pytest.mark.parametrize(
    ("text", "environ", "message"),
    [
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
    ("text", "message"),
    [
        ("[sesions]\n", "unknown section [sesions]; did you mean [sessions]? (in {path})"),
        ("[OIDC]\n", "unknown section [OIDC]; did you mean [oidc]? (in {path})"),
        (
            "[metrics]\n",
            "unknown section [metrics]; expected one of [bff], [upstream], [internal_jwt], "
            "[oidc], [sessions], [session_events], [cache], [audit], [server], [log], [tracing] "
            "(in {path})",
        ),
        ("[logging]\n", "unknown section [logging]; did you mean [log]? (in {path})"),
        ("bff = 3\n", "[bff]: expected a table, got int 3 (in {path})"),
        (
            '[oidc]\nclient_secrte = "x"\n',
            "[oidc].client_secrte: unknown key; did you mean client_secret? (in {path})",
        ),
        (
            "[cache]\nttl = 1\n",
            "[cache].ttl: unknown key; "
            "expected one of ttl_seconds, lookup_ttl_seconds, max_entries (in {path})",
        ),
    ],
)
def test_an_unknown_name_in_the_file_is_an_error_naming_it(
    tmp_path: Path, text: str, message: str
) -> None:
    # A misspelled section used to be skipped: the BFF then ran on defaults without a word. A
    # misspelled key, like a section, is named with the file it is in.
    path = _config(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        load_settings(path, environ={})
    assert str(error.value) == message.format(path=path)


@pytest.mark.parametrize(
    ("variable", "message"),
    [
        ("BFF__SESIONS__BACKEND", "did you mean BFF__SESSIONS__BACKEND?"),
        ("BFF__OIDC__CLIENT_SECRTE", "did you mean BFF__OIDC__CLIENT_SECRET?"),
        ("BFF__CACHE", "expected one of BFF__CACHE__TTL_SECONDS, BFF__CACHE__LOOKUP_TTL_SECONDS"),
        ("BFF__SANDBOX__PORT", "expected BFF__SECTION__KEY with SECTION one of BFF, UPSTREAM,"),
        (
            "BFF__UPSTREAM__BREAKER__OPEN_SECOND",
            "did you mean BFF__UPSTREAM__BREAKER__OPEN_SECONDS?",
        ),
    ],
)
def test_an_unknown_environment_variable_is_an_error_naming_it(
    tmp_path: Path, variable: str, message: str
) -> None:
    with pytest.raises(ConfigError) as error:
        load_settings(_config(tmp_path, ""), environ={variable: "memory"})
    assert str(error.value).startswith(f"{variable}: unknown variable; {message}")


def test_the_breaker_is_a_table_of_upstream_in_the_file_and_the_environment(
    tmp_path: Path,
) -> None:
    path = _config(tmp_path, "[upstream.breaker]\nfailure_threshold = 3\nopen_seconds = 0.5\n")
    settings = load_settings(path, environ={"BFF__UPSTREAM__BREAKER__MAX_OPEN_SECONDS": "8"})
    breaker = settings.upstream.breaker
    assert (breaker.failure_threshold, breaker.open_seconds, breaker.max_open_seconds) == (
        3,
        0.5,
        8,
    )
    assert breaker.window_seconds == 10.0 and breaker.half_open_probes == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[upstream.breaker]\nopen_second = 1\n",
            "[upstream.breaker].open_second: unknown key; did you mean open_seconds? (in {path})",
        ),
        (
            "[upstream]\nbreaker = 3\n",
            "[upstream.breaker]: expected a table, got int 3 (in {path})",
        ),
        (
            "[upstream.breaker]\nopen_seconds = 40\n",
            "[upstream.breaker].max_open_seconds: must be >= open_seconds (in {path})",
        ),
        (
            "[upstream.breaker]\nhalf_open_probes = 0\n",
            "[upstream.breaker].half_open_probes: must be >= 1 (in {path})",
        ),
        (
            "[upstream]\nbreakr = 1\n",
            "[upstream].breakr: unknown key; did you mean breaker? (in {path})",
        ),
    ],
)
def test_a_wrong_breaker_setting_names_its_key(tmp_path: Path, text: str, message: str) -> None:
    path = _config(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        load_settings(path, environ={})
    assert str(error.value) == message.format(path=path)


def test_a_variable_naming_a_table_says_to_set_its_keys(tmp_path: Path) -> None:
    path = _config(tmp_path, "")
    with pytest.raises(ConfigError) as error:
        load_settings(path, environ={"BFF__UPSTREAM__BREAKER": "on"})
    assert str(error.value) == (
        "BFF__UPSTREAM__BREAKER: names the table [upstream.breaker]; "
        f"set its keys (BFF__UPSTREAM__BREAKER__FAILURE_THRESHOLD) (in {path})"
    )


def test_a_bad_value_names_its_file_and_the_variable_that_set_it(tmp_path: Path) -> None:
    path = _config(tmp_path, "[upstream]\nconnect_timeout = 0\n")
    with pytest.raises(ConfigError) as in_file:
        load_settings(path, environ={})
    assert str(in_file.value) == f"[upstream].connect_timeout: must be > 0 (in {path})"
    with pytest.raises(ConfigError) as in_environment:
        load_settings(path, environ={"BFF__UPSTREAM__CONNECT_TIMEOUT": "-1"})
    assert str(in_environment.value) == (
        "[upstream].connect_timeout: must be > 0 "
        f"(set by BFF__UPSTREAM__CONNECT_TIMEOUT, with {path})"
    )


def test_the_tables_of_the_sandbox_and_the_dev_provider_are_left_to_them(tmp_path: Path) -> None:
    text = '[sandbox]\nport = 8001\n[[dev.users]]\nsub = "alice"\n[cache]\nttl_seconds = 1.0\n'
    assert load_settings(_config(tmp_path, text), environ={}).cache.ttl_seconds == 1.0


def test_without_a_path_the_embedded_default_is_read(tmp_path: Path) -> None:
    # The package's dev.toml is a link, so config/dev.toml stays the one file to edit; the wheel
    # gets a copy (tests/test_wheel.py).
    assert (REPO / "bff" / "dev.toml").readlink() == Path("../config/dev.toml")
    assert DEFAULT_CONFIG == REPO / "config" / "dev.toml"
    assert load_settings(environ={}).oidc.client_id == "flows-bff-dev"
    # --config (the path) wins over BFF_CONFIG, which wins over the embedded default.
    (tmp_path / "env").mkdir()
    from_env = _config(tmp_path / "env", '[oidc]\nclient_id = "from-env"\n')
    given = _config(tmp_path, '[oidc]\nclient_id = "given"\n')
    assert load_settings(environ={"BFF_CONFIG": str(from_env)}).oidc.client_id == "from-env"
    assert load_settings(given, environ={"BFF_CONFIG": str(from_env)}).oidc.client_id == "given"


def test_importing_the_settings_does_not_import_the_app() -> None:
    # check-config and the development provider load settings; they need no Starlette app.
    code = "import sys, bff.settings; print('bff.app' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "False"


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
    with pytest.raises(ConfigError, match=r"^\[log\]\.level: "):
        load_settings(_config(tmp_path, f'[log]\nlevel = "{level}"\n'), environ={})
    settings = load_settings(_config(tmp_path, '[log]\nlevel = "debug"\n'), environ={})
    assert settings.log.level == "debug"


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
