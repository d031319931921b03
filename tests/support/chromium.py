"""Debian's Chromium, driven by Playwright: where it is, how it starts, whether it must be there.

Locally the browser tests skip when Chromium or Playwright is missing; with ``REQUIRE_BROWSER=1``
or ``CI=true`` (:func:`browser_required`) they fail instead. :data:`ARTIFACTS` is where they
leave screenshots and other files a person may want to look at after a run.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from urllib.parse import urlsplit


def browser_required() -> bool:
    return os.environ.get("REQUIRE_BROWSER") == "1" or os.environ.get("CI") == "true"


try:
    from playwright.sync_api import sync_playwright
except ImportError:
    if browser_required():
        raise
    sync_playwright = None  # type: ignore[assignment]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
UI_TIMEOUT_MS = 15_000
DESKTOP = {"width": 1280, "height": 900}
# Recorded before any page script runs, so a policy that blocks the console's own files shows.
RECORD_CSP_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__cspViolations.push(event.violatedDirective + " " + event.blockedURI);
});
"""
# Screenshots and other files a person may want to look at after a run (git-ignored).
ARTIFACTS = Path(__file__).parents[1] / "browser" / "artifacts"


def is_local(url: str) -> bool:
    """Whether a page may load ``url``: loopback, or data that comes from no host at all."""
    if url.startswith(("data:", "blob:", "about:")):
        return True
    host = urlsplit(url).hostname or ""
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
