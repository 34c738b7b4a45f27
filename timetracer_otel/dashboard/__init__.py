"""The timetracer dashboard: a Starlette app over one cassette directory (``timetracer serve``)."""

from .app import ReplayTarget, create_app

__all__ = ["ReplayTarget", "create_app"]
