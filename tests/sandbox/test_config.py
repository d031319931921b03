from __future__ import annotations

from pathlib import Path

import pytest

import sandbox
from sandbox.config import ConfigError, with_issuers
from tests.support.sandbox_app import DEV_CONFIG


def test_the_public_api_is_small_and_sorted() -> None:
    assert sandbox.__all__ == sorted(sandbox.__all__)
    assert set(sandbox.__all__) == {"ConfigError", "SandboxSettings", "create_app", "load_settings"}


def test_dev_config_seeds_the_documented_ids() -> None:
    settings = sandbox.load_settings(DEV_CONFIG)
    assert settings.db == ".data/sandbox.db"
    assert (settings.host, settings.port) == ("127.0.0.1", 8001)
    assert [t.id for t in settings.tenants] == ["ten_acme", "ten_globex"]
    assert {(c.id, c.tenant_id) for c in settings.clusters} == {
        ("plane_dev_us_east_1", "ten_acme"),
        ("plane_dev_eu_west_1", "ten_acme"),
        ("plane_globex_main", "ten_globex"),
    }
    assert {(i.id, i.name, i.cluster_id) for i in settings.ingesters} == {
        ("ing_stripe_prod", "Stripe production", "plane_dev_us_east_1"),
        ("ing_github_ci", "GitHub CI", "plane_dev_us_east_1"),
        ("ing_shopify_eu", "Shopify EU", "plane_dev_eu_west_1"),
        ("ing_globex_orders", "Globex orders", "plane_globex_main"),
    }
    assert {(d.id, d.name, d.cluster_id) for d in settings.destinations} == {
        ("dest_orders_api", "Orders API", "plane_dev_us_east_1"),
        ("dest_billing_svc", "Billing service", "plane_dev_us_east_1"),
        ("dest_eu_warehouse", "EU warehouse", "plane_dev_eu_west_1"),
        ("dest_globex_erp", "Globex ERP", "plane_globex_main"),
    }
    assert {k.key: (k.tenant_id, set(k.scopes)) for k in settings.api_keys} == {
        "zen_key_dev_acme_rw": ("ten_acme", {"read:delivery-flows", "write:delivery-flows"}),
        "zen_key_dev_acme_ro": ("ten_acme", {"read:delivery-flows"}),
        "zen_key_dev_globex_rw": ("ten_globex", {"read:delivery-flows", "write:delivery-flows"}),
    }


def test_dpop_defaults(tmp_path: Path) -> None:
    settings = sandbox.load_settings(_write(tmp_path, MINIMAL))
    assert settings.dpop_algorithms == ("ES256", "RS256", "PS256", "EdDSA")
    assert (settings.dpop_proof_max_age_seconds, settings.dpop_clock_skew_seconds) == (60, 5)
    assert settings.dpop_replay_cache_size == 100_000
    assert settings.dpop_nonce_required is False
    assert settings.dpop_nonce_rotation_seconds == 300


def test_db_override() -> None:
    assert sandbox.load_settings(DEV_CONFIG, db=":memory:").db == ":memory:"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sandbox.toml"
    path.write_text(text)
    return path


MINIMAL = """
[sandbox]
[[sandbox.tenants]]
id = "ten_a"
name = "A"
[[sandbox.clusters]]
id = "plane_a"
tenant_id = "ten_a"
name = "A"
region = "r"
"""


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ('port = "x"', "sandbox.port: Expected `int`, got `str`"),
        ("colour = 1", "sandbox: Object contains unknown field `colour`"),
        ("port = 70000", "sandbox.port: must be between 0 and 65535"),
        ("max_body_bytes = 0", "sandbox.max_body_bytes: must be positive"),
        (
            'dpop_algorithms = ["ES256", "HS256"]',
            "sandbox.dpop_algorithms: 'HS256' is not an asymmetric signature algorithm",
        ),
        ('dpop_algorithms = ["none"]', "sandbox.dpop_algorithms: 'none' is not an asymmetric"),
        ("dpop_algorithms = []", "sandbox.dpop_algorithms: must not be empty"),
        ("dpop_proof_max_age_seconds = 0", "sandbox.dpop_proof_max_age_seconds: must be positive"),
        ("dpop_clock_skew_seconds = -1", "sandbox.dpop_clock_skew_seconds: must not be negative"),
        ("dpop_replay_cache_size = 0", "sandbox.dpop_replay_cache_size: must be positive"),
        ('dpop_nonce_required = "yes"', "sandbox.dpop_nonce_required: Expected `bool`, got `str`"),
        (
            "dpop_nonce_rotation_seconds = -5",
            "sandbox.dpop_nonce_rotation_seconds: must be positive",
        ),
    ],
)
def test_invalid_keys_are_named(tmp_path: Path, keys: str, message: str) -> None:
    text = MINIMAL.replace("[sandbox]\n", f"[sandbox]\n{keys}\n")
    with pytest.raises(ConfigError) as caught:
        sandbox.load_settings(_write(tmp_path, text))
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("tables", "message"),
    [
        (
            '[[sandbox.clusters]]\nid = "plane_b"\ntenant_id = "ten_zz"\n'
            'name = "B"\nregion = "r"\n',
            "sandbox.clusters[1].tenant_id: unknown tenant",
        ),
        (
            '[[sandbox.ingesters]]\nid = "ing_a"\ntenant_id = "ten_a"\ncluster_id = "plane_x"\n'
            'name = "I"\ntype = "http"\n',
            "sandbox.ingesters[0].cluster_id: not a cluster of ten_a",
        ),
        (
            '[[sandbox.api_keys]]\nkey = "secret"\ntenant_id = "ten_a"\nscopes = []\n',
            "sandbox.api_keys[0].key: must start with 'zen_key_'",
        ),
        (
            '[[sandbox.api_keys]]\nkey = "zen_key_a"\ntenant_id = "ten_a"\nscopes = ["root"]\n',
            "sandbox.api_keys[0].scopes: unknown scope 'root'",
        ),
        (
            '[[sandbox.trusted_issuers]]\nissuer = "https://i"\njwks_uri = "https://i/j"\n'
            'algorithms = ["HS256"]\n',
            "sandbox.trusted_issuers[0].algorithms: 'HS256' is not an asymmetric",
        ),
        (
            '[[sandbox.trusted_issuers]]\nissuer = "https://i"\n',
            "sandbox.trusted_issuers[0]: set exactly one of jwks_uri and jwks",
        ),
        (
            '[[sandbox.tenants]]\nid = "ten_a"\nname = "again"\n',
            "sandbox.tenants[1].id: duplicate value 'ten_a'",
        ),
    ],
)
def test_invalid_tables_name_the_key(tmp_path: Path, tables: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        sandbox.load_settings(_write(tmp_path, MINIMAL + tables))
    assert message in str(caught.value)


def test_a_missing_file_or_table_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read configuration"):
        sandbox.load_settings(tmp_path / "absent.toml")
    with pytest.raises(ConfigError, match=r"missing \[sandbox\] table"):
        sandbox.load_settings(_write(tmp_path, "[bff]\n"))
    with pytest.raises(ConfigError, match="invalid TOML"):
        sandbox.load_settings(_write(tmp_path, "[sandbox\n"))


def test_trusted_issuers_can_be_replaced_keeping_audience_and_algorithms() -> None:
    settings = sandbox.load_settings(DEV_CONFIG)
    moved = with_issuers(
        settings,
        {
            "http://127.0.0.1:9000": "http://127.0.0.1:9000/jwks",
            "http://127.0.0.1:9002": "http://127.0.0.1:9002/jwks",
        },
    )
    assert [(i.issuer, i.jwks_uri, i.audience, i.algorithms) for i in moved.trusted_issuers] == [
        ("http://127.0.0.1:9000", "http://127.0.0.1:9000/jwks", "zen-backend", ("ES256", "RS256")),
        ("http://127.0.0.1:9002", "http://127.0.0.1:9002/jwks", "zen-backend", ("ES256", "RS256")),
    ]
