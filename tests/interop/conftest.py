"""Fixtures of the interoperability tests: the running stacks and a fresh browser per test.

Every test module here is marked ``interop`` and ``e2e``. Without Node, npm or
``tests/interop/node_modules`` (``make test`` installs it when npm is there) the tests skip with
the reason; with ``REQUIRE_INTEROP=1`` or ``CI=true`` they fail instead.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.interop.stack import Stacks, interop_toolchain

HTTP_TIMEOUT = 10.0


@pytest.fixture(scope="session")
def stacks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stacks]:
    """Stacks by configuration, started on first use and stopped when the session ends."""
    stacks = Stacks(interop_toolchain(), tmp_path_factory.mktemp("interop"))
    try:
        yield stacks
    finally:
        stacks.close()


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    """A cookie jar and connection pool of one browser, on loopback only (no proxy)."""
    with httpx.Client(trust_env=False, timeout=HTTP_TIMEOUT) as client:
        yield client
