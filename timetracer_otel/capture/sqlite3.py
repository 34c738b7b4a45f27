"""sqlite3 capture: each statement an application runs on sqlite3 directly, as a ``sql`` call.

Connections are made with timetracer's classes (:mod:`timetracer_otel._sqlite3`), so a
cursor's ``execute``/``executemany``/``executescript`` (and the connection's shortcuts) make a
call under the dialect ``sqlite+pysqlite``, answered with the cursor's description,
``rowcount`` and ``lastrowid``, and the rows as the application fetches them
(``fetchone``, ``fetchmany``, ``fetchall``, iteration), kept before its row factory makes them
its own (:mod:`._sqlite`). What SQLAlchemy runs on sqlite3, and what aiosqlite runs in its
thread, are their calls: this capture stands aside (``in_outer_call``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

from timetracer_otel import _sqlite3, wrapper_layers
from timetracer_otel._diagnostics import guarded
from timetracer_otel._recording import (
    ProtocolCall,
    current_recording,
    in_outer_call,
)
from timetracer_otel.protocols.sql import SQLITE3, sqlite_request

from ._dbapi import failed
from ._sqlite import answer_before_rows, fetched, last_calls, reached_end, rows_read

__all__ = ["install", "uninstall"]

LIBRARY = "sqlite3"


def _statement(operation: str) -> Callable[..., Any]:
    def capture(wrapped: Callable[..., Any], cursor: Any, args: tuple, kwargs: dict) -> Any:
        recording = None if in_outer_call() else current_recording()
        if recording is None:
            last_calls.pop(cursor, None)  # the rows it reads now are no recorded call's
            return wrapped(*args, **kwargs)
        call = None
        with guarded("sqlite3.request"):
            args = _sqlite3.statement_arguments(operation, args)
            call = ProtocolCall("sql", LIBRARY, sqlite_request(SQLITE3, operation, *args, **kwargs))
            recording.add_call(call)
        try:
            result = wrapped(*args, **kwargs)
        except Exception as exc:
            failed(call, exc, sqlite3)
            raise
        if call is not None:
            with guarded("sqlite3.response"):
                call.response = answer_before_rows(cursor)
                last_calls[cursor] = call
        return result

    return capture


def _fetch(operation: str) -> Callable[..., Any]:
    def capture(wrapped: Callable[..., Any], cursor: Any, args: tuple, kwargs: dict) -> Any:
        # aiosqlite's fetch, in its thread: aiosqlite's capture keeps the rows
        call = None if in_outer_call() else last_calls.get(cursor)
        if call is None:
            return wrapped(*args, **kwargs)
        kept: list[Any] = []
        try:
            result = fetched(lambda: wrapped(*args, **kwargs), cursor, kept)
        except BaseException:
            rows_read(call, kept, end=False)
            raise
        size = args[0] if args and args[0] is not None else cursor.arraysize
        rows_read(call, kept, reached_end(operation, size, result))
        return result

    return capture


_SEAMS = (
    (sqlite3, "connect", _sqlite3.connecting),
    (sqlite3.dbapi2, "connect", _sqlite3.connecting),
    *((_sqlite3.Cursor, name, _statement(name)) for name in _sqlite3.STATEMENTS),
    *((_sqlite3.Cursor, name, _fetch(name)) for name in _sqlite3.FETCHES),
)


def install() -> None:
    wrapper_layers.install_all(_SEAMS)


def uninstall() -> None:
    wrapper_layers.uninstall_all(_SEAMS)
