"""Values drawn, and calls made, while the app's own modules are imported, before ``auto_setup`` runs.

``auto_setup(app)`` comes after the app's modules are imported, and those often draw and
call as they are: a settings module stamps ``now()`` or makes a signing key when none is
configured, a message broker takes a ``uuid4()`` id, ``create_all()`` checks the tables, an
engine checks the server's version as it is built. In a process started to record or replay
(``TIMETRACER_MODE``), the process's draws and the calls of every installed library are
recorded in its process cassette (or answered from it) from the moment timetracer's
integration is imported, which an app's imports put before its own modules (third-party
imports come first): ``auto_setup`` then goes on with them. A replaying process answers
those calls from its process cassette or with a loud mismatch, never from the network.
``opentelemetry-instrument`` starts earlier still, before anything is imported.
"""

from __future__ import annotations

import contextlib

from ._diagnostics import guarded
from .cassette.errors import CassetteError
from .config import TraceConfig, process_mode

__all__ = ["start"]


def start() -> None:
    """Record (record) or answer (replay) the draws and calls made outside requests from now on,
    in a process started to do so; never raises: a bad setting is ``auto_setup``'s to report."""
    mode = process_mode()
    if mode not in ("record", "replay"):
        return
    try:
        config = TraceConfig.from_env()
    except ValueError:
        return
    with guarded("early_start"):
        if mode == "record":
            from ._process_recording import start_early

            start_early(config)
        elif mode == "replay" and config.cassette_path:
            from .replayers import install_replayers
            from .replayers.process import start as answer_from_process_cassette

            # an unusable cassette: auto_setup says so, and stops the app
            with contextlib.suppress(CassetteError):
                answer_from_process_cassette(config, importing=True)
            install_replayers()
