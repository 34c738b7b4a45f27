"""The span processor that groups each recorded request's spans and hands them to the writer."""

from __future__ import annotations

import threading
import time
from typing import Optional

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from timetracer_otel._diagnostics import counters, errors
from timetracer_otel._recording import TraceRecording, current_recording

from .writer import CassetteWriter

__all__ = ["CassetteSpanProcessor"]

DEFAULT_MAX_OPEN_SPANS = 100_000


class CassetteSpanProcessor(SpanProcessor):
    """Collect the spans of recorded requests; on the local root's end, queue the cassette.

    A span belongs to the recording that is current where it starts (a contextvar, so
    concurrent requests, even of the same distributed trace, stay apart). Spans that end
    after their request was written (background work) cause the cassette to be rewritten
    with them. Spans of unrecorded requests are ignored at the cost of one dict lookup.
    The table of open spans is bounded; the oldest entries are evicted and counted.
    """

    def __init__(self, writer: Optional[CassetteWriter] = None, max_open_spans: int = DEFAULT_MAX_OPEN_SPANS) -> None:
        self.writer = writer or CassetteWriter()
        self._max_open_spans = max_open_spans
        self._owner: dict[int, TraceRecording] = {}
        self._lock = threading.Lock()
        self._in_flight = 0
        self._idle = threading.Condition(self._lock)

    def begin(self, recording: TraceRecording) -> None:
        """Start collecting for a request whose server span is ``recording.root_span_id``."""
        with self._lock:
            self._in_flight += 1
        self._own(recording.root_span_id, recording)

    def _own(self, span_id: int, recording: TraceRecording) -> None:
        evicted = 0
        with self._lock:
            self._owner[span_id] = recording
            while len(self._owner) > self._max_open_spans:
                stale_id = next(iter(self._owner))
                stale = self._owner.pop(stale_id)
                evicted += 1
                if stale_id == stale.root_span_id and not stale.finished:
                    stale.discarded = True  # its request can no longer finish: flush must not wait for it
                    self._in_flight -= 1
                    self._idle.notify_all()
        if evicted:
            counters.add("evicted.open_spans", evicted)
            errors.error("evicted", "too many open spans; the oldest recordings lose spans")

    def on_start(self, span: Span, parent_context: Optional[Context] = None) -> None:
        recording = current_recording()
        if recording is not None and span.context.trace_id == recording.trace_id:
            self._own(span.context.span_id, recording)

    def on_end(self, span: ReadableSpan) -> None:
        with self._lock:
            recording = self._owner.pop(span.context.span_id, None)
        if recording is None:
            return
        recording.add_span(span)
        if span.context.span_id == recording.root_span_id:
            self._finish(recording)
        elif recording.finished and not recording.discarded:
            counters.add("late_spans")
            self.writer.submit(recording)

    def _finish(self, recording: TraceRecording) -> None:
        recording.seal()
        recording.finished = True
        try:
            if recording.config.errors_only and not recording.failed:
                counters.add("skipped.errors_only")
                recording.discarded = True
            else:
                self.writer.submit(recording)
        finally:
            with self._lock:  # only now: a flush that sees no request in flight finds it queued
                self._in_flight -= 1
                self._idle.notify_all()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Wait for requests being recorded to finish, then for their cassettes to be written."""
        deadline = time.monotonic() + timeout_millis / 1000
        with self._lock:
            if not self._idle.wait_for(lambda: self._in_flight <= 0, timeout_millis / 1000):
                return False
        return self.writer.flush(max(deadline - time.monotonic(), 0.0))

    def shutdown(self) -> None:
        self.writer.flush(5.0)
