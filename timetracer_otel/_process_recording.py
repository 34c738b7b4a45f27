"""The process recording: the calls an app makes outside every request, for the process cassette.

Lifespan startup and shutdown, code run at import after timetracer was set up, tasks and
threads that carry no request's context: a replay must answer their calls too, or an app
whose startup pings Redis or creates its tables cannot start with its dependencies
unreachable. In a process started to record (``TIMETRACER_MODE=record``) and set up by
``auto_setup``, ``TimeTracerMiddleware`` or the distro, these calls go to one recording
per process, begun as timetracer's integration is imported (:func:`start_early`: the app's
modules, imported next, may connect as they are) and given its service and writer when the
app is set up. It is written as the process cassette once the lifespan startup completed
(a process killed later still has it), and rewritten in place at shutdown with what came
after. It keeps every call made until the app has started (up to :data:`MAX_STARTUP_CALLS`:
migrations run at start make thousands), and :data:`MAX_CALLS` more after: a process
calling in the background forever drops the rest and counts them
(``dropped.process_calls``). The clock, UUID and
random values drawn outside requests are kept until the app has started
(:func:`~timetracer_otel.determinism.end_startup`).
"""

from __future__ import annotations

import os
import threading
from datetime import datetime, timezone
from typing import Any

from ._diagnostics import counters, guarded
from ._recording import (
    RecordingWriter,
    TraceRecording,
    in_request,
    process_recording,
    use_process_recording,
)
from .cassette.location import is_url, join
from .cassette.naming import process_cassette_relpath
from .config import TraceConfig, process_mode
from .determinism import DrawRecorder, called, real_urandom, use_startup_draws
from .determinism import install as install_draw_sources

__all__ = [
    "MAX_CALLS",
    "MAX_STARTUP_CALLS",
    "ProcessRecording",
    "app_set_up",
    "app_started",
    "process_id",
    "start_early",
    "wanted",
    "start",
    "save",
]

MAX_CALLS = 1000  # kept after the app has started
MAX_STARTUP_CALLS = 50_000  # kept while it starts: a replay cannot start it without each one
# An app of this process was set up to record (a TimeTracerMiddleware built): only such a process
# writes its process cassette. A child the app or its server starts (a helper script,
# multiprocessing's resource tracker) loads opentelemetry-instrument's start-up too, and its
# cassette, written at its exit, was the newest: the one a replay started the app from.
_app_set_up = False


class ProcessRecording(TraceRecording):
    """The calls made outside every request, and the writer that writes them."""

    scope = "process"

    def __init__(
        self, config: TraceConfig, service: str = "", writer: RecordingWriter | None = None
    ) -> None:
        self._cassette_number = _new_number()
        super().__init__(
            config,
            trace_id=0,
            root_span_id=self._cassette_number,
            method="",
            path="",
            query="",
            headers=[],
            service=service,
        )
        # the clock, UUID and random values drawn while the app starts (seeding, a generated
        # signing key), from those drawn as its modules were imported: the rest stay real
        self.draws = DrawRecorder(config.draws) if config.draws else None
        self.dropped_calls = 0
        self.starting = True  # until the app has started (started())
        self._kept_at_most = MAX_STARTUP_CALLS
        self.writer = writer  # None until the app is set up (begun as its modules were imported)
        if writer is not None:
            self.adopt(config, service, writer)

    def adopt(self, config: TraceConfig, service: str, writer: RecordingWriter) -> None:
        """Where the recording goes, known once the app is set up: its service, its writer, its file."""
        self.config, self.service, self.writer = config, service, writer
        started = datetime.fromtimestamp(self.started_ns / 1e9, tz=timezone.utc)
        suffix = ".json.gz" if config.compression == "gzip" else ".json"
        path = join(
            config.cassette_dir,
            process_cassette_relpath(service, f"{self._cassette_number:08x}", started, suffix),
        )
        self.fixed_path = str(path) if is_url(config.cassette_dir) else os.path.abspath(path)

    def forked(self) -> None:
        """Go on as the recording of a worker forked from the process that began it (gunicorn's
        arbiter, started by ``opentelemetry-instrument``): a process cassette of the worker's
        own, under a new id, holding what it inherited and what it does next. Two workers wrote
        one file, and every request cassette named it."""
        self._lock = threading.Lock()  # another thread of the parent may have held it
        self._cassette_number = self.root_span_id = _new_number()
        if self.writer is not None:
            self.adopt(self.config, self.service, self.writer)

    def started(self) -> None:
        """The app has started: :data:`MAX_CALLS` more calls are kept from now on."""
        with self._lock:
            if self.starting:
                self.starting = False
                self._kept_at_most = min(len(self.calls), MAX_STARTUP_CALLS) + MAX_CALLS

    def add_call(self, call: Any) -> None:
        """Keep ``call`` (it belongs to no span of a recorded request) unless as many as are kept
        are kept already (see the module's docstring)."""
        with self._lock:
            kept = len(self.calls) < self._kept_at_most
            if kept:
                self.calls.append(call)
                number = len(self.calls) - 1
            else:
                self.dropped_calls += 1
        if kept:
            called(self.draws, number)
        else:
            counters.add("dropped.process_calls")


def _new_number() -> int:
    return int.from_bytes(real_urandom(4), "big")


def _forked() -> None:
    recording = process_recording()
    if isinstance(recording, ProcessRecording):
        with guarded("process.fork"):
            recording.forked()


os.register_at_fork(after_in_child=_forked)


def wanted(config: TraceConfig) -> bool:
    """Whether setting up ``config`` starts the process recording: it records, and so does the process."""
    return config.mode == "record" and process_mode() == "record"


def start_early(config: TraceConfig) -> None:
    """Record what the app does outside requests from now on, before it is set up (its modules
    being imported: an engine built at import that checks the server, ``create_all()`` there):
    the draws it makes, and the calls of every installed library, kept in the process recording
    that :func:`start` goes on with."""
    if not wanted(config) or process_recording() is not None:
        return  # or the distro started recording before anything was imported
    from .plugins import capture_early

    recording = use_process_recording(ProcessRecording(config))
    if recording.draws is not None:
        install_draw_sources(config.draws)
        use_startup_draws(recording.draws, in_request)
    capture_early()


def start(config: TraceConfig, service: str, writer: RecordingWriter) -> TraceRecording:
    """Record calls outside requests from now on; the first start in the process decides where they go."""
    recording = process_recording()
    if isinstance(recording, ProcessRecording) and recording.writer is None:
        recording.adopt(config, service, writer)  # begun as the app's modules were imported
    else:
        recording = use_process_recording(ProcessRecording(config, service, writer))
    if isinstance(recording, ProcessRecording):
        # now, not when the middleware is built (the first lifespan event): a seed run at
        # import after auto_setup draws through the hooks too
        install_draw_sources(config.draws)
        use_startup_draws(recording.draws, in_request)
    return recording


def app_set_up() -> None:
    """Note that an app of this process records: :func:`save` writes from now on."""
    global _app_set_up
    _app_set_up = True


def app_started() -> None:
    """Note that the app has started (its lifespan startup is over, or it serves a request)."""
    recording = process_recording()
    if isinstance(recording, ProcessRecording) and recording.starting:
        recording.started()


def _written() -> ProcessRecording | None:
    """The process recording, where this process writes it: its app was set up to record, and
    it has a writer (one begun at import by an app never set up has nowhere to go)."""
    recording = process_recording()
    if _app_set_up and isinstance(recording, ProcessRecording) and recording.writer is not None:
        return recording
    return None


def process_id() -> str | None:
    """The id of the process cassette this process writes (None where it writes none): each
    request cassette names it, so that a request served by one of several concurrent workers
    replays after that worker's start."""
    recording = _written()
    return None if recording is None else f"{recording.root_span_id:08x}"


def save(timeout: float | None = None) -> None:
    """Write the process cassette if the recording holds calls (the first time a new file, then a
    rewrite), in a process whose app was set up to record.

    ``timeout``: wait that long for the file to be written (after startup, so that a process
    killed before its first request still leaves it); else only hand it over.
    """
    recording = _written()
    if recording is None or recording.writer is None:
        return
    if not (
        recording.calls or recording.dropped_calls or (recording.draws and recording.draws.draws)
    ):
        return
    with guarded("process.save"):
        recording.writer.submit(recording)
        if timeout is not None:
            recording.writer.flush(timeout)
