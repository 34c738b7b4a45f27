"""What aiosqlite hands its thread: which function, as what operation, for capture and replay alike.

Everything aiosqlite does passes ``Connection._execute(fn, *args)``, ``fn`` a bound method of
the sqlite3 connection or cursor it holds, or of the aiosqlite connection itself for its two
helpers. The operation is named as the application called it.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import aiosqlite

__all__ = ["FETCHES", "HELPERS", "STATEMENTS", "operation"]

STATEMENTS = ("execute", "executemany", "executescript")
HELPERS = ("execute_insert", "execute_fetchall")
FETCHES = ("fetchone", "fetchmany", "fetchall")


def operation(fn: Any) -> str | None:
    """The operation ``fn`` performs: a statement, one of :data:`HELPERS`, a fetch of rows, or
    ``cursor`` (a connection's new cursor); None for the rest (commit, close, ...)."""
    owner, name = getattr(fn, "__self__", None), getattr(fn, "__name__", "")
    if isinstance(owner, sqlite3.Cursor):
        return name if name in STATEMENTS or name in FETCHES else None
    if isinstance(owner, sqlite3.Connection):
        return name if name in STATEMENTS or name == "cursor" else None
    if isinstance(owner, aiosqlite.Connection) and name.startswith("_"):
        return name[1:] if name[1:] in HELPERS else None
    return None
