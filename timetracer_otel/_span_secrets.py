"""The recordings whose secrets an OTLP export must hide, by trace id.

A span sent to a collector may quote a value redaction takes out of its request's cassette:
the request's credentials, a password hash in an SQL row, a Redis password in a pipeline's
error. Each redacting exporter (:mod:`timetracer_otel.exporters.otlp`) has a
:class:`Watched` table here: recorded requests are noted in it when they start, the exporter
holds their spans until the request is over, finds the values in the recording (in the span
processor's thread) and forgets the trace. Noting costs one dict insertion per recorded
request on the request path, and nothing when no exporter watches. Bounded: the oldest
entries go first.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._recording import TraceRecording

__all__ = ["Watched", "watch", "start_watching", "stop_watching"]

_MAX_TRACES = 4096


class Watched:
    """The recordings of one exporter's pending traces."""

    def __init__(self) -> None:
        self._recordings: OrderedDict[int, tuple[TraceRecording, ...]] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, recording: TraceRecording) -> None:
        with self._lock:
            self._recordings[recording.trace_id] = self._recordings.get(recording.trace_id, ()) + (
                recording,
            )
            while len(self._recordings) > _MAX_TRACES:
                self._recordings.popitem(last=False)

    def of(self, trace_id: int) -> tuple[TraceRecording, ...]:
        """The recordings noted for ``trace_id`` (two requests may share one) and not yet forgotten."""
        return self._recordings.get(trace_id, ())

    def forget(self, trace_id: int) -> None:
        with self._lock:
            self._recordings.pop(trace_id, None)


_tables: tuple[Watched, ...] = ()
_tables_lock = threading.Lock()


def start_watching() -> Watched:
    """A new table, filled with every recording started from now on."""
    global _tables
    table = Watched()
    with _tables_lock:
        _tables = (*_tables, table)
    return table


def stop_watching(table: Watched) -> None:
    global _tables
    with _tables_lock:
        _tables = tuple(t for t in _tables if t is not table)


def watch(recording: TraceRecording) -> None:
    """Note ``recording`` for every exporter: spans of its trace may quote its secrets."""
    for table in _tables:
        table.add(recording)
