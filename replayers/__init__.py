"""Replay: answering outgoing calls from a cassette, per request.

A :class:`ReplaySession` holds one cassette; it is bound to one request through a
contextvar. Replayers for each client library patch the library under OpenTelemetry's
wrappers and answer from the current session; calls outside a session are untouched.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
from collections.abc import Callable
from types import ModuleType

from wrapt import register_post_import_hook

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


_hooked: set[str] = set()  # libraries whose replayer is installed when they are imported
_absent: set[str] = set()  # libraries not installed: looked for once (a lookup walks sys.path)
_hooked_lock = threading.Lock()


def install_replayers() -> list[str]:
    """Patch every installed client library for replay (idempotent); returns the libraries covered.

    A library the app has imported is patched now; one installed but not imported yet is
    patched when it is imported (a post-import hook), before the app can use it. Importing
    every installed library up front doubled a replaying process's objects (and so the
    cost of each garbage collection) for libraries the app may never use.
    """
    covered = []
    for library in LIBRARIES.values():
        if library.name in sys.modules:
            importlib.import_module(library.replay).install()
        elif library.name in _absent:
            continue
        elif library.name not in _hooked and importlib.util.find_spec(library.name) is None:
            _absent.add(library.name)
            continue
        else:
            with _hooked_lock:
                if library.name not in _hooked:
                    _hooked.add(library.name)
                    register_post_import_hook(_installer(library.replay), library.name)
        covered.append(library.name)
    return covered


def _installer(replay_module: str) -> Callable[[ModuleType], None]:
    def install(_module: ModuleType) -> None:
        importlib.import_module(replay_module).install()

    return install
