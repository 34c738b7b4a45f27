"""Delayed actions on one helper thread: the cassette processor's grace periods."""

from __future__ import annotations

import heapq
import itertools
import os
import threading
import time
from collections.abc import Callable
from typing import NamedTuple

from timetracer_otel._diagnostics import guarded

__all__ = ["Timers"]


class _Due(NamedTuple):
    due: float  # time.monotonic()
    order: int  # ties run in the order they were asked for; actions are never compared
    action: Callable[[], None]


class Timers:
    """Runs each action once its delay is over, on a daemon thread started with the first one.

    A request whose spans are still open when it ends waits at most its grace period: that
    wait belongs to the processor, whatever writer it hands cassettes to. After a fork the
    parent's timers stay the parent's.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._heap: list[_Due] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    def call_later(self, delay: float, action: Callable[[], None]) -> None:
        """Run ``action`` on the helper thread in ``delay`` seconds."""
        with self._lock:
            if self._pid != os.getpid():
                self._heap, self._thread, self._pid = [], None, os.getpid()
            heapq.heappush(self._heap, _Due(time.monotonic() + delay, next(self._order), action))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._changed.notify()

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._heap or self._heap[0].due > time.monotonic():
                    self._changed.wait(
                        max(self._heap[0].due - time.monotonic(), 0) if self._heap else None
                    )
                action = heapq.heappop(self._heap).action
            with guarded("write.later"):
                action()
