"""Cassette file names: readable, bounded, and never outside the cassette directory."""

from __future__ import annotations

import re
from datetime import datetime
from functools import lru_cache

__all__ = ["cassette_relpath", "process_cassette_relpath", "is_process_cassette_name", "sanitise"]

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_MAX_ROUTE_CHARS = 80
_MAX_METHOD_CHARS = 16
# Lower case: a request cassette's name starts with its upper-cased method, so the two never meet.
_PROCESS_PREFIX = "process__"


def sanitise(text: str, limit: int) -> str:
    """Keep letters, digits, ``_`` and ``-``; every other run becomes one ``_``; cut at ``limit``."""
    return _UNSAFE.sub("_", text).strip("_")[:limit]


def cassette_relpath(
    method: str, route: str, cassette_id: str, recorded_at: datetime, suffix: str = ".json"
) -> str:
    """``<YYYY-MM-DD>/<METHOD>__<route>__<id><suffix>``, relative to the cassette directory.

    The route ``/`` gives an empty middle part, as in ``GET____a7f2.json``.
    """
    safe_id = sanitise(cassette_id, 32) or "0"
    return f"{_day(recorded_at)}/{_request_prefix(method, route)}{safe_id}{suffix}"


def _day(recorded_at: datetime) -> str:
    """``YYYY-MM-DD``: ``isoformat`` of the date, a tenth of the cost of formatting with ``strftime``."""
    return recorded_at.date().isoformat()


@lru_cache(maxsize=1024)
def _request_prefix(method: str, route: str) -> str:
    """``<METHOD>__<route>__``: the same few for every cassette of a service, so worked out once each."""
    safe_method = sanitise(method.upper(), _MAX_METHOD_CHARS) or "UNKNOWN"
    return f"{safe_method}__{sanitise(route, _MAX_ROUTE_CHARS)}__"


def process_cassette_relpath(
    service: str, cassette_id: str, recorded_at: datetime, suffix: str = ".json"
) -> str:
    """``<YYYY-MM-DD>/process__<service>__<id><suffix>``: the calls one process made outside its requests."""
    safe_service = sanitise(service, _MAX_ROUTE_CHARS)
    safe_id = sanitise(cassette_id, 32) or "0"
    return f"{_day(recorded_at)}/{_PROCESS_PREFIX}{safe_service}__{safe_id}{suffix}"


def is_process_cassette_name(name: str) -> bool:
    """True for a file name :func:`process_cassette_relpath` gives (a process cassette, not a request's)."""
    return name.startswith(_PROCESS_PREFIX)
