"""The span processor that groups each recorded request's spans and hands them to the writer."""

from __future__ import annotations

import threading
import time

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from timetracer_otel import _process_recording
from timetracer_otel._diagnostics import counters, errors
from timetracer_otel._recording import RecordingWriter, TraceRecording, request_recording

from ._timers import Timers
from .process_writer import ProcessWriter

__all__ = ["CassetteSpanProcessor"]

DEFAULT_MAX_OPEN_SPANS = 100_000
DEFAULT_GRACE_SECONDS = 1.0


class CassetteSpanProcessor(SpanProcessor):
    """Collect the spans of recorded requests; once the local root and its children ended, queue the cassette.

    A span belongs to the recording that is current where it starts (a contextvar, so
    concurrent requests, even of the same distributed trace, stay apart). When the root
    ends while spans of its request are still open (an inner ASGI middleware ends its span
    just after the server span; a handler's task is finishing), the cassette waits for
    them, at most ``grace_seconds``, so it is written once and whole. Spans that end after
    it was written (background work) cause the cassette to be rewritten with them, once per
    ``grace_seconds`` however many end (the first ``MAX_LATE`` are kept). Spans
    of unrecorded requests are ignored at the cost of one dict lookup. The table of open
    spans is bounded; the oldest entries are evicted and counted.
    """

    def __init__(
        self,
        writer: RecordingWriter | None = None,
        max_open_spans: int = DEFAULT_MAX_OPEN_SPANS,
        grace_seconds: float = DEFAULT_GRACE_SECONDS,
    ) -> None:
        self.writer: RecordingWriter = writer or ProcessWriter()
        self._grace_timers = Timers("timetracer-grace")
        self._max_open_spans = max_open_spans
        self._grace_seconds = grace_seconds
        self._owner: dict[int, TraceRecording] = {}
        self._lock = threading.Lock()
        self._in_flight = 0
        self._idle = threading.Condition(self._lock)
        self._waiting: set[TraceRecording] = set()  # root ended, spans still open: not yet queued
        self._late: set[TraceRecording] = set()  # written, spans ended since: rewritten when due

    def begin(self, recording: TraceRecording) -> None:
        """Start collecting for a request whose server span is ``recording.root_span_id``."""
        with self._lock:
            self._in_flight += 1
        self._own(recording.root_span_id, recording)

    def _own(self, span_id: int, recording: TraceRecording) -> None:
        evicted: list[TraceRecording] = []
        with self._lock:
            self._owner[span_id] = recording
            if span_id != recording.root_span_id:
                recording.open_spans += 1
            while len(self._owner) > self._max_open_spans:
                stale_id = next(iter(self._owner))
                stale = self._owner.pop(stale_id)
                evicted.append(stale)
                if stale_id != stale.root_span_id:
                    stale.open_spans -= 1  # its end will never be seen
                elif not stale.finished:
                    stale.discarded = (
                        True  # its request can no longer finish: flush must not wait for it
                    )
                    self._in_flight -= 1
                    self._idle.notify_all()
        if evicted:
            counters.add("evicted.open_spans", len(evicted))
            errors.error("evicted", "too many open spans; the oldest recordings lose spans")
            for stale in evicted:  # one waiting only for evicted spans need not wait any longer
                self._submit_if_done(stale, span_ended=False)

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """A span started for the recording of the request current here, or under a span a
        recording owns: an outer instrumentation's ``http send`` span starts where the server's
        ``send`` is awaited, outside the request's recording (see _request_scope)."""
        recording = request_recording()
        if recording is None or span.context.trace_id != recording.trace_id:
            parent = span.parent
            recording = self._owner.get(parent.span_id) if parent is not None else None
            if recording is None or span.context.trace_id != recording.trace_id:
                return
        self._own(span.context.span_id, recording)

    def on_end(self, span: ReadableSpan) -> None:
        span_id = span.context.span_id
        with self._lock:
            recording = self._owner.pop(span_id, None)
            if recording is not None and span_id != recording.root_span_id:
                recording.open_spans -= 1
        if recording is None:
            return
        kept = recording.add_span(span)
        if span_id == recording.root_span_id:
            self._finish(recording)
        else:
            self._submit_if_done(recording, span_ended=kept)

    def _submit_if_done(self, recording: TraceRecording, span_ended: bool = True) -> None:
        """Queue a finished recording that was waiting for its last open span; rewrite one already
        queued when one of its spans ended late (``span_ended``), once per grace period: a
        task the request left running may call on many times a second."""
        with self._lock:
            if not recording.finished or recording.discarded:
                return
            if recording in self._waiting:
                if recording.open_spans > 0:
                    return
                self._waiting.discard(recording)
                late = False
            elif span_ended:
                counters.add("late_spans")
                if recording in self._late:  # its rewrite, due, will hold this span too
                    return
                self._late.add(recording)
                late = True
            else:
                return
        if late:
            self._grace_timers.call_later(
                self._grace_seconds, lambda: self._rewrite_late(recording)
            )
        else:
            self.writer.submit(recording)

    def _rewrite_late(self, recording: TraceRecording) -> None:
        with self._lock:
            if recording not in self._late:  # a flush wrote it
                return
            self._late.discard(recording)
        self.writer.submit(recording)

    def rewrite(self, recording: TraceRecording) -> None:
        """Write again a recording already handed over that changed since (the app raised in a
        background task after its response went out); one not yet handed over is written later
        as it is by then."""
        with self._lock:
            if not recording.finished or recording.discarded or recording in self._waiting:
                return
        self.writer.submit(recording)

    def _release(self, recording: TraceRecording) -> None:
        """Queue ``recording`` if it is still waiting for spans (its grace period is over)."""
        with self._lock:
            if recording not in self._waiting:
                return
            self._waiting.discard(recording)
        self.writer.submit(recording)

    def _finish(self, recording: TraceRecording) -> None:
        recording.seal()
        try:
            skipped = (
                recording.config.errors_only and not recording.failed and not recording.discarded
            )
            with self._lock:
                recording.finished = True
                # discarded already: its owner chose not to keep it (an empty pytest fixture recording)
                recording.discarded = recording.discarded or skipped
                if not recording.discarded and recording.open_spans > 0:
                    self._waiting.add(recording)
            if recording.discarded:
                if skipped:
                    counters.add("skipped.errors_only")
            elif recording in self._waiting:
                self._grace_timers.call_later(self._grace_seconds, lambda: self._release(recording))
            else:
                self.writer.submit(recording)
        finally:
            with self._lock:  # only now: a flush that sees no request in flight finds it queued
                self._in_flight -= 1
                self._idle.notify_all()

    def flush_recording(self, recording: TraceRecording, timeout_millis: int = 30_000) -> bool:
        """Write the finished ``recording`` now, without waiting for its open spans or for other recordings."""
        self._release(recording)
        return self.writer.flush(timeout_millis / 1000)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Wait for requests being recorded to finish, then for their cassettes to be written."""
        deadline = time.monotonic() + timeout_millis / 1000
        with self._lock:
            if not self._idle.wait_for(lambda: self._in_flight <= 0, timeout_millis / 1000):
                return False
        self._submit_waiting()
        return self.writer.flush(max(deadline - time.monotonic(), 0.0))

    def flush_before_exit(self, seconds: float) -> bool:
        """Wait for every finished request's cassette while the writer keeps writing them (each
        ``seconds`` must see some written); say how many were not, as the process will end."""
        left = self.writer.unwritten()
        while not self.force_flush(int(seconds * 1000)):
            now_left = self.writer.unwritten()
            if now_left >= left:
                counters.add("unwritten_at_exit", now_left)
                errors.error(
                    "unwritten_at_exit",
                    f"{now_left} recorded requests were not written: the cassette writer wrote"
                    f" none of them in {seconds:g} s as the application stopped; their cassettes"
                    " may be missing",
                )
                return False
            left = now_left
        return True

    def shutdown(self) -> None:
        _process_recording.save()  # with what came after the last write (a process without lifespan events: the only one)
        self._submit_waiting()
        self.flush_before_exit(10.0)

    def _submit_waiting(self) -> None:
        """Queue every recording still waiting for open spans, or for its late spans' rewrite: a
        flush does not wait out grace periods."""
        with self._lock:
            waiting, self._waiting = [*self._waiting, *self._late], set()
            self._late = set()
        for recording in waiting:
            self.writer.submit(recording)
