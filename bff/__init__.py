"""The backend-for-frontend gateway of the delivery-flows screens."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .settings import ConfigError, Settings, load_settings

if TYPE_CHECKING:
    from .app import create_app
    from .auth import Principal

__all__ = ["ConfigError", "Principal", "Settings", "create_app", "load_settings"]


def __getattr__(name: str) -> Any:
    # The app and sign-in are imported on first use, so that `import bff.settings`
    # (check-config, the development provider) does not load them.
    if name == "create_app":
        from .app import create_app

        return create_app
    if name == "Principal":
        from .auth import Principal

        return Principal
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
