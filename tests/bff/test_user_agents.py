"""Browsers named as people name them, for the session list."""

from __future__ import annotations

import pytest

from bff.auth.user_agents import describe, kept

ANDROID_CHROME = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Mobile Safari/537.36"
)
EDGE = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36 Edg/126.0.0.0"
)
SAFARI_MAC = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Safari/605.1.15"
)
IPAD_CHROME = (
    "Mozilla/5.0 (iPad; CPU OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "CriOS/126.0.6478.54 Mobile/15E148 Safari/604.1"
)
FIREFOX_LINUX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"


@pytest.mark.parametrize(
    ("user_agent", "described"),
    [
        (ANDROID_CHROME, "Chrome on Android"),
        (EDGE, "Edge on Windows"),
        (SAFARI_MAC, "Safari on macOS"),
        (IPAD_CHROME, "Chrome on iPadOS"),
        (FIREFOX_LINUX, "Firefox on Linux"),
        ("curl/8.5.0", "curl"),
        ("Mozilla/5.0 (X11; Linux x86_64) SomethingNew/1.0", "A browser on Linux"),
        ("python-httpx/0.28.1", "Unknown browser"),
        ("", "Unknown browser"),
        (None, "Unknown browser"),
    ],
)
def test_describe(user_agent: str | None, described: str) -> None:
    assert describe(user_agent) == described


def test_kept_is_bounded_printable_ascii() -> None:
    assert kept("a\x1b[31mb\u202ec\n") == "a[31mbc"
    assert kept("x" * 1000) == "x" * 256
    assert kept("\x00\x01") is None
    assert kept(None) is None and kept("") is None
