"""Matching outgoing calls to recorded ones: an O(1) index by signature, and what differs.

A call's signature is its protocol's view (:mod:`timetracer_otel.protocols`): what must
be equal for a recorded call to answer a live one.
"""

from __future__ import annotations

import json
import os
import re
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from timetracer_otel._terminal import cut, cut_pair
from timetracer_otel.cassette.calls import CassetteCall
from timetracer_otel.determinism.sources import real_time_ns
from timetracer_otel.protocols import CallView

__all__ = [
    "RecordedCall",
    "CallIndex",
    "describe_mismatch",
    "closest_call",
    "call_differences",
    "reordered",
    "reordered_note",
    "hashed_otherwise",
    "hash_note",
]

_MAX_SHOWN = 200


@dataclass
class RecordedCall:
    """One call of the cassette, with its view, and whether replay has used it."""

    index: int
    call: CassetteCall
    view: CallView
    used: bool = False

    @property
    def loopback_port(self) -> int | None:
        """The port of the loopback service the call went to; None for any other call."""
        return self.view.loopback[0] if self.view.loopback is not None else None


class CallIndex:
    """Recorded calls by signature; ``take`` gives the first unused one, in recorded order."""

    def __init__(self, calls: list[RecordedCall]) -> None:
        self.calls = calls
        self._by_key: dict[Hashable, deque[RecordedCall]] = {}
        self._by_portless_key: dict[Hashable, list[RecordedCall]] = {}
        for call in calls:
            queue = self._by_key.setdefault(call.view.key, deque())
            if not call.used:
                queue.append(call)
            if call.view.loopback is not None:
                self._by_portless_key.setdefault(call.view.loopback[1], []).append(call)
        # the loopback ports the recording called
        self.ports = frozenset(c.loopback_port for c in calls if c.loopback_port is not None)

    def holds(self, view: CallView) -> bool:
        """Whether a recorded call has ``view``'s signature (used or not)."""
        return view.key in self._by_key

    def take(self, view: CallView) -> RecordedCall | None:
        """The first unused recorded call with ``view``'s signature, marked used; None if none."""
        queue = self._by_key.get(view.key)
        while queue and queue[0].used:  # taken as a moved call (see moved)
            queue.popleft()
        if not queue:
            return None
        found = queue.popleft()
        found.used = True
        return found

    def due(self, view: CallView) -> bool:
        """Whether the first unused recorded call with ``view``'s signature was recorded after
        every call of its protocol that replay has not made yet (none is pending before it)."""
        first = next((c for c in self._by_key.get(view.key, ()) if not c.used), None)
        return first is not None and not any(
            not c.used and c.index < first.index and c.view.protocol == view.protocol
            for c in self.calls
        )

    def moved(self, view: CallView) -> list[RecordedCall]:
        """The unused recorded calls that ``view`` (a call to a loopback service) would match on
        another port, in recorded order: the same call to the same service, listening elsewhere."""
        if view.loopback is None:
            return []
        return [c for c in self._by_portless_key.get(view.loopback[1], ()) if not c.used]

    def unused(self) -> list[RecordedCall]:
        return [c for c in self.calls if not c.used]


# A date and time as ISO 8601 and SQL write it, without its zone: what local time formats.
_TIMES = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?")
# Seconds since the epoch as ``time.time()`` and ``logging``'s ``record.created`` give them
# (2001 to 2033), a number of their own: not part of a longer one.
_EPOCH_SECONDS = re.compile(r"(?<![\d.])1\d{9}(?:\.\d{1,9})?(?![\d.])")


def _text(value: Any) -> str:
    return (
        value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)
    )


def _shown(value: Any) -> str:
    return cut(_text(value), _MAX_SHOWN)


def _field_diff(name: str, recorded: Any, live: Any) -> list[str]:
    if name == "query" and isinstance(recorded, dict) and isinstance(live, dict):
        lines = []
        for key in sorted(set(recorded) | set(live)):
            if recorded.get(key) != live.get(key):
                lines.append(
                    f"query {key!r}: recorded {_shown(recorded.get(key, '<absent>'))}, this call {_shown(live.get(key, '<absent>'))}"
                )
        return lines
    if (
        name == "body"
        and isinstance(recorded, str)
        and isinstance(live, str)
        and "\n" not in recorded + live
    ):
        if len(recorded) > 60 or len(live) > 60:
            # one line each, around where they first differ (a traceparent deep in a JSON body)
            old, new = cut_pair(recorded, live, _MAX_SHOWN)
            return ["body differs:", f"  - {old}", f"  + {new}"]
    old, new = cut_pair(_text(recorded), _text(live), _MAX_SHOWN)
    return [f"{name}: recorded {old}, this call {new}"]


def _similarity(a: CallView, b: CallView) -> int:
    weights = {"method": 3, "host": 3, "path": 4, "query": 2, "body": 2}
    return sum(
        weights.get(name, 1) for name, value in a.fields.items() if b.fields.get(name) == value
    )


def _ranked(view: CallView, calls: list[RecordedCall]) -> list[RecordedCall]:
    """The recorded calls of ``view``'s protocol, the most alike first (unused before used).

    Calls alike in the same fields (every ``EVALSHA`` of one script: its arguments differ in
    each) come closest first by how much of each differing field they share: a queued job's
    message that differs only in the time a log line put in it, not the first job queued."""
    candidates = [c for c in calls if c.view.protocol == view.protocol]
    scored = sorted(
        ((-_similarity(view, c.view), c.used, c.index, c) for c in candidates),
        key=lambda entry: entry[:3],
    )
    tied = [entry for entry in scored[:_MOST_TIED] if entry[:2] == scored[0][:2]]
    if len(tied) > 1:
        tied.sort(key=lambda entry: (-_closeness(view, entry[3].view), entry[2]))
        scored[: len(tied)] = tied
    return [entry[3] for entry in scored]


_MOST_TIED = 64  # calls alike in the same fields compared further: the mismatch is already an error
_MOST_COMPARED = 4096  # characters of a field compared


def _closeness(a: CallView, b: CallView) -> float:
    """How much of the fields in which ``a`` and ``b`` differ they share: the start and the end
    of each field's text in common, as a fraction of the longer one."""
    shared = 0.0
    for name, value in a.fields.items():
        other = b.fields.get(name)
        if other != value:
            left, right = _text(value)[:_MOST_COMPARED], _text(other)[:_MOST_COMPARED]
            start = len(os.path.commonprefix([left, right]))
            end = len(os.path.commonprefix([left[start:][::-1], right[start:][::-1]]))
            shared += (start + end) / max(len(left), len(right), 1)
    return shared


def reordered(recorded: Any, live: Any) -> bool:
    """Whether ``live`` holds the same items as ``recorded`` with some list in another order
    (a JSON text inside is read as its value: ``json.dumps(list(a_set))`` sent as a parameter),
    or the same values under other names of the same mapping (``dict(zip(a_set, values))``:
    named SQL parameters)."""
    return recorded != live and (
        _unordered(recorded) == _unordered(live) or _names_swapped(recorded, live)
    )


def _names_swapped(recorded: Any, live: Any) -> bool:
    return (
        isinstance(recorded, dict)
        and isinstance(live, dict)
        and recorded.keys() == live.keys()
        and sorted(map(repr, recorded.values())) == sorted(map(repr, live.values()))
    )


# A number as long as Python's hash() of a str or a tuple gives (64 bits), signed
_HASH_SIZED = re.compile(r"-?\d{15,20}")


def hashed_otherwise(recorded: str, replayed: str) -> bool:
    """Whether two texts differ only in numbers the size of Python's ``hash()``: fastapi-cache2's
    ``ETag: W/<hash(...)>``, a cache key made with ``hash()``; they follow the process's hash seed."""
    numbers = _HASH_SIZED.findall(recorded)
    return (
        bool(numbers)
        and numbers != _HASH_SIZED.findall(replayed)
        and _HASH_SIZED.split(recorded) == _HASH_SIZED.split(replayed)
    )


def hash_note(where: str) -> str:
    """What a difference :func:`hashed_otherwise` finds most likely is."""
    return (
        f"{where}: only a number the size of Python's hash() differs (an ETag made with hash()): "
        "it follows the process's hash seed. Record and replay with the same PYTHONHASHSEED "
        "(PYTHONHASHSEED=0 for both)"
    )


def reordered_note(where: str) -> str:
    """What a call's or a response's difference that :func:`reordered` finds most likely is."""
    return (
        f"{where}: the same items in another order: a set's (its order follows the "
        "process's hash seed). Record and replay with the same PYTHONHASHSEED "
        "(PYTHONHASHSEED=0 for both)"
    )


def _unordered(value: Any, depth: int = 0) -> Any:
    """``value`` with every list's items sorted, to compare what two values hold in any order."""
    if depth > 32:  # as deep as a real parameter goes; past it, compared as it is
        return value
    if isinstance(value, str) and value[:1] not in ("[", "{"):
        return _literals_unordered(value, depth) if ("'{" in value or "'[" in value) else value
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return value
    if isinstance(value, dict):
        return sorted(((repr(k), _unordered(v, depth + 1)) for k, v in value.items()), key=repr)
    if isinstance(value, (list, tuple)):
        return sorted((_unordered(item, depth + 1) for item in value), key=repr)
    return value


# a SQL string literal: '' or a backslash escape (MySQL's) inside
_SQL_TEXT = re.compile(r"'((?:[^'\\]|''|\\.)*)'", re.S)
_SQL_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "0": "\0", "Z": "\x1a"}
_SQL_ESCAPE = re.compile(r"\\(.)|''", re.S)


def _literals_unordered(statement: str, depth: int) -> list[Any]:
    """A statement with each string literal holding JSON read as its value in any order: a JSON
    text quoted into the statement (PyMySQL's and aiomysql's parameters, an audit log's row)."""
    parts: list[Any] = []
    end = 0
    for literal in _SQL_TEXT.finditer(statement):
        text = _SQL_ESCAPE.sub(
            lambda m: "'" if m.group(1) is None else _SQL_ESCAPES.get(m.group(1), m.group(1)),
            literal.group(1),
        )
        parts += [statement[end : literal.start()], _unordered(text, depth + 1)]
        end = literal.end()
    return [*parts, statement[end:]]


def _zone_shift(recorded: Any, live: Any) -> int | None:
    """Hours by which every time in ``live`` is off the same time in ``recorded``, when that is a
    whole, nonzero number a time zone could make (the app formatted local time); else None."""
    shifts = set()
    for old, new in zip(_TIMES.findall(_text(recorded)), _TIMES.findall(_text(live)), strict=False):
        try:
            delta = datetime.fromisoformat(new) - datetime.fromisoformat(old)
        except ValueError:
            return None
        shifts.add(delta.total_seconds() / 3600)
    (shift,) = shifts if len(shifts) == 1 else (None,)
    return (
        int(shift) if shift is not None and shift == int(shift) and 0 < abs(shift) <= 14 else None
    )


_NOW_WITHIN = timedelta(minutes=10)


def _reads_this_replays_time(recorded: Any, live: Any) -> bool:
    """Whether ``live`` holds, where ``recorded`` has another time, the time this replay runs at
    (in UTC or local time): a clock read the recording did not draw. Not said of a recording
    made just before the replay, whose own times are as near."""
    now_ns = real_time_ns()
    now = (
        datetime.fromtimestamp(now_ns / 1e9, timezone.utc).replace(tzinfo=None),
        datetime.fromtimestamp(now_ns / 1e9),
    )

    def near_now(text: str) -> bool | None:
        try:
            read = datetime.fromisoformat(text)
        except ValueError:
            return None
        return any(abs(read - moment) <= _NOW_WITHIN for moment in now)

    recorded_text, live_text = _text(recorded), _text(live)
    for old, new in zip(_TIMES.findall(recorded_text), _TIMES.findall(live_text), strict=False):
        if old != new and near_now(new) and near_now(old) is False:
            return True
    within = _NOW_WITHIN.total_seconds()
    pairs = zip(
        _EPOCH_SECONDS.findall(recorded_text), _EPOCH_SECONDS.findall(live_text), strict=False
    )
    return any(
        old != new
        and abs(float(new) - now_ns / 1e9) <= within
        and abs(float(old) - now_ns / 1e9) > within
        for old, new in pairs
    )


def call_differences(view: CallView, recorded: RecordedCall) -> list[str]:
    """How the live call ``view`` differs from ``recorded``, one line per field (``path: recorded ..., this call ...``)."""
    lines = []
    for name, value in recorded.view.fields.items():
        live = view.fields.get(name)
        if value != live:
            lines.extend(_field_diff(name, value, live))
            in_another_order = reordered(value, live)
            shift = None if in_another_order else _zone_shift(value, live)
            if shift is not None:
                lines.append(
                    f"{name}: its times are {shift:+d} h off the recorded ones: was this recorded in "
                    "another time zone? Replay with the recording's TZ (TZ=UTC for most servers)"
                )
            elif in_another_order:
                lines.append(reordered_note(name))
            elif hashed_otherwise(_text(value), _text(live)):
                lines.append(hash_note(name))
            elif _reads_this_replays_time(value, live):
                lines.append(
                    f"{name}: it holds the time of this replay where the recording has its own: a "
                    "clock read timetracer does not draw. A log line's time (an audit log sent "
                    "out): add the logs source, TIMETRACER_DRAWS=clock,uuid,random,urandom,secrets,logs"
                )
    if recorded.view.key == view.key:
        lines.append("same call; every recorded answer for it is used up")
    return lines


def closest_call(view: CallView, calls: list[RecordedCall]) -> RecordedCall | None:
    """The recorded call most like ``view``, or None when the cassette has none of its protocol."""
    ranked = _ranked(view, calls)
    return ranked[0] if ranked else None


def describe_mismatch(view: CallView, calls: list[RecordedCall], limit: int = 3) -> str:
    """The closest recorded calls of the same protocol and how each differs from ``view``."""
    ranked = _ranked(view, calls)[:limit]
    if not ranked:
        return f"the cassette has no recorded {view.protocol} calls"
    lines = ["closest recorded calls:"]
    for call in ranked:
        state = "already used" if call.used else "unused"
        lines.append(f"  #{call.index} {call.view.label} ({state})")
        lines.extend(f"      {line}" for line in call_differences(view, call))
    return "\n".join(lines)
