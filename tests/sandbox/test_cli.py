from __future__ import annotations

import pytest

from sandbox.__main__ import main
from tests.support.sandbox_app import DEV_CONFIG


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--trusted-issuer", "no-equals-sign"], "expected ISSUER=JWKS_URI"),
        (["--trusted-issuer", "=http://x/jwks"], "expected ISSUER=JWKS_URI"),
        (["--port", "70000"], "sandbox.port: must be between 0 and 65535"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert main(["serve", "--config", str(DEV_CONFIG), *args]) == 2
    assert message in capsys.readouterr().err


def test_a_missing_config_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--config", "/nonexistent/sandbox.toml"]) == 2
    assert "cannot read configuration" in capsys.readouterr().err
