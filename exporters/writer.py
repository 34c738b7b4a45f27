"""The background thread that builds, redacts and writes cassettes, off the request path."""

from __future__ import annotations

import heapq
import itertools
import json
import os
import queue
import threading
import time
from datetime import datetime
from typing import Any, Callable, NamedTuple, Optional, Union

import orjson

from timetracer_otel._diagnostics import counters, errors, guarded, logger
from timetracer_otel._recording import TraceRecording
from timetracer_otel.cassette.location import CassetteFile, join
from timetracer_otel.cassette.reader import CassetteError, load_cassette
from timetracer_otel.cassette.naming import cassette_relpath
from timetracer_otel.cassette.storage import encode, replace, write_new
from timetracer_otel.redaction import redactor_for

from .builder import build_document
from .console import record_line

__all__ = ["CassetteWriter", "store"]

DEFAULT_QUEUE_SIZE = 1024


def prepare_document(recording: TraceRecording) -> dict[str, Any]:
    """Build the cassette document and redact it as the recording's config says."""
    doc = build_document(recording)
    config = recording.config
    redactor = redactor_for(config)
    if redactor is not None:
        redactor.document(doc)
    if config.redact_hook is not None:
        replaced = config.redact_hook(doc)
        if replaced is not None:
            doc = replaced
    return doc


def serialise(doc: dict[str, Any]) -> bytes:
    """The cassette file's bytes: UTF-8 JSON indented by two spaces.

    orjson where it can: the standard library encodes indented JSON in pure Python, which
    was two thirds of the writer's time per cassette. The standard library for what
    orjson refuses (integers beyond 64 bits).
    """
    try:
        return orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
    except orjson.JSONEncodeError:
        return json.dumps(doc, ensure_ascii=False, indent=2).encode("utf-8") + b"\n"


def store(
    doc: dict[str, Any], root: str, compression: str = "none", skip_identical: bool = False, durable: bool = False
) -> Optional[CassetteFile]:
    """Write ``doc`` as a new cassette under ``root`` (a directory or ``s3://`` URL), named as the format says.

    ``skip_identical``: write nothing (and return None) when that name already holds this very
    cassette, so importing the same file twice adds nothing.
    """
    relpath = cassette_relpath(
        doc["request"]["method"],
        doc["request"]["route"] or doc["request"]["path"],
        doc["id"],
        _recorded_day(doc),
        ".json.gz" if compression == "gzip" else ".json",
    )
    if skip_identical and _holds(join(root, relpath), doc):
        return None
    return write_new(root, relpath, encode(serialise(doc), relpath), durable)


def _holds(file: CassetteFile, doc: dict[str, Any]) -> bool:
    try:
        return load_cassette(file) == doc
    except CassetteError:
        return False


class _Later(NamedTuple):
    """An action the writer thread runs once ``due`` (``time.monotonic()``) has passed."""

    due: float
    order: int
    action: Callable[[], None]


class CassetteWriter:
    """A bounded queue of finished recordings and one daemon thread that writes them.

    When the queue is full the recording is dropped and counted: a slow disk slows
    nothing but the writer. ``flush`` waits until everything queued so far is written.
    ``call_later`` runs an action on the same thread after a delay, so delayed work
    needs no thread of its own.
    """

    def __init__(self, max_queue: int = DEFAULT_QUEUE_SIZE) -> None:
        self._max_queue = max_queue
        self._lock = threading.Lock()
        self._queue: "queue.Queue[Union[TraceRecording, threading.Event, _Later]]" = queue.Queue(max_queue)
        self._order = itertools.count()
        self._thread: Optional[threading.Thread] = None
        self._pid = os.getpid()

    def _ensure_thread(self) -> None:
        if self._thread is not None and self._thread.is_alive() and self._pid == os.getpid():
            return
        with self._lock:
            if self._pid != os.getpid():  # forked: the parent's thread and queue are not ours
                self._queue = queue.Queue(self._max_queue)
                self._pid = os.getpid()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="timetracer-writer", daemon=True)
                self._thread.start()

    def submit(self, recording: TraceRecording) -> bool:
        """Queue ``recording`` to be written; False when it was dropped (the queue is full)."""
        return self._enqueue(recording)

    def call_later(self, delay: float, action: Callable[[], None]) -> bool:
        """Run ``action`` on the writer thread in ``delay`` seconds; False when it was dropped (the queue is full)."""
        return self._enqueue(_Later(time.monotonic() + delay, next(self._order), action))

    def _enqueue(self, item: Union[TraceRecording, _Later]) -> bool:
        self._ensure_thread()
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            counters.add("dropped.queue_full")
            errors.error("queue_full", "cassette queue is full; recordings are being dropped (disk too slow?)")
            return False
        return True

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Wait until all recordings submitted before this call are written."""
        thread = self._thread
        if thread is None or not thread.is_alive():
            return True
        done = threading.Event()
        try:
            self._queue.put(done, timeout=timeout)
        except queue.Full:
            return False
        return done.wait(timeout)

    def _run(self) -> None:
        later: list[_Later] = []  # a heap, by due time
        while True:
            try:
                item = self._queue.get(timeout=max(later[0].due - time.monotonic(), 0) if later else None)
            except queue.Empty:
                item = None
            while later and later[0].due <= time.monotonic():
                with guarded("write.later"):
                    heapq.heappop(later).action()
            if isinstance(item, _Later):
                heapq.heappush(later, item)
            elif isinstance(item, threading.Event):
                item.set()
            elif item is not None:
                with guarded("write"):
                    self._write(item)

    def _write(self, recording: TraceRecording) -> None:
        doc = prepare_document(recording)
        target = recording.written_path or recording.fixed_path
        if target is not None:  # a rewrite for late spans, or a path chosen up front
            replace(target, encode(serialise(doc), target), recording.config.fsync)
            counters.add("rewritten" if recording.written_path else "recorded")
            recording.written_path = target
            return
        config = recording.config
        path = store(doc, config.cassette_dir, config.compression, durable=config.fsync)
        recording.written_path = str(path)
        counters.add("recorded")
        logger.info(record_line(doc, str(path)))


def _recorded_day(doc: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(doc["recorded_at"].replace("Z", "+00:00"))
