"""Values drawn while the app's own modules are imported, before ``auto_setup`` runs.

``auto_setup(app)`` comes after the app's modules are imported, and those often draw as
they are: a settings module stamps ``now()`` or makes a signing key when none is
configured, a message broker takes a ``uuid4()`` id. In a process started to record or
replay (``TIMETRACER_MODE``), the process's draws are kept (or handed back from its
process cassette) from the moment timetracer's integration is imported, which an app's
imports put before its own modules (third-party imports come first): ``auto_setup`` then
goes on with them. ``opentelemetry-instrument`` starts earlier still, before anything is
imported.
"""

from __future__ import annotations

import contextlib

from ._diagnostics import guarded
from .cassette.errors import CassetteError
from .config import TraceConfig, process_mode

__all__ = ["start"]


def start() -> None:
    """Keep (record) or hand back (replay) the draws made outside requests from now on, in a
    process started to do so; never raises: a bad setting is ``auto_setup``'s to report."""
    mode = process_mode()
    if mode not in ("record", "replay"):
        return
    try:
        config = TraceConfig.from_env()
    except ValueError:
        return
    if not config.draws:
        return
    with guarded("early_start"):
        if mode == "record":
            from ._process_recording import keep_startup_draws

            keep_startup_draws(config)
        elif config.cassette_path:
            from .replayers.process import start as answer_from_process_cassette

            # an unusable cassette: auto_setup says so, and stops the app
            with contextlib.suppress(CassetteError):
                answer_from_process_cassette(config)
