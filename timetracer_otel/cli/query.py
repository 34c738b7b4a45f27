"""Filtering and sorting cassette summaries: one implementation for ``timetracer list``,
``timetracer search`` and the dashboard's table."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from fnmatch import fnmatchcase
from typing import Any

__all__ = ["Filters", "SORT_KEYS", "parse_status", "parse_time", "select", "is_error"]

_RELATIVE = re.compile(r"(\d+)\s*([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def _time_key(recorded_at: str | None) -> str:
    """``recorded_at`` in a form that sorts as time does (``...:08Z`` is ``...:08.000000Z``)."""
    text = recorded_at or ""
    return text[:19] + (text[19:-1] or ".000000") if text.endswith("Z") else text


SORT_KEYS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "recorded_at": lambda e: _time_key(e["recorded_at"]),
    "method": lambda e: e["method"],
    "path": lambda e: e["path"],
    "route": lambda e: e["route"] or "",
    "status": lambda e: e["status"],
    "duration": lambda e: e["duration_ms"] or 0.0,
    "calls": lambda e: e["calls"],
    "service": lambda e: e["service"] or "",
    "id": lambda e: e["id"] or "",
}


def parse_status(text: str) -> Callable[[int], bool]:
    """``200``, ``5xx`` or ``400-499`` as a test on a status code; ``ValueError`` otherwise."""
    spec = text.strip().lower()
    if re.fullmatch(r"[1-5]xx", spec):
        return lambda status: status // 100 == int(spec[0])
    if re.fullmatch(r"\d{3}-\d{3}", spec):
        low, high = (int(part) for part in spec.split("-"))
        return lambda status: low <= status <= high
    if re.fullmatch(r"\d{3}", spec):
        return lambda status: status == int(spec)
    raise ValueError(
        f"invalid status {text!r}; use a code (404), a class (5xx) or a range (400-499)"
    )


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """An ISO date or date-time (UTC unless it says otherwise), or a span back from now: ``30m``, ``2h``, ``7d``."""
    spec = text.strip()
    relative = _RELATIVE.fullmatch(spec)
    if relative:
        amount, unit = int(relative.group(1)), relative.group(2)
        try:
            return (now or datetime.now(timezone.utc)) - timedelta(**{_UNITS[unit]: amount})
        except OverflowError:  # further back than the calendar goes: from its start
            return datetime.min.replace(tzinfo=timezone.utc)
    try:
        moment = datetime.fromisoformat(spec.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"invalid time {text!r}; use 2026-01-22, 2026-01-22T09:15:00 or 30m, 2h, 7d ago"
        ) from None
    return (
        moment.replace(tzinfo=timezone.utc)
        if moment.tzinfo is None
        else moment.astimezone(timezone.utc)
    )


def _as_key(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")


def is_error(entry: dict[str, Any]) -> bool:
    """As the console line's ``[ERR]``: a 5xx status or an exception out of the app."""
    return entry["status"] >= 500 or entry["error"] is not None


@dataclass
class Filters:
    """Which summaries to keep; every field left empty keeps everything."""

    methods: Sequence[str] = ()
    path: str | None = None  # glob on the request path
    route: str | None = None  # glob on the route template
    statuses: Sequence[str] = ()  # any of: 200, 5xx, 400-499
    errors: bool = False
    since: str | None = None
    until: str | None = None
    services: Sequence[str] = ()
    _tests: list[Callable[[dict[str, Any]], bool]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        """Parse once (and fail early on a bad value); matching 50,000 summaries must stay cheap."""
        tests: list[Callable[[dict[str, Any]], bool]] = []
        if self.methods:
            methods = {m.upper() for m in self.methods}
            tests.append(lambda e: e["method"] in methods)
        if self.path:
            path = self.path
            tests.append(lambda e: fnmatchcase(e["path"], path))
        if self.route:
            route = self.route
            tests.append(lambda e: e["route"] is not None and fnmatchcase(e["route"], route))
        if self.statuses:
            checks = [parse_status(s) for s in self.statuses]
            tests.append(lambda e: any(check(e["status"]) for check in checks))
        if self.errors:
            tests.append(is_error)
        if self.since:
            since = _as_key(parse_time(self.since))
            tests.append(lambda e: _time_key(e["recorded_at"]) >= since)
        if self.until:
            until = _as_key(parse_time(self.until))
            tests.append(lambda e: _time_key(e["recorded_at"]) < until)
        if self.services:
            services = set(self.services)
            tests.append(lambda e: e["service"] in services)
        self._tests = tests

    def __call__(self, entry: dict[str, Any]) -> bool:
        return all(test(entry) for test in self._tests)

    @property
    def keeps_everything(self) -> bool:
        """No filter set: what no request describes (a process cassette) is kept too."""
        return not self._tests


def select(
    entries: Iterable[dict[str, Any]],
    filters: Filters,
    sort: str = "recorded_at",
    descending: bool = False,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """The summaries that pass ``filters``, sorted by ``sort`` (a key of :data:`SORT_KEYS`), at most ``limit``."""
    if sort not in SORT_KEYS:
        raise ValueError(f"invalid sort {sort!r}; allowed values: {', '.join(SORT_KEYS)}")
    key = SORT_KEYS[sort]
    rows = sorted(
        (e for e in entries if filters(e)), key=lambda e: (key(e), e["key"]), reverse=descending
    )
    return rows if limit is None else rows[:limit]
