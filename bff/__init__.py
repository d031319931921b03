"""The backend-for-frontend gateway of the delivery-flows screens."""

from __future__ import annotations

from .app import create_app
from .principal import Principal
from .settings import ConfigError, Settings, load_settings

__all__ = ["ConfigError", "Principal", "Settings", "create_app", "load_settings"]
