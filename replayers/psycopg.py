"""psycopg replay: connections and pools that open nothing, statements answered from the cassette.

In a replay session, ``psycopg.connect()`` and ``Connection.connect()`` (what
``psycopg_pool.ConnectionPool`` calls in its own threads, answered by the process session)
give a :class:`_ReplayConnection` without a socket; ``AsyncConnection.connect()`` (also
``AsyncConnectionPool``'s) a :class:`_ReplayAsyncConnection` answering the same way, awaited. Its cursors answer each ``execute`` and
``executemany`` from the session, build the rows with the application's row factory
(``dict_row``, ``namedtuple_row``, ... read the recorded column names as from a real result),
and raise a recorded error as psycopg's own class (``psycopg.errors.UniqueViolation``) with
its message and diagnostics (``sqlstate``, ``constraint_name``, ...). Transactions
(``conn.transaction()``, ``commit()``, ``rollback()``) send nothing: what each statement in
them answered is in the cassette.

What is refused with :class:`ReplayMismatchError` at the call site, since the cassette holds no
answer for it: ``COPY`` (``cursor.copy()``), server-side cursors (``conn.cursor(name)``),
``cursor.stream()`` and pipelines. A connection something still opens in a replay session (a
``connect`` bound before timetracer was set up) is refused, not opened.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, NamedTuple

import psycopg
import psycopg.adapt
import psycopg.errors
import psycopg.rows
import psycopg.sql
from psycopg.pq import ConnStatus, ExecStatus, TransactionStatus

from timetracer_otel import wrapper_layers
from timetracer_otel._recording import in_outer_call
from timetracer_otel.cassette.calls import CassetteCall
from timetracer_otel.protocols.sql import PSYCOPG, live_view, psycopg_request, recorded_response

from ._fetches import Fetches
from .http import recorded_error_class
from .session import ReplayMismatchError, ReplaySession, refusal, replay_session_for

__all__ = ["install", "uninstall"]

LIBRARY = "psycopg"
_OUTSIDE = "a replay connection was used outside its replay session"


def _session(describe: Callable[[], str]) -> ReplaySession | None:
    return replay_session_for(LIBRARY, describe)


# --------------------------------------------------------------------------- answers
def _error(call: CassetteCall) -> Exception:
    """The recorded error as psycopg's class (or a builtin), its PostgreSQL diagnostics set again."""
    error = call.error or {}
    message = error.get("message", "")
    cls = recorded_error_class(error, "psycopg", psycopg.Error)
    attributes = (call.decoded_response() or {}).get("error_attributes") or {}
    if not issubclass(cls, psycopg.Error):
        return cls(message)
    info: dict[int, bytes | None] = {
        field: str(attributes[field.name.lower()]).encode()
        for field in psycopg.errors.DiagnosticField
        if attributes.get(field.name.lower()) is not None
    }
    return cls(message, info=info or None)


class _Column(NamedTuple):
    """An entry of ``cursor.description``, as psycopg's ``Column`` reads."""

    name: str
    type_code: int | None
    display_size: int | None = None
    internal_size: int | None = None
    precision: int | None = None
    scale: int | None = None
    null_ok: bool | None = None


class _Result:
    """A recorded result set, read by the row factories as they read a real ``PGresult``."""

    def __init__(self, recorded: dict[str, Any]) -> None:
        self.columns = [
            _Column(str(column[0]), column[1] if len(column) > 1 else None)
            for column in recorded.get("description") or ()
        ]
        self.status = ExecStatus.TUPLES_OK if recorded.get("description") else ExecStatus.COMMAND_OK
        self.rows = [tuple(row) for row in recorded.get("rows") or ()]
        self.rowcount = int(recorded.get("rowcount", -1))
        self.command_status = recorded.get("status")

    @property
    def nfields(self) -> int:
        return len(self.columns)

    @property
    def ntuples(self) -> int:
        return len(self.rows)

    def fname(self, index: int) -> bytes:
        return self.columns[index].name.encode()


# --------------------------------------------------------------------------- cursors
class _ReplayCursor(Fetches):
    """What a replay connection's ``cursor()`` gives: psycopg's cursor API over recorded results."""

    _encoding = "utf-8"  # what the row factories decode column names with

    def __init__(self, connection: _ReplayConnection, row_factory: Any) -> None:
        self.connection = connection
        self.arraysize = 1
        self.closed = False
        self._results: list[_Result] = []
        self._index = 0
        self._position = 0
        self._rowcount = -1
        self._make_row: Callable[[Sequence[Any]], Any] = tuple
        self.row_factory = row_factory

    @property
    def row_factory(self) -> Any:
        return self._row_factory

    @row_factory.setter
    def row_factory(self, row_factory: Any) -> None:
        """As psycopg's: set after ``execute()``, it makes the rows fetched next."""
        self._row_factory = row_factory
        if self._results:
            self._make_row = row_factory(self)

    # ---- answering
    def _answer(self, operation: str, query: Any, parameters: Any) -> None:
        request = psycopg_request(operation, query, parameters)
        session = _session(lambda: live_view(request).label)
        if session is None:
            raise ReplayMismatchError(live_view(request).label, LIBRARY, "(none)", _OUTSIDE)
        view = live_view(session.scrubbed(request), session.redactor)
        recorded = session.answer(LIBRARY, view)
        if recorded.call.error:
            raise _error(recorded.call)
        response = recorded_response(recorded.call, recorded.view, view, session.path)
        self._results = [_Result(each) for each in response.get("results") or [response]]
        self._rowcount = int(response.get("rowcount", -1))
        self._select(0)

    def _select(self, index: int) -> None:
        self._index, self._position = index, 0
        if index:  # the first set's count is the call's (an executemany's total)
            self._rowcount = self._results[index].rowcount
        self._make_row = self.row_factory(self)

    @property
    def pgresult(self) -> _Result | None:
        return self._results[self._index] if self._results else None

    def execute(
        self, query: Any, params: Any = None, *, prepare: bool | None = None, binary: Any = None
    ) -> _ReplayCursor:
        self._answer("execute", query, params)
        return self

    def executemany(self, query: Any, params_seq: Any, *, returning: bool = False) -> None:
        self._answer("executemany", query, list(params_seq))

    # ---- reading
    @property
    def description(self) -> list[_Column] | None:
        result = self.pgresult
        return result.columns if result is not None and result.columns else None

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def rownumber(self) -> int | None:
        return self._position if self.pgresult is not None else None

    @property
    def statusmessage(self) -> str | None:
        result = self.pgresult
        return result.command_status if result is not None else None

    def _rows(self) -> list[tuple]:
        result = self.pgresult
        if self.closed:
            raise psycopg.InterfaceError("the cursor is closed")
        if result is None or result.status != ExecStatus.TUPLES_OK:
            status = result.command_status if result is not None else None
            raise psycopg.ProgrammingError(
                f"the last operation didn't produce records (command status: {status})"
            )
        return result.rows

    def _take(self, count: int) -> list[Any]:
        rows = self._rows()[self._position : self._position + count]
        self._position += len(rows)
        return [self._make_row(row) for row in rows]

    def _left(self) -> int:
        return len(self._rows()) - self._position

    def fetchmany(self, size: int | None = 0) -> list[Any]:
        return self._take(size or self.arraysize)  # psycopg's: 0 for the array size

    def __iter__(self) -> Iterator[Any]:
        while (row := self.fetchone()) is not None:
            yield row

    def scroll(self, value: int, mode: str = "relative") -> None:
        position = value if mode == "absolute" else self._position + value
        if not 0 <= position <= len(self._rows()):
            raise IndexError("position out of bound")
        self._position = position

    def nextset(self) -> bool | None:
        if self._index + 1 >= len(self._results):
            return None
        self._select(self._index + 1)
        return True

    def results(self) -> Iterator[_ReplayCursor]:
        for index in range(len(self._results)):
            self._select(index)
            yield self

    def close(self) -> None:
        self.closed = True

    def __enter__(self) -> _ReplayCursor:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # ---- refused
    def copy(self, statement: Any, params: Any = None, **kwargs: Any) -> Any:
        raise refusal(
            LIBRARY,
            f"copy {statement}",
            "COPY is not replayed: its data never reaches the cassette",
        )

    def stream(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        raise refusal(
            LIBRARY,
            f"stream {query}",
            "cursor.stream() is not replayed: use execute() and fetch its rows",
        )


# --------------------------------------------------------------------------- connections
class _PGconn:
    """The few ``pgconn`` fields ``psycopg_pool`` reads of a connection it holds, and the
    encoding ``psycopg.sql`` renders text in."""

    _encoding = "utf-8"

    def __init__(self) -> None:
        self.status = ConnStatus.OK
        self.transaction_status = TransactionStatus.IDLE


class _Info:
    """``connection.info``: what OpenTelemetry reads for its span attributes."""

    dbname = host = user = None
    port = None
    encoding = "utf-8"
    server_version = 0

    def __init__(self, pgconn: _PGconn) -> None:
        self._pgconn = pgconn

    @property
    def transaction_status(self) -> TransactionStatus:
        return self._pgconn.transaction_status


class _ReplayTransaction:
    """``conn.transaction()``: nothing to send; ``psycopg.Rollback`` raised inside is swallowed as psycopg does."""

    def __init__(self, connection: _ReplayConnection) -> None:
        self.connection = connection

    def __enter__(self) -> _ReplayTransaction:
        return self

    def __exit__(self, kind: Any, exc: Any, traceback: Any) -> bool:
        return isinstance(exc, psycopg.Rollback) and exc.transaction in (None, self)


class _ReplayConnection:
    """What ``psycopg.connect()`` gives in replay: psycopg's connection API, each statement answered from the cassette."""

    def __init__(self, row_factory: Any = None, autocommit: bool = False) -> None:
        self.row_factory = row_factory or psycopg.rows.tuple_row
        self.autocommit = autocommit
        self.pgconn = _PGconn()
        self.info = _Info(self.pgconn)
        self.adapters = psycopg.adapt.AdaptersMap(psycopg.adapters)
        self.broken = False
        self.prepare_threshold: int | None = 5

    @property
    def connection(self) -> _ReplayConnection:
        """Itself, as a psycopg connection is the adaptation context's connection."""
        return self

    @property
    def closed(self) -> bool:
        return self.pgconn.status == ConnStatus.BAD

    def cursor(self, name: str = "", *, row_factory: Any = None, **kwargs: Any) -> _ReplayCursor:
        if name:
            raise refusal(
                LIBRARY,
                f"cursor {name!r}",
                "server-side cursors are not replayed: use a client-side cursor (no name)",
            )
        if self.closed:
            raise psycopg.OperationalError("the connection is closed")
        return _ReplayCursor(self, row_factory or self.row_factory)

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> _ReplayCursor:
        return self.cursor().execute(query, params, **kwargs)

    def transaction(self, savepoint_name: str | None = None, force_rollback: bool = False) -> Any:
        return _ReplayTransaction(self)

    def pipeline(self) -> Any:
        raise refusal(LIBRARY, "pipeline", "psycopg pipelines are not replayed")

    def commit(self) -> None:
        pass

    def rollback(self) -> None:
        pass

    def set_autocommit(self, value: bool) -> None:
        self.autocommit = value

    def close(self) -> None:
        self.pgconn.status = ConnStatus.BAD
        self.pgconn.transaction_status = TransactionStatus.UNKNOWN

    def __enter__(self) -> _ReplayConnection:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if not getattr(self, "_pool", None):  # a pool's connection stays open, as psycopg's
            self.close()


# --------------------------------------------------------------------------- asyncio
class _ReplayAsyncCursor:
    """What a replay ``AsyncConnection``'s ``cursor()`` gives: the same answers, awaited."""

    def __init__(self, connection: _ReplayAsyncConnection, row_factory: Any) -> None:
        self.connection = connection
        self._cursor = _ReplayCursor(connection._sync, row_factory)

    def __getattr__(self, name: str) -> Any:
        # description, rowcount, rownumber, statusmessage, pgresult, nextset, close, copy, stream, ...
        return getattr(self._cursor, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("connection", "_cursor"):
            object.__setattr__(self, name, value)
        else:  # row_factory, arraysize
            setattr(self._cursor, name, value)

    async def execute(self, query: Any, params: Any = None, **kwargs: Any) -> _ReplayAsyncCursor:
        self._cursor.execute(query, params, **kwargs)
        return self

    async def executemany(self, query: Any, params_seq: Any, **kwargs: Any) -> None:
        self._cursor.executemany(query, params_seq, **kwargs)

    async def fetchone(self) -> Any:
        return self._cursor.fetchone()

    async def fetchmany(self, size: int = 0) -> list[Any]:
        return self._cursor.fetchmany(size)

    async def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

    async def scroll(self, value: int, mode: str = "relative") -> None:
        self._cursor.scroll(value, mode)

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._rows()

    async def _rows(self) -> AsyncIterator[Any]:
        for row in self._cursor:
            yield row

    async def close(self) -> None:
        self._cursor.close()

    async def __aenter__(self) -> _ReplayAsyncCursor:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        self._cursor.close()


class _ReplayAsyncTransaction:
    """``await conn.transaction()``'s ``async with``: nothing to send, as :class:`_ReplayTransaction`."""

    def __init__(self, connection: _ReplayAsyncConnection) -> None:
        self.connection = connection

    async def __aenter__(self) -> _ReplayAsyncTransaction:
        return self

    async def __aexit__(self, kind: Any, exc: Any, traceback: Any) -> bool:
        return isinstance(exc, psycopg.Rollback) and exc.transaction in (None, self)


class _ReplayAsyncConnection:
    """What ``psycopg.AsyncConnection.connect()`` gives in replay: the asyncio API over :class:`_ReplayConnection`'s answers."""

    def __init__(self, row_factory: Any = None, autocommit: bool = False) -> None:
        self._sync = _ReplayConnection(row_factory, autocommit)

    def __getattr__(self, name: str) -> Any:
        # row_factory, autocommit, pgconn, info, adapters, closed, broken, pipeline, ...
        return getattr(self._sync, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "_sync":
            object.__setattr__(self, name, value)
        else:  # autocommit, row_factory, and what a pool sets (_pool, _expire_at, ...)
            setattr(self._sync, name, value)

    def cursor(self, name: str = "", *, row_factory: Any = None, **kwargs: Any) -> Any:
        self._sync.cursor(name)  # refuses a named cursor, a closed connection
        return _ReplayAsyncCursor(self, row_factory or self._sync.row_factory)

    async def execute(self, query: Any, params: Any = None, **kwargs: Any) -> _ReplayAsyncCursor:
        return await self.cursor().execute(query, params, **kwargs)

    def transaction(self, savepoint_name: str | None = None, force_rollback: bool = False) -> Any:
        return _ReplayAsyncTransaction(self)

    async def commit(self) -> None:
        pass

    async def rollback(self) -> None:
        pass

    async def set_autocommit(self, value: bool) -> None:
        self._sync.autocommit = value

    async def close(self) -> None:
        self._sync.close()

    async def __aenter__(self) -> _ReplayAsyncConnection:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        self._sync.__exit__(*exc_info)


# --------------------------------------------------------------------------- opening
def _opening() -> str:
    return f"connect {PSYCOPG}"


def _replaying_connect() -> bool:
    """Whether a connection being opened is replay's to stand in for: not one SQLAlchemy opens
    live (named in ``TIMETRACER_LIVE_PLUGINS``), inside its ``outer_call()``."""
    return not in_outer_call() and _session(_opening) is not None


def _connect(wrapped: Callable[..., Any], instance: Any, args: tuple, kwargs: dict) -> Any:
    if not _replaying_connect():
        return wrapped(*args, **kwargs)
    return _ReplayConnection(kwargs.get("row_factory"), bool(kwargs.get("autocommit")))


async def _connect_async(
    wrapped: Callable[..., Any], instance: Any, args: tuple, kwargs: dict
) -> Any:
    if not _replaying_connect():
        return await wrapped(*args, **kwargs)
    return _ReplayAsyncConnection(kwargs.get("row_factory"), bool(kwargs.get("autocommit")))


def _refuse(wrapped: Callable[..., Any], instance: Any, args: tuple, kwargs: dict) -> Any:
    """Below every way in: a connection still being opened in a replay session is refused, not opened."""
    if not _replaying_connect():
        return wrapped(*args, **kwargs)
    raise refusal(
        LIBRARY,
        _opening(),
        "psycopg was about to open a connection during replay (psycopg.connect bound before\n"
        "timetracer was set up?); nothing was opened",
    )


def _rendered(wrapped: Callable[..., Any], instance: Any, args: tuple, kwargs: dict) -> Any:
    """``psycopg.sql``'s identifiers and literals rendered for a replay connection or its cursor
    (``as_string(conn)``): escaped as psycopg escapes them without a connection, since libpq's
    escaping needs a live one. The statement recorded was rendered without one too."""
    context = args[0] if args else kwargs.get("context")
    if isinstance(
        getattr(context, "connection", None), (_ReplayConnection, _ReplayAsyncConnection)
    ):
        return wrapped(None)
    return wrapped(*args, **kwargs)


# (owner, name, wrapper): what opens connections, and what renders SQL for one
_OPENERS: list[tuple[Any, str, Callable[..., Any]]] = [
    (psycopg, "connect", _connect),
    (psycopg.Connection, "connect", _connect),
    (psycopg.Connection, "_connect_gen", _refuse),
    (psycopg.AsyncConnection, "connect", _connect_async),
    (psycopg.AsyncConnection, "_connect_gen", _refuse),
    (psycopg.sql.Identifier, "as_bytes", _rendered),
    (psycopg.sql.Literal, "as_bytes", _rendered),
]


def install() -> None:
    for owner, name, wrapper in _OPENERS:
        wrapper_layers.install(owner, name, wrapper, layer="replay")


def uninstall() -> None:
    for owner, name, _ in _OPENERS:
        wrapper_layers.uninstall(owner, name, layer="replay")
