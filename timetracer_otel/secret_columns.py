"""Columns learned to hold secrets: an API key's column that no name says is secret.

A secret found by value (an ``X-Api-Key`` the request sent, a token issued earlier) can
stand in an SQL row or parameter under a column name no pattern covers (lnbits keeps its
wallet keys in ``adminkey`` and ``inkey``). The column's other values are then keys too: the
other rows a listing returns, the same column in the rows of later requests, the value an
``INSERT`` writes there. :class:`SecretColumns` learns such a column the first time it
holds a secret found by value, and from then on (for as long as the writing process lives)
gives the token-like values it holds (16 or more token characters: not words, numbers or
flags) to be hidden by value. Generic names (``id``, ``key``, ``value``) are never learned:
a session table keyed by its token would otherwise hide every id of every table. A column
learned is logged once, to be named in ``TIMETRACER_REDACT_FIELDS``: the cassettes written
before it was learned keep its values.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from typing import Any

from ._diagnostics import logger
from ._sql_columns import columns_of, judged_names
from .protocols import typed
from .secret_names import normal
from .secret_values import is_token_like, spellings

__all__ = ["SecretColumns"]

_GENERIC = frozenset(
    ("id", "pk", "uuid", "key", "value", "name", "data", "code", "hash", "type", "kind", "state")
)
_MAX_COLUMNS = 256


def _text(value: Any) -> str | None:
    """A cell or parameter as text: a string, bytes, or a typed value's text form (a UUID)."""
    shown = typed.text(value)
    if shown is None and isinstance(value, dict) and isinstance(value.get("value"), str):
        return value["value"]
    return shown


def _column_values(call: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(normalised column name, value as text) of an SQL call's rows and named parameters; a
    result column is named by the column its label selects (``invite_tokens_id``: ``id``)."""
    request = call.get("request")
    statement = request.get("statement") if isinstance(request, dict) else None
    columns = columns_of(statement) if isinstance(statement, str) else None
    response = call.get("response")
    if isinstance(response, dict):
        description = response.get("description")
        rows = response.get("rows")
        if isinstance(description, list) and isinstance(rows, list):
            labels = columns.labels if columns is not None else {}
            names = [
                normal(judged_names(str(column[0]), labels)[-1])
                if isinstance(column, list) and column
                else ""
                for column in description
            ]
            for row in rows:
                for name, cell in zip(names, typed.items(row) or (), strict=False):
                    if name and (shown := _text(cell)) is not None:
                        yield name, shown
    if not isinstance(request, dict) or columns is None:
        return
    met = columns.parameters
    if not met:
        return
    parameters = request.get("parameters")
    sets = (
        typed.items(parameters) or []
        if request.get("operation") in ("executemany", "fetchmany")
        else [parameters]
    )
    for each in sets:
        if isinstance(each, dict) and typed.TYPE not in each:
            pairs: Iterable[tuple[Any, Any]] = each.items()
        else:
            pairs = enumerate(typed.items(each) or ())
        for ref, value in pairs:
            if (shown := _text(value)) is not None:
                for name in met.get(ref, ()):
                    yield normal(name), shown


class SecretColumns:
    """The columns the cassettes written so far showed to hold secrets, in this process's memory."""

    def __init__(self) -> None:
        self._learned: set[str] = set()
        self._lock = threading.Lock()

    def values_in(self, doc: dict[str, Any], found: Iterable[str]) -> set[str]:
        """The token-like values ``doc``'s SQL calls hold in a column that held a secret of
        ``found`` (in ``doc``) or of an earlier document."""
        known = spellings(found)
        if not known and not self._learned:  # nothing a column could be learned from
            return set()
        calls = [
            c for c in doc.get("calls") or () if isinstance(c, dict) and c.get("protocol") == "sql"
        ]
        by_column: dict[str, set[str]] = {}
        for call in calls:
            for name, value in _column_values(call):
                if name not in _GENERIC:
                    by_column.setdefault(name, set()).add(value)
        with self._lock:
            learned = {
                name
                for name, values in by_column.items()
                if name in self._learned or not values.isdisjoint(known)
            }
            new = learned - self._learned
            if len(self._learned) < _MAX_COLUMNS:
                self._learned |= learned
        for name in sorted(new):
            logger.warning(
                "timetracer: column %s holds secrets (one was found there by value): its values "
                "are hidden from now on; name it in TIMETRACER_REDACT_FIELDS to hide them in "
                "every cassette",
                name,
            )
        return {value for name in learned for value in by_column[name] if is_token_like(value)}
