"""Replay: answering outgoing calls from a cassette, per request.

A :class:`ReplaySession` holds one cassette; it is bound to one request through a
contextvar. Replayers for each client library patch the library under OpenTelemetry's
wrappers and answer from the current session; calls outside a session are untouched.
"""

from __future__ import annotations

import importlib

from .report import ReplayReport, recent_reports
from .session import ReplayMismatchError, ReplaySession, current_session

__all__ = [
    "ReplayMismatchError",
    "ReplayReport",
    "ReplaySession",
    "current_session",
    "install_replayers",
    "recent_reports",
]

# library -> replayer module; a library that is not installed is skipped
_REPLAYERS = {
    "httpx": "timetracer_otel.replayers.httpx",
    "requests": "timetracer_otel.replayers.requests",
    "aiohttp": "timetracer_otel.replayers.aiohttp",
    "redis": "timetracer_otel.replayers.redis",
    "sqlalchemy": "timetracer_otel.replayers.sqlalchemy",
    "pymongo": "timetracer_otel.replayers.pymongo",
}


def install_replayers() -> list[str]:
    """Patch every installed client library for replay (idempotent); returns the libraries patched."""
    installed = []
    for library, module_name in _REPLAYERS.items():
        try:
            importlib.import_module(library)
        except ImportError:
            continue
        importlib.import_module(module_name).install()
        installed.append(library)
    return installed
