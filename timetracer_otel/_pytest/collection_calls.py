"""Calls made while pytest imports and collects the suite: kept, and answered, as a test's are.

A test module that imports the app runs what the app's modules do as they load: FastAPI's
older SQL tutorial runs ``Base.metadata.create_all(engine)`` there, on PostgreSQL; a conftest
pings Redis. These calls belong to no test. A run that records them (mode ``all`` or
``rewrite``, or ``once`` where none are kept yet) keeps them in :data:`COLLECTION_CALLS` in
the cassette directory, one file per pytest-xdist worker (``@collection-calls@gw1.json``:
the first worker's ``create_all()`` made the tables, the next one's found them). A run that
only replays (``none``) answers them from there and refuses the others, as a test's cassette
does. Other runs let them go out.

Recording needs no tracer provider (the app's modules, imported next, may set their own) and
no instrumentor (nor their own instrumentation): the captures alone, and the cassette is
written here, at the end of the collection.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from timetracer_otel import plugins
from timetracer_otel._recording import TraceRecording, activate, deactivate
from timetracer_otel.cassette.document import BLOCK_METHOD
from timetracer_otel.cassette.errors import CassetteError
from timetracer_otel.config import TraceConfig

from .blocks import REPLAY, CassetteBlock
from .workers import of_worker

__all__ = ["COLLECTION_CALLS", "CollectionCalls"]

COLLECTION_CALLS = "@collection-calls.json"
_LABEL = "pytest collection calls"


def _found(directory: Path, own: Path) -> Path | None:
    """The cassette answering this process's collection: its own, else the one recorded without
    workers, else a worker's (they import the same modules)."""
    candidates = [
        own,
        directory / COLLECTION_CALLS,
        *sorted(directory.glob("@collection-calls@*.json")),
    ]
    return next((path for path in candidates if path.is_file()), None)


class CollectionCalls:
    """Records or answers the calls of one process's collection, across pytest's two phases
    (the initial conftests, then the test modules): :meth:`activate` for each, :meth:`close` at the end."""

    def __init__(
        self, directory: Path, mode: str, worker: str | None, allowed_hosts: frozenset[str]
    ) -> None:
        """``worker``: the pytest-xdist worker this process likely is (its name is certain only
        once the collection has begun: see :meth:`close`)."""
        self._directory = directory
        self._recording: TraceRecording | None = None
        self._replay: CassetteBlock | None = None
        self._token: object = None
        found = _found(directory, of_worker(directory / COLLECTION_CALLS, worker))
        if mode == "none":
            if found is not None:
                try:
                    self._replay = CassetteBlock(
                        found, _LABEL, REPLAY, allowed_hosts=allowed_hosts, worker=worker
                    )
                except CassetteError as exc:  # before any test: the run cannot start
                    raise pytest.UsageError(str(exc)) from None
        elif mode in ("all", "rewrite") or found is None:
            self._recording = _new_recording(directory)
            plugins.install_captures()

    def activate(self) -> None:
        if self._replay is not None:
            self._replay.activate()
        elif self._recording is not None:
            self._token = activate(self._recording)

    def deactivate(self) -> None:
        if self._replay is not None:
            self._replay.deactivate()
        elif self._recording is not None:
            deactivate(self._token)  # type: ignore[arg-type]

    def close(self, worker: str | None) -> None:
        """Write what was recorded as pytest-xdist worker ``worker`` (a cassette kept from an
        earlier recording goes where nothing was called now); account for nothing else: a call
        no cassette answered raised where it was made."""
        if self._recording is None:
            return
        path = of_worker(self._directory / COLLECTION_CALLS, worker)
        if not self._recording.calls:
            path.unlink(missing_ok=True)
            return
        from timetracer_otel.exporters.files import CassetteFiles
        from timetracer_otel.exporters.frozen import freeze, thaw

        self._recording.fixed_path = os.path.abspath(path)
        CassetteFiles(announce=lambda line: None).write(
            thaw(freeze(self._recording)), self._recording.config
        )


def _new_recording(directory: Path) -> TraceRecording:
    config = TraceConfig(mode="record", cassette_dir=str(directory))
    recording = TraceRecording(
        config,
        trace_id=0,
        root_span_id=int.from_bytes(os.urandom(8), "big") or 1,
        method=BLOCK_METHOD,
        path=_LABEL,
        query="",
        headers=[],
        service=config.service_name or "pytest",
    )
    recording.draws = None  # collection's draws are seeded (see .collection), not recorded
    recording.status = 200
    return recording
