"""The sandbox: a faithful, persistent implementation of the backend delivery-flows API.

Build an app with ``create_app(load_settings("config/dev.toml", db=":memory:"))`` or run one
with ``python -m sandbox serve --config config/dev.toml``.
"""

from __future__ import annotations

from sandbox.app import create_app
from sandbox.config import ConfigError, SandboxSettings, load_settings

__all__ = ["ConfigError", "SandboxSettings", "create_app", "load_settings"]
