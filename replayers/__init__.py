"""Replay: answering outgoing calls from a cassette, per request.

A :class:`ReplaySession` holds one cassette; it is bound to one request through a
contextvar. Replayers for each client library patch the library under OpenTelemetry's
wrappers and answer from the current session; calls outside a session are untouched.
"""

from __future__ import annotations

import importlib

from timetracer_otel.libraries import LIBRARIES

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


def install_replayers() -> list[str]:
    """Patch every installed client library for replay (idempotent); returns the libraries patched."""
    installed = []
    for library in LIBRARIES.values():
        try:
            importlib.import_module(library.name)
        except ImportError:
            continue
        importlib.import_module(library.replay).install()
        installed.append(library.name)
    return installed
