"""What the sqlite3 and aiosqlite captures share: a statement's answer, and its rows as they are read.

sqlite3 steps through a result only as the application fetches it, so a statement's call is
made with its description, ``rowcount`` and ``lastrowid``, and the rows are added as they are
fetched, kept where sqlite3 hands each to the cursor's row factory (plain tuples, whatever the
factory makes of them); ``complete`` once a fetch reached the end.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any
from weakref import WeakKeyDictionary

from timetracer_otel._diagnostics import guarded
from timetracer_otel._recording import ProtocolCall
from timetracer_otel.protocols.sql import snapshot

__all__ = ["answer_before_rows", "fetched", "last_calls", "reached_end", "rows_read"]

# each sqlite3 cursor's last recorded call, whose response the rows fetched from it go to
last_calls: WeakKeyDictionary[sqlite3.Cursor, ProtocolCall] = WeakKeyDictionary()


def answer_before_rows(cursor: sqlite3.Cursor) -> dict[str, Any]:
    """A statement's answer before its rows are read."""
    description = cursor.description
    return {
        "description": None if description is None else [[c[0], None] for c in description],
        "rowcount": cursor.rowcount,
        "lastrowid": cursor.lastrowid,
        "rows": [],
        "complete": description is None,
    }


def fetched(fetch: Callable[[], Any], cursor: sqlite3.Cursor, kept: list[Any]) -> Any:
    """``fetch()`` on ``cursor``, each row it reads added to ``kept`` as sqlite3 read it, before
    the cursor's row factory made it the application's."""
    factory = cursor.row_factory

    def keep(reader: Any, row: tuple[Any, ...]) -> Any:
        kept.append(list(snapshot(row)))
        return row if factory is None else factory(reader, row)

    cursor.row_factory = keep
    try:
        return fetch()
    finally:
        cursor.row_factory = factory


def reached_end(operation: str, size: int, result: Any) -> bool:
    """Whether a fetch (``fetchone``, ``fetchmany`` of ``size``, ``fetchall``) that returned
    ``result`` read its result to the end."""
    if operation == "fetchone":
        return result is None
    if operation == "fetchmany":
        return len(result) < size
    return True


def rows_read(call: ProtocolCall, kept: list[Any], end: bool) -> None:
    """Add the rows a fetch read to ``call``'s answer; ``end``: it read them to their end."""
    with guarded("sqlite.rows"):
        response = call.response
        if response is not None:
            response["rows"].extend(kept)
            response["complete"] = response["complete"] or end
