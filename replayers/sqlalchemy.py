"""SQLAlchemy replay at the DBAPI level: Core, the ORM and ``session.query(...)`` run unchanged.

In a replay session, ``Engine.raw_connection`` never touches the engine's pool: it
answers the recorded ``connect`` call and hands out a replay DBAPI connection from a
pool of its own (no connect-time events, so no driver set-up and no probe queries).
Its cursors answer ``execute``/``executemany`` and the fetches from the cassette.

Connect-time probes: the dialect learns the server version, default schema, isolation
level, ... in ``initialize()`` on its engine's first connection, usually before any
request is recorded. Instead of replaying those probes, each recorded ``connect`` call
holds the dialect's state after ``initialize()``; a dialect that never connected in this
process gets the attributes it lacks from it. Its own settings (from
``create_engine`` arguments) are left as they are.

A SQLAlchemy ``Connection`` checked out before the session began is not used for
statements either: its executions get a replay cursor too.

Outside every replayed request, in a process started with ``TIMETRACER_MODE=replay``,
connections and statements are refused (``replay_session_for``), except on SQLite: a
local file or an in-memory database is no dependency of a request, and the
application's own set-up there (``create_all()`` at import or start-up) runs for real.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import sqlalchemy
from sqlalchemy.engine import Engine
from sqlalchemy.engine.default import DefaultDialect, DefaultExecutionContext
from sqlalchemy.engine.interfaces import Dialect
from sqlalchemy.pool import NullPool, Pool

try:  # SQLAlchemy 2.1 calls it await_; 2.0 only has await_only
    from sqlalchemy.util import await_
except ImportError:  # pragma: no cover - SQLAlchemy 2.0
    from sqlalchemy.util import await_only as await_

from timetracer_otel import _orm_order, wrapper_layers
from timetracer_otel._recording import outer_call
from timetracer_otel.cassette.calls import CassetteCall
from timetracer_otel.protocols.sql import (
    connect_request,
    live_view,
    recorded_response,
    statement_request,
)

from .http import recorded_error_class, with_recorded_attributes
from .session import (
    ReplayMismatchError,
    ReplaySession,
    current_session,
    replay_session_for,
    round_trip,
)

__all__ = ["install", "uninstall"]

LIBRARY = "sqlalchemy"


def _session(dialect: Dialect, describe: Callable[[], str]) -> ReplaySession | None:
    """The session answering a call on ``dialect``, or None to let it run for real.

    Outside every replayed request, SQLite runs: a local file is no dependency a request
    recorded, and schema set-up at import (the spec example's ``create_all()``) must work
    in a replaying process too. Any other database is refused there (``replay_session_for``).
    """
    if dialect.name == "sqlite" and current_session() is None:
        return None
    return replay_session_for(LIBRARY, describe)


def _exception_class(
    error: dict[str, Any], response: dict[str, Any] | None, dialect: Dialect
) -> type[BaseException]:
    """The recorded class: a builtin exception, the driver's error, or one of a drop-in driver
    the app passes SQLAlchemy (sqlean's errors, which it lets through unwrapped as it did
    live); else its PEP 249 base."""
    dbapi = dialect.loaded_dbapi
    base = getattr(dbapi, str((response or {}).get("dbapi_error") or "Error"), None)
    if not (isinstance(base, type) and issubclass(base, dbapi.Error)):
        base = dbapi.Error  # a name that is none of its error classes (``connect``)
    return recorded_error_class(error, None, base)


def _raise_recorded(call: CassetteCall, dialect: Dialect) -> None:
    """Raise the call's recorded error, if it has one, as the driver's exception class."""
    error = call.error
    if not error:
        return
    response = call.decoded_response()
    cls = _exception_class(error, response, dialect)
    try:
        exc = cls(error.get("message", ""))
    except TypeError:  # a constructor wanting more than a message
        cls = dialect.loaded_dbapi.Error
        exc = cls(error.get("message", ""))
    with_recorded_attributes(exc, (response or {}).get("error_attributes") or {})
    cause = _recorded_cause((response or {}).get("cause"))
    if cause is None:
        raise exc
    raise exc from cause


def _recorded_cause(recorded: Any) -> Exception | None:
    """The driver's error the recorded one was raised from, as its own class: only a class of a
    module the process has imported (the driver's), never one a cassette names into being."""
    if not isinstance(recorded, dict):
        return None
    module, _, name = str(recorded.get("type", "")).rpartition(".")
    cls = getattr(sys.modules.get(module), name, None)
    if not (isinstance(cls, type) and issubclass(cls, Exception)):
        return None
    try:
        cause = cls(str(recorded.get("message", "")))
    except Exception:  # a constructor wanting more than a message
        return None
    attributes = recorded.get("attributes")
    for attribute, value in (attributes if isinstance(attributes, dict) else {}).items():
        if isinstance(attribute, str) and attribute != "args":
            with contextlib.suppress(AttributeError, TypeError):
                setattr(cause, attribute, value)
    return cause


# drivers whose cursor's execute() and executemany() return the affected row count
_ROWCOUNT_DRIVERS = frozenset({"pymysql", "mysqldb", "aiomysql", "asyncmy"})


class _ReplayCursor:
    """A DBAPI cursor whose executions are answered by the current replay session."""

    def __init__(self, connection: _ReplayConnection) -> None:
        self.connection = connection
        self.arraysize = 1
        self._reset()

    def _reset(self) -> None:
        self.description: list[tuple[Any, ...]] | None = None
        self.rowcount = -1
        self._rowcount_after_close = -1
        self.lastrowid: Any = None
        self._rows: deque[tuple[Any, ...]] = deque()
        # a streamed result the recording did not fetch to its end: (call label, cassette path)
        self._incomplete: tuple[str, str] | None = None

    def execute(
        self, statement: Any, parameters: Any = None, *args: Any, **kwargs: Any
    ) -> _ReplayCursor | int:
        self._answer("execute", statement, parameters)
        return self._returned()

    def executemany(
        self, statement: Any, parameters: Any, *args: Any, **kwargs: Any
    ) -> _ReplayCursor | int:
        self._answer(
            "executemany",
            statement,
            parameters if isinstance(parameters, (list, tuple)) else list(parameters),
        )
        return self._returned()

    def _returned(self) -> _ReplayCursor | int:
        """What the driver's ``execute`` returns: MySQL's drivers the row count (SQLAlchemy's
        MySQL dialects take an ``executemany``'s from it), others the cursor, as sqlite3's."""
        return self.rowcount if self.connection.dialect.driver in _ROWCOUNT_DRIVERS else self

    def _answer(self, operation: str, statement: Any, parameters: Any) -> None:
        self._reset()
        dialect = self.connection.dialect
        request = statement_request(dialect, operation, statement, parameters)
        session = _session(dialect, lambda: live_view(request).label)
        view = live_view(request, session.redactor if session is not None else None)
        if session is None:
            raise ReplayMismatchError(
                view.label,
                LIBRARY,
                "(none)",
                "a replay connection was used outside its replay session",
            )
        if session.values:
            view = live_view(session.scrubbed(request), session.redactor)
        recorded = session.answer(LIBRARY, view)
        _raise_recorded(recorded.call, dialect)
        response = recorded_response(recorded.call, recorded.view, view, session.path)
        description = response.get("description")
        self.description = (
            None if description is None else [tuple(column) for column in description]
        )
        self.rowcount = response.get("rowcount", -1)
        self._rowcount_after_close = response.get("rowcount_after_close", self.rowcount)
        self.lastrowid = response.get("lastrowid")
        self._rows = deque(tuple(row) for row in response.get("rows") or ())
        if response.get("streamed") and not response.get("complete"):
            self._incomplete = (recorded.view.label, session.path)
        # AsyncConnection.execute() refuses a statement that never awaited (AwaitRequired)
        if dialect.is_async:
            await_(round_trip())

    def _more(self) -> None:
        """Past the recorded rows of a result that had more: refuse rather than end it early."""
        if self._incomplete is not None:
            label, path = self._incomplete
            raise ReplayMismatchError(
                f"{label} (more rows)",
                LIBRARY,
                path,
                "the recording stopped fetching this streamed result here",
            )

    def fetchone(self) -> tuple[Any, ...] | None:
        if not self._rows:
            self._more()
            return None
        return self._rows.popleft()

    def fetchmany(self, size: int | None = None) -> list[tuple[Any, ...]]:
        size = self.arraysize if size is None else size
        if size > len(self._rows):
            self._more()
        return [self._rows.popleft() for _ in range(min(size, len(self._rows)))]

    def fetchall(self) -> list[tuple[Any, ...]]:
        self._more()
        rows = list(self._rows)
        self._rows.clear()
        return rows

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return iter(self.fetchone, None)

    def setinputsizes(self, *args: Any, **kwargs: Any) -> None:
        pass

    def setoutputsize(self, *args: Any, **kwargs: Any) -> None:
        pass

    def nextset(self) -> None:
        return None

    def close(self) -> None:
        self._rows.clear()
        self.rowcount = self._rowcount_after_close

    async def _async_soft_close(self) -> None:
        """What ``AsyncConnection.execute()`` awaits on an async driver's cursor; the rows stay readable."""


class _ReplayConnection:
    """A DBAPI connection that reaches nothing: transactions are no-ops, cursors replay.

    The few attributes dialects read on their connection besides the DBAPI methods are
    here too: psycopg2 logs ``notices`` after each statement; on an error, psycopg's
    ``is_disconnect`` reads ``closed``/``broken``, asyncpg's ``_connection.is_closed()``.
    """

    closed = False
    broken = False
    autocommit = False

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self.notices: list[str] = []
        self._connection = self

    def is_closed(self) -> bool:
        return False

    def cursor(self, *args: Any, **kwargs: Any) -> _ReplayCursor:
        return _ReplayCursor(self)

    def commit(self) -> None:
        pass

    def rollback(self) -> None:
        pass

    def close(self) -> None:
        pass

    def set_read_only(self, value: bool) -> None:
        """``postgresql_readonly`` on an async psycopg connection: nothing to set."""

    def set_deferrable(self, value: bool) -> None:
        """``postgresql_deferrable`` on an async psycopg connection: nothing to set."""


def _isolation_level(wrapped: Any, dialect: Dialect, args: tuple, kwargs: dict) -> Any:
    """An isolation level set on a replay connection (``execution_options(isolation_level=...)``,
    a test suite's ``AUTOCOMMIT`` to create its database) or reset when it goes back to its pool:
    there is no server to set it on, and what each dialect does to set it (a driver call, a
    ``PRAGMA`` or ``SET SESSION`` statement) was no call of the recording."""
    if isinstance(args[0] if args else None, _ReplayConnection):
        return None
    return wrapped(*args, **kwargs)


def _replays(pooled: Any) -> bool:
    """Whether a pooled connection (a ``Connection``'s or an execution context's) is a replay one."""
    return isinstance(getattr(pooled, "dbapi_connection", None), _ReplayConnection)


def _actual_isolation_level(
    wrapped: Any, connection: sqlalchemy.Connection, args: tuple, kwargs: dict
) -> Any:
    """``Connection.get_isolation_level()`` on a replay connection (Alembic's ``autocommit_block``
    reads it before switching to ``AUTOCOMMIT``): the level the connection or its engine was
    given, as the server reports it (``AUTOCOMMIT`` is none: the server's default then), else
    the server's default, which the recorded ``connect`` call set. Asking the server (``SHOW
    TRANSACTION ISOLATION LEVEL``, a ``PRAGMA``) was no call of the recording, and the replay
    refused it."""
    if not _replays(connection._dbapi_connection):
        return wrapped(*args, **kwargs)
    dialect = connection.dialect
    given = connection.get_execution_options().get("isolation_level") or getattr(
        dialect, "isolation_level", None
    )
    return given if given not in (None, "AUTOCOMMIT") else dialect.default_isolation_level


_pools: weakref.WeakKeyDictionary[Pool, Pool] = weakref.WeakKeyDictionary()
_pools_lock = threading.Lock()


def _replay_pool(engine: Engine) -> Pool:
    """The engine's replay pool: replay connections only, and none of the engine pool's events."""
    with _pools_lock:
        pool = _pools.get(engine.pool)
        if pool is None:
            dialect = engine.dialect
            # SQLAlchemy's DBAPIConnection protocol also asks for __getattr__, which no
            # DBAPI connection class defines.
            pool = _pools[engine.pool] = NullPool(lambda: _ReplayConnection(dialect))  # type: ignore[arg-type]
        return pool


def _initialise(dialect: Dialect, state: dict[str, Any]) -> None:
    """Give a dialect that never connected what its ``initialize()`` learnt when the cassette was recorded."""
    known = vars(dialect)
    learnt = {name: value for name, value in state.items() if name not in known}
    if learnt.get("is_mariadb") and hasattr(dialect, "_set_mariadb"):
        # A mysql:// URL that connected to MariaDB also switched types and quoting, which are
        # not plain values: its UUID type (loaded ids are UUIDs, not text) above all.
        dialect._set_mariadb(True, tuple(learnt.get("server_version_info") or ()))
    for name, value in learnt.items():
        setattr(dialect, name, value)


def _raw_connection(wrapped: Any, instance: Engine, args: tuple, kwargs: dict) -> Any:
    view = live_view(connect_request(instance))
    session = _session(instance.dialect, lambda: view.label)
    if session is None:
        with (
            outer_call()
        ):  # SQLAlchemy live: so is the driver it connects with (psycopg's replay stands aside)
            return wrapped(*args, **kwargs)
    recorded = session.answer(LIBRARY, view)
    _raise_recorded(recorded.call, instance.dialect)
    _initialise(
        instance.dialect,
        (recorded.call.decoded_response() or {}).get("dialect_state") or {},
    )
    return _replay_pool(instance).connect()


def _create_cursor(
    wrapped: Any, instance: DefaultExecutionContext, args: tuple, kwargs: dict
) -> Any:
    if _replays(instance._dbapi_connection):
        return wrapped(*args, **kwargs)
    engine = instance.root_connection.engine
    session = _session(
        instance.dialect,
        lambda: f"a statement on {engine.url.render_as_string(hide_password=True)}",
    )
    if session is None:
        return wrapped(*args, **kwargs)
    # A connection checked out before the session began: its statements are answered, never sent.
    return _ReplayCursor(_ReplayConnection(instance.dialect))


_SEAMS = (
    (Engine, "raw_connection", _raw_connection),
    (DefaultExecutionContext, "create_cursor", _create_cursor),
    (DefaultDialect, "_assert_and_set_isolation_level", _isolation_level),
    (DefaultDialect, "reset_isolation_level", _isolation_level),
    (sqlalchemy.Connection, "get_isolation_level", _actual_isolation_level),
)


def install() -> None:
    missing = [f"{owner.__name__}.{name}" for owner, name, _ in _SEAMS if not hasattr(owner, name)]
    if missing:  # SQLAlchemy 1.4: say so, rather than fail on the first seam it lacks
        raise RuntimeError(
            f"timetracer replays SQLAlchemy 2.0 or later, and SQLAlchemy {sqlalchemy.__version__}"
            f" is installed (it has no {', '.join(missing)}): install sqlalchemy>=2.0 to replay"
            " its calls"
        )
    _orm_order.install("replay")
    wrapper_layers.install_all(_SEAMS, layer="replay")


def uninstall() -> None:
    _orm_order.uninstall("replay")
    wrapper_layers.uninstall_all(_SEAMS, layer="replay")
