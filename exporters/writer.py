"""The background thread that builds, redacts and writes cassettes, off the request path.

It shares the GIL with the application; :mod:`.process_writer` moves this work out of the
process and falls back to this thread where it cannot.
"""

from __future__ import annotations

import os
import queue
import threading
from typing import NamedTuple

from timetracer_otel._diagnostics import counters, errors, guarded
from timetracer_otel._recording import TraceRecording
from timetracer_otel.config import TraceConfig

from .files import CassetteFiles
from .frozen import FrozenRecording, freeze, thaw

__all__ = ["CassetteWriter", "count_drop"]

DEFAULT_QUEUE_SIZE = 1024


def count_drop() -> None:
    """Count (and log, rate-limited) a recording dropped because the writer is too far behind."""
    counters.add("dropped.queue_full")
    errors.error(
        "queue_full", "cassette queue is full; recordings are being dropped (disk too slow?)"
    )


class _Frozen(NamedTuple):
    """A recording already frozen (handed back by a writer process that exited), with its config."""

    recording: FrozenRecording
    config: TraceConfig


class CassetteWriter:
    """A bounded queue of finished recordings and one daemon thread that writes them.

    When the queue is full the recording is dropped and counted: a slow disk slows
    nothing but the writer. ``flush`` waits until everything queued so far is written.
    """

    def __init__(self, max_queue: int = DEFAULT_QUEUE_SIZE) -> None:
        self._max_queue = max_queue
        self._lock = threading.Lock()
        self._queue: queue.Queue[TraceRecording | _Frozen | threading.Event] = queue.Queue(
            max_queue
        )
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._files = CassetteFiles()

    def _ensure_thread(self) -> None:
        if self._thread is not None and self._thread.is_alive() and self._pid == os.getpid():
            return
        with self._lock:
            if self._pid != os.getpid():  # forked: the parent's thread and queue are not ours
                self._queue = queue.Queue(self._max_queue)
                self._pid = os.getpid()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="timetracer-writer", daemon=True
                )
                self._thread.start()

    def submit(self, recording: TraceRecording) -> bool:
        """Queue ``recording`` to be written; False when it was dropped (the queue is full)."""
        return self._enqueue(recording)

    def submit_frozen(self, recording: FrozenRecording, config: TraceConfig) -> bool:
        """Queue a recording frozen earlier; False when it was dropped (the queue is full)."""
        return self._enqueue(_Frozen(recording, config))

    def _enqueue(self, item: TraceRecording | _Frozen) -> bool:
        try:
            self._ensure_thread()
        except RuntimeError:  # the interpreter exits and starts no thread: write it here, now
            with guarded("write"):
                self._write(item)
            return True
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            count_drop()
            return False
        return True

    def flush(self, timeout: float | None = None) -> bool:
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

    def unwritten(self) -> int:
        thread = self._thread
        return self._queue.qsize() if thread is not None and thread.is_alive() else 0

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if isinstance(item, threading.Event):
                item.set()
            else:
                with guarded("write"):
                    self._write(item)

    def _write(self, item: TraceRecording | _Frozen) -> None:
        if isinstance(item, _Frozen):
            self._files.write(item.recording, item.config)
        else:
            self._files.write(thaw(freeze(item)), item.config)
