"""aiosqlite replay: statements answered from the cassette, never run on the database file.

In a replay session, what aiosqlite hands its thread (``Connection._execute``, see
:mod:`timetracer_otel._aiosqlite`) is answered in the caller's task: a new cursor is a
:class:`_ReplayCursor` (a sqlite3 cursor's API over recorded answers), a statement is
answered by one, and so are the ``execute_insert`` and ``execute_fetchall`` helpers. Rows
are made by the application's row factory, ``sqlite3.Row`` (``aiosqlite.Row``) included; a
recorded error is raised as sqlite3's class with its ``sqlite_errorcode`` and
``sqlite_errorname``. Reading past the rows the recording fetched of a result it did not read
to its end is refused rather than ended early.

The rest runs on the real connection: opening it, ``commit``, ``rollback``, ``close``,
functions and pragmas. A SQLite file is local, no dependency the request recorded, and outside
every replayed request (the application's schema set-up as it starts) statements run for real,
as SQLAlchemy's do on SQLite. Where the file cannot be opened (its folder does not exist where
the replay runs), an empty in-memory database stands in, with a warning. A cursor opened
before the replay session began cannot be answered: its statements are refused.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

import aiosqlite

from timetracer_otel import _aiosqlite, wrapper_layers
from timetracer_otel.config import process_mode
from timetracer_otel.protocols.sql import AIOSQLITE, live_view, sqlite_request

from ._sqlite import RecordedResult, session_for, standing_in
from .session import ReplayMismatchError, ReplaySession, current_session, round_trip

__all__ = ["install", "uninstall"]

LIBRARY = "aiosqlite"


class _ReplayCursor(RecordedResult):
    """What aiosqlite's cursor wraps in replay: sqlite3's cursor API over recorded answers, on
    the application's real connection (whose ``row_factory`` a new cursor takes, as sqlite3's does)."""

    def __init__(self, connection: sqlite3.Connection, session: ReplaySession) -> None:
        super().__init__(LIBRARY, AIOSQLITE, session, connection.row_factory)
        self.connection = connection

    def execute(self, sql: str, parameters: Any = ()) -> _ReplayCursor:
        self.answer("execute", sql, parameters)
        return self

    def executemany(self, sql: str, parameters: Any) -> _ReplayCursor:
        self.answer("executemany", sql, list(parameters))
        return self

    def executescript(self, sql_script: str) -> _ReplayCursor:
        self.answer("executescript", sql_script)
        return self


def _refused(session: ReplaySession, what: str) -> ReplayMismatchError:
    error = ReplayMismatchError(
        what,
        LIBRARY,
        session.path,
        "this cursor was opened before the replay began: it cannot be answered",
    )
    session.refuse(error)
    return error


def _answered(session: ReplaySession, connection: Any, fn: Any, rest: tuple, kwargs: dict) -> Any:
    """What ``fn`` (a statement, a helper, a new cursor) returns in replay, or ``fn`` itself when
    the real connection runs it."""
    operation = _aiosqlite.operation(fn)
    owner = getattr(fn, "__self__", None)
    if operation is None or operation in _aiosqlite.FETCHES:
        return fn
    if isinstance(owner, sqlite3.Cursor):
        raise _refused(session, live_view(sqlite_request(AIOSQLITE, operation, *rest)).label)
    real = owner if isinstance(owner, sqlite3.Connection) else connection._conn
    cursor = _ReplayCursor(real, session)
    if operation == "cursor":
        return cursor
    cursor.answer(operation, *rest, **kwargs)
    if operation == "execute_insert":
        return cursor.fetchone()
    if operation == "execute_fetchall":
        return cursor.fetchall()
    return cursor


async def _executing(
    wrapped: Callable[..., Any], connection: Any, args: tuple, kwargs: dict
) -> Any:
    fn = args[0] if args else None
    if isinstance(getattr(fn, "__self__", None), _ReplayCursor):
        await round_trip()
        return fn(*args[1:], **kwargs)  # type: ignore[misc]
    session = session_for(LIBRARY) if fn is not None else None
    if session is None:
        return await wrapped(*args, **kwargs)
    answered = _answered(session, connection, fn, args[1:], kwargs)
    if answered is fn:
        return await wrapped(*args, **kwargs)
    await round_trip()
    return answered


def _opening(connector: Callable[[], sqlite3.Connection]) -> Callable[[], sqlite3.Connection]:
    """``connector``, or a new in-memory database where the file cannot be opened (its folder
    gone on the machine that replays): replay answers the statements, set-up runs on it."""

    def opening() -> sqlite3.Connection:
        try:
            return connector()
        except sqlite3.OperationalError as exc:
            standing_in("of an aiosqlite connection", exc)
            return sqlite3.connect(":memory:")

    return opening


async def _connecting(
    wrapped: Callable[..., Any], connection: Any, args: tuple, kwargs: dict
) -> Any:
    if connection._connection is None and (
        current_session() is not None or process_mode() == "replay"
    ):
        connection._connector = _opening(connection._connector)
    return await wrapped(*args, **kwargs)


_SEAMS = (
    (aiosqlite.Connection, "_execute", _executing),
    (aiosqlite.Connection, "_connect", _connecting),
)


def install() -> None:
    wrapper_layers.install_all(_SEAMS, layer="replay")


def uninstall() -> None:
    wrapper_layers.uninstall_all(_SEAMS, layer="replay")
