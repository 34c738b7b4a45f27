"""sqlite3 replay: statements answered from the cassette, never run on the database file.

Connections are made with timetracer's classes (:mod:`timetracer_otel._sqlite3`). In a replay
session, a cursor's ``execute``/``executemany``/``executescript`` (the connection's shortcuts
too) is answered from the cassette: the cursor then reads the recorded answer
(:class:`~replayers._sqlite.RecordedResult`: rows through the application's row factory,
``sqlite3.Row`` included, description, ``rowcount``, ``lastrowid``, a recorded error raised as
sqlite3's class). Opening the connection, ``commit``, ``rollback`` and ``close`` run on the real
file, and outside every replayed request statements run for real: a SQLite file is local, and
the application's set-up as it starts must work in a replaying process, as SQLAlchemy's does on
SQLite. Where the file cannot be opened (its folder missing where the replay runs), an empty
in-memory database stands in, with a warning.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

from timetracer_otel import _sqlite3, wrapper_layers
from timetracer_otel.config import process_mode
from timetracer_otel.protocols.sql import SQLITE3

from ._sqlite import RecordedResult, session_for, standing_in
from .session import current_session

__all__ = ["install", "uninstall"]

LIBRARY = "sqlite3"


def _statement(operation: str) -> Callable[..., Any]:
    def replay(wrapped: Callable[..., Any], cursor: Any, args: tuple, kwargs: dict) -> Any:
        session = session_for(LIBRARY)
        if session is None:
            return wrapped(*args, **kwargs)
        args = _sqlite3.statement_arguments(operation, args)
        answer = RecordedResult(LIBRARY, SQLITE3, session, cursor.row_factory)
        cursor.answer = None
        cursor.answer = answer.answer(operation, *args, **kwargs)
        return cursor

    return replay


def _fetch(operation: str) -> Callable[..., Any]:
    def replay(wrapped: Callable[..., Any], cursor: Any, args: tuple, kwargs: dict) -> Any:
        answer = cursor.answer
        if answer is None:
            return wrapped(*args, **kwargs)
        answer.row_factory = cursor.row_factory  # the application may set it after the statement
        answer.arraysize = cursor.arraysize
        return getattr(answer, operation)(*args, **kwargs)

    return replay


def _connecting(wrapped: Callable[..., Any], instance: Any, args: tuple, kwargs: dict) -> Any:
    """sqlite3's ``connect`` with timetracer's classes; in a replay, an in-memory database where
    the file cannot be opened."""
    try:
        return _sqlite3.connecting(wrapped, instance, args, kwargs)
    except sqlite3.OperationalError as exc:
        if current_session() is None and process_mode() != "replay":
            raise
        standing_in(str(args[0] if args else kwargs.get("database")), exc)
        if args:
            args = (":memory:", *args[1:])
        else:
            kwargs = {**kwargs, "database": ":memory:"}
        return _sqlite3.connecting(wrapped, instance, args, kwargs)


_SEAMS = (
    (sqlite3, "connect", _connecting),
    (sqlite3.dbapi2, "connect", _connecting),
    *((_sqlite3.Cursor, name, _statement(name)) for name in _sqlite3.STATEMENTS),
    *((_sqlite3.Cursor, name, _fetch(name)) for name in _sqlite3.FETCHES),
)


def install() -> None:
    wrapper_layers.install_all(_SEAMS, layer="replay")


def uninstall() -> None:
    wrapper_layers.uninstall_all(_SEAMS, layer="replay")
