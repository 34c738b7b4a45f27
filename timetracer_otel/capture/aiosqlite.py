"""aiosqlite capture: each statement an application runs on aiosqlite directly, as a ``sql`` call.

aiosqlite runs sqlite3 in a thread of its own; everything it does there passes one seam in
the caller's task, ``Connection._execute(fn, *args)``, where the request's context is still
at hand. A call is made where ``fn`` runs a statement (a connection's or a cursor's
``execute``/``executemany``/``executescript``, and the ``execute_insert`` and
``execute_fetchall`` helpers); its response is the cursor's description, ``rowcount`` and
``lastrowid``, and the rows as the application fetches them (``fetchone``, ``fetchmany``,
``fetchall``, ``async for``): sqlite3 steps through a result only as it is read, so the rows
are kept where sqlite3 hands each to the cursor's row factory, as plain tuples, whatever
that factory makes of them. Tortoise ORM's and ``databases``' SQLite backends run on
aiosqlite, so their statements are recorded here; SQLAlchemy's ``sqlite+aiosqlite`` are
SQLAlchemy's calls, and this capture stands aside (``in_outer_call``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

import aiosqlite

from timetracer_otel import _aiosqlite, _sqlite3, wrapper_layers
from timetracer_otel._diagnostics import guarded
from timetracer_otel._recording import (
    ProtocolCall,
    current_recording,
    in_outer_call,
    outer_call,
)
from timetracer_otel.protocols.sql import AIOSQLITE, sqlite_request

from ._dbapi import failed
from ._sqlite import answer_before_rows, fetched, last_calls, reached_end, rows_read

__all__ = ["install", "uninstall"]

LIBRARY = "aiosqlite"


def _helper(
    name: str, connection: sqlite3.Connection, sql: str, parameters: Any
) -> tuple[Any, dict]:
    """``execute_insert``/``execute_fetchall`` as aiosqlite runs them (in its thread), the rows kept."""
    cursor = connection.execute(sql, parameters)
    response = answer_before_rows(cursor)
    response["complete"] = True
    if name == "execute_insert":
        cursor.execute("SELECT last_insert_rowid()")
        response["description"] = [[c[0], None] for c in cursor.description]
        return fetched(cursor.fetchone, cursor, response["rows"]), response
    return fetched(cursor.fetchall, cursor, response["rows"]), response


def _aiosqlites(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn`` run in aiosqlite's thread as aiosqlite's call: the sqlite3 capture stands aside
    (that thread holds no request's context, so it would record into the process's cassette)."""
    with outer_call():
        return fn(*args, **kwargs)


async def _executing(
    wrapped: Callable[..., Any], connection: Any, args: tuple, kwargs: dict
) -> Any:
    operation = _aiosqlite.operation(args[0]) if args else None
    if operation is None or operation == "cursor":
        return await wrapped(*args, **kwargs)
    fn, rest = args[0], args[1:]
    owner = fn.__self__
    recording = None if in_outer_call() else current_recording()
    if recording is None:
        if operation in _aiosqlite.STATEMENTS and isinstance(owner, sqlite3.Cursor):
            last_calls.pop(owner, None)  # the rows it reads now are no recorded call's
        return await wrapped(_aiosqlites, *args, **kwargs)
    if operation in _aiosqlite.FETCHES:
        call = last_calls.get(owner)
        if call is None:
            return await wrapped(_aiosqlites, *args, **kwargs)
        kept: list[Any] = []
        try:
            result = await wrapped(_aiosqlites, fetched, lambda: fn(*rest, **kwargs), owner, kept)
        except BaseException:
            rows_read(call, kept, end=False)
            raise
        size = rest[0] if rest else owner.arraysize
        rows_read(call, kept, reached_end(operation, size, result))
        return result
    call = None
    with guarded("aiosqlite.request"):
        rest = _sqlite3.statement_arguments(operation, rest)
        call = ProtocolCall("sql", LIBRARY, sqlite_request(AIOSQLITE, operation, *rest))
        recording.add_call(call)
    try:
        if operation in _aiosqlite.HELPERS:
            result, response = await wrapped(
                _aiosqlites, _helper, operation, owner._conn, *rest, **kwargs
            )
        else:
            result = await wrapped(_aiosqlites, fn, *rest, **kwargs)
            response = None
    except Exception as exc:
        failed(call, exc, sqlite3)
        raise
    if call is not None:
        with guarded("aiosqlite.response"):
            if response is None:
                cursor = result if isinstance(result, sqlite3.Cursor) else owner
                response = answer_before_rows(cursor)
                last_calls[cursor] = call
            call.response = response
    return result


_SEAMS = ((aiosqlite.Connection, "_execute", _executing),)


def install() -> None:
    wrapper_layers.install_all(_SEAMS)


def uninstall() -> None:
    wrapper_layers.uninstall_all(_SEAMS)
