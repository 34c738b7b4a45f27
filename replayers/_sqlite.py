"""A sqlite3 cursor's reading over a recorded answer: what the sqlite3 and aiosqlite replayers give.

Rows come through the application's row factory, ``sqlite3.Row`` included (it reads the
column names from a cursor of sqlite3's own type: one carrying the recorded description is
made on a private in-memory database); a recorded error is raised as sqlite3's class with its
``sqlite_errorcode`` and ``sqlite_errorname``; reading past the rows a recording did not read
to their end is refused rather than ended early.
"""

from __future__ import annotations

import sqlite3
import threading
from collections import deque
from collections.abc import Iterator
from typing import Any

from timetracer_otel._diagnostics import logger
from timetracer_otel._recording import in_outer_call
from timetracer_otel.cassette.calls import CassetteCall
from timetracer_otel.protocols.sql import live_view, recorded_response, sqlite_request

from ._fetches import Fetches
from .http import recorded_error_class
from .session import ReplayMismatchError, ReplaySession, current_session

__all__ = ["RecordedResult", "session_for", "standing_in"]


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


_stood_in: set[str] = set()
_stood_in_lock = threading.Lock()


def session_for(library: str) -> ReplaySession | None:
    """The replayed request's session answering ``library``, or None: outside every replayed
    request SQLite runs (a local file, the application's set-up), and so does what a library
    above runs on it live (``in_outer_call``: SQLAlchemy, aiosqlite over sqlite3)."""
    session = None if in_outer_call() else current_session()
    return None if session is None or session.is_live(library) else session


def standing_in(database: str, exc: sqlite3.OperationalError) -> None:
    """Say, once for each ``database``, that an in-memory database stands in for one replay cannot
    open (its folder missing where the replay runs): replay answers the statements, and the
    application's set-up outside its requests runs on it."""
    with _stood_in_lock:
        if database in _stood_in:
            return
        _stood_in.add(database)
    logger.warning(
        "timetracer: replay cannot open the SQLite database %s (%s): an empty in-memory database"
        " stands in for it",
        database,
        exc,
    )


class _Described:
    """Real sqlite3 cursors carrying a recorded description, for ``sqlite3.Row``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = None

    def cursor(self, names: list[str]) -> sqlite3.Cursor:
        columns = ", ".join('NULL AS "{}"'.format(name.replace('"', '""')) for name in names)
        with self._lock:
            if self._connection is None:
                # the class itself, not connect(): a connection of the plugin's would be replayed
                self._connection = sqlite3.Connection(":memory:", check_same_thread=False)
            return self._connection.execute(f"SELECT {columns} WHERE 0")


_described = _Described()


class RecordedResult(Fetches):
    """A statement answered from ``session`` for ``library``, read as a sqlite3 cursor reads
    (``row_factory`` is the application's, read when rows are taken)."""

    def __init__(
        self, library: str, dialect: str, session: ReplaySession, row_factory: Any
    ) -> None:
        self.library, self.dialect = library, dialect
        self.row_factory = row_factory
        self.arraysize = 1
        self.description: tuple[tuple[Any, ...], ...] | None = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self._session = session
        self._rows: deque[tuple[Any, ...]] = deque()
        self._unread: str | None = (
            None  # the label of a result the recording did not read to its end
        )
        self._row_reader: sqlite3.Cursor | None = None

    def answer(self, operation: str, sql: str, parameters: Any = None) -> RecordedResult:
        """Answer the statement from the session (``ReplayMismatchError`` where nothing recorded does)."""
        request = sqlite_request(self.dialect, operation, sql, parameters)
        session = self._session
        view = live_view(session.scrubbed(request), session.redactor)
        recorded = session.answer(self.library, view)
        if recorded.call.error:
            raise _error(recorded.call)
        response = recorded_response(recorded.call, recorded.view, view, session.path)
        description = response.get("description")
        self.description = (
            None
            if description is None
            else tuple((str(c[0]), None, None, None, None, None, None) for c in description)
        )
        self.rowcount = response.get("rowcount", -1)
        self.lastrowid = response.get("lastrowid")
        self._rows = deque(tuple(row) for row in response.get("rows") or ())
        self._unread = None if response.get("complete", True) else recorded.view.label
        self._row_reader = None
        return self

    def _reader(self, factory: Any) -> Any:
        """What ``factory`` is given as the cursor: for ``sqlite3.Row``, one of sqlite3's own."""
        if factory is not sqlite3.Row or self.description is None:
            return self
        if self._row_reader is None:
            self._row_reader = _described.cursor([column[0] for column in self.description])
        return self._row_reader

    def _take(self, count: int) -> list[Any]:
        if count > len(self._rows) and self._unread is not None:
            raise ReplayMismatchError(
                f"{self._unread} (more rows)",
                self.library,
                self._session.path,
                "the recording stopped fetching this result here",
            )
        rows = [self._rows.popleft() for _ in range(min(count, len(self._rows)))]
        factory = self.row_factory
        if factory is None:
            return rows
        reader = self._reader(factory)
        return [factory(reader, row) for row in rows]

    def _left(self) -> int:
        return len(self._rows) + (
            self._unread is not None
        )  # past the end, if the recording stopped

    def __iter__(self) -> Iterator[Any]:
        return iter(self.fetchone, None)

    def close(self) -> None:
        self._rows.clear()
