"""The secrets the key opened in any cassette of this process, kept out of what replay prints.

A live call is hidden with the secrets of its own cassette before it is matched. A value the
key opened in another cassette (a session token a pytest fixture's cassette drew, a login an
earlier request of ``timetracer replay`` made) is hidden too in what a mismatch says (its
message, the report's entry), never in matching: there another cassette's secret may be a
plain value of this one.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from timetracer_otel.secret_values import ValueScrubber

# the most recent ones: a replay of thousands of cassettes keeps no ever-growing pattern
_KEPT = 4096

_lock = threading.Lock()
_values: dict[str, None] = {}  # insertion ordered: the oldest is dropped first
_scrubber: ValueScrubber | None = None


def note_opened(values: Iterable[str]) -> None:
    """Remember ``values``, opened with the key, for :func:`hidden_opened`."""
    global _scrubber
    with _lock:
        for value in values:
            _values.pop(value, None)
            _values[value] = None
        while len(_values) > _KEPT:
            del _values[next(iter(_values))]
        _scrubber = None


def hidden_opened(text: str) -> str:
    """``text`` with each secret opened in this process redacted."""
    global _scrubber
    with _lock:
        if not _values:
            return text
        if _scrubber is None:
            _scrubber = ValueScrubber(_values)
        scrubber = _scrubber
    return scrubber.text(text)
