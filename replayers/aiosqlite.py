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
as SQLAlchemy's do on SQLite. A cursor opened before the replay session began cannot be
answered: its statements are refused.
"""

from __future__ import annotations

import sqlite3
import threading
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import aiosqlite

from timetracer_otel import _aiosqlite, wrapper_layers
from timetracer_otel._recording import in_outer_call
from timetracer_otel.cassette.calls import CassetteCall
from timetracer_otel.protocols.sql import aiosqlite_request, live_view, recorded_response

from .http import recorded_error_class
from .session import ReplayMismatchError, ReplaySession, current_session, round_trip

__all__ = ["install", "uninstall"]

LIBRARY = "aiosqlite"


def _error(call: CassetteCall) -> Exception:
    """The recorded error as sqlite3's class (or a builtin), its attributes set again."""
    error = call.error or {}
    exc = recorded_error_class(error, "sqlite3", sqlite3.Error)(error.get("message", ""))
    for name, value in ((call.decoded_response() or {}).get("error_attributes") or {}).items():
        if name != "args":
            try:
                setattr(exc, name, value)
            except (AttributeError, TypeError):
                continue
    return exc


class _Described:
    """Real sqlite3 cursors carrying a recorded description, for ``sqlite3.Row``: it reads the
    column names from a cursor of sqlite3's own type, never from an attribute."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = None

    def cursor(self, names: list[str]) -> sqlite3.Cursor:
        columns = ", ".join('NULL AS "{}"'.format(name.replace('"', '""')) for name in names)
        with self._lock:
            if self._connection is None:
                self._connection = sqlite3.connect(":memory:", check_same_thread=False)
            return self._connection.execute(f"SELECT {columns} WHERE 0")


_described = _Described()


class _ReplayCursor:
    """A sqlite3 cursor's API over a recorded answer, on the application's real connection
    (whose ``row_factory`` a new cursor takes, as sqlite3's does)."""

    def __init__(self, connection: sqlite3.Connection, session: ReplaySession) -> None:
        self.connection = connection
        self.row_factory = connection.row_factory
        self.arraysize = 1
        self.description: tuple[tuple[Any, ...], ...] | None = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self._session = session
        self._rows: deque[tuple[Any, ...]] = deque()
        self._unread: str | None = (
            None  # the label of a result the recording did not read to its end
        )
        self._reader: Any = self

    def answer(self, operation: str, sql: str, parameters: Any = None) -> _ReplayCursor:
        request = aiosqlite_request(operation, sql, parameters)
        session = self._session
        view = live_view(session.scrubbed(request), session.redactor)
        recorded = session.answer(LIBRARY, view)
        if recorded.call.error:
            raise _error(recorded.call)
        response = recorded_response(recorded.call, recorded.view, view, session.path)
        description = response.get("description")
        self.description = (
            None
            if description is None
            else tuple(
                (str(column[0]), None, None, None, None, None, None) for column in description
            )
        )
        self.rowcount = response.get("rowcount", -1)
        self.lastrowid = response.get("lastrowid")
        self._rows = deque(tuple(row) for row in response.get("rows") or ())
        self._unread = None if response.get("complete", True) else recorded.view.label
        self._reader = (
            _described.cursor([column[0] for column in self.description])
            if self.row_factory is sqlite3.Row and self.description is not None
            else self
        )
        return self

    def execute(self, sql: str, parameters: Any = ()) -> _ReplayCursor:
        return self.answer("execute", sql, parameters)

    def executemany(self, sql: str, parameters: Any) -> _ReplayCursor:
        return self.answer("executemany", sql, list(parameters))

    def executescript(self, sql_script: str) -> _ReplayCursor:
        return self.answer("executescript", sql_script)

    def _take(self, count: int) -> list[Any]:
        if count > len(self._rows) and self._unread is not None:
            raise ReplayMismatchError(
                f"{self._unread} (more rows)",
                LIBRARY,
                self._session.path,
                "the recording stopped fetching this result here",
            )
        rows = [self._rows.popleft() for _ in range(min(count, len(self._rows)))]
        factory = self.row_factory
        return rows if factory is None else [factory(self._reader, row) for row in rows]

    def fetchone(self) -> Any:
        taken = self._take(1)
        return taken[0] if taken else None

    def fetchmany(self, size: int | None = None) -> list[Any]:
        return self._take(self.arraysize if size is None else size)

    def fetchall(self) -> list[Any]:
        return self._take(len(self._rows) + (self._unread is not None))

    def __iter__(self) -> Iterator[Any]:
        return iter(self.fetchone, None)

    def close(self) -> None:
        self._rows.clear()


def _session() -> ReplaySession | None:
    """The replayed request's session, or None: outside every replayed request SQLite runs (a local
    file), and so does what SQLAlchemy's ``sqlite+aiosqlite`` runs live (``in_outer_call``)."""
    session = None if in_outer_call() else current_session()
    return None if session is None or session.is_live(LIBRARY) else session


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
        raise _refused(session, live_view(aiosqlite_request(operation, *rest)).label)
    real = owner if isinstance(owner, sqlite3.Connection) else connection._conn
    cursor = _ReplayCursor(real, session)
    if operation == "cursor":
        return cursor
    answer = cursor.answer(operation, *rest, **kwargs)
    if operation == "execute_insert":
        return answer.fetchone()
    if operation == "execute_fetchall":
        return answer.fetchall()
    return answer


async def _executing(
    wrapped: Callable[..., Any], connection: Any, args: tuple, kwargs: dict
) -> Any:
    fn = args[0] if args else None
    if isinstance(getattr(fn, "__self__", None), _ReplayCursor):
        await round_trip()
        return fn(*args[1:], **kwargs)  # type: ignore[misc]
    session = _session() if fn is not None else None
    if session is None:
        return await wrapped(*args, **kwargs)
    answered = _answered(session, connection, fn, args[1:], kwargs)
    if answered is fn:
        return await wrapped(*args, **kwargs)
    await round_trip()
    return answered


_SEAMS = ((aiosqlite.Connection, "_execute", _executing),)


def install() -> None:
    wrapper_layers.install_all(_SEAMS, layer="replay")


def uninstall() -> None:
    wrapper_layers.uninstall_all(_SEAMS, layer="replay")
