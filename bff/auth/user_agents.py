"""A person's words for a browser: ``Firefox on macOS`` from a ``User-Agent`` header.

Only for telling one's own sessions apart in a list; nothing is decided by it.
"""

from __future__ import annotations

import re

__all__ = ["describe", "kept"]

_MAX_LENGTH = 256
_NOT_PRINTABLE = re.compile(r"[^ -~]")

# First match wins: Chromium-based browsers also say Chrome and Safari, Chrome says Safari,
# iPhones say "like Mac OS X" and Android says Linux.
_BROWSERS = (
    ("Edg/", "Edge"),
    ("OPR/", "Opera"),
    ("SamsungBrowser/", "Samsung Internet"),
    ("Firefox/", "Firefox"),
    ("FxiOS/", "Firefox"),
    ("CriOS/", "Chrome"),
    ("Chrome/", "Chrome"),
    ("Safari/", "Safari"),
    ("curl/", "curl"),
)
_SYSTEMS = (
    ("iPhone", "iOS"),
    ("iPad", "iPadOS"),
    ("Android", "Android"),
    ("Windows", "Windows"),
    ("CrOS", "ChromeOS"),
    ("Mac OS X", "macOS"),
    ("Linux", "Linux"),
)


def kept(user_agent: str | None) -> str | None:
    """What a session keeps of a ``User-Agent``: printable ASCII, at most 256 characters."""
    if not user_agent:
        return None
    return _NOT_PRINTABLE.sub("", user_agent)[:_MAX_LENGTH] or None


def describe(user_agent: str | None) -> str:
    """``Chrome on Windows``, ``Firefox``, ``A browser on Linux`` or ``Unknown browser``."""
    if not user_agent:
        return "Unknown browser"
    browser = next((name for token, name in _BROWSERS if token in user_agent), None)
    system = next((name for token, name in _SYSTEMS if token in user_agent), None)
    if browser and system:
        return f"{browser} on {system}"
    if browser:
        return browser
    return f"A browser on {system}" if system else "Unknown browser"
