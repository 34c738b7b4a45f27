"""asyncpg replay: connections and pools that open nothing, statements answered from the cassette.

In a replay session, ``asyncpg.connect()`` gives a :class:`_ReplayConnection` and
``asyncpg.create_pool()`` a :class:`_ReplayPool` (awaited, entered, acquired and released as
asyncpg's are), without a socket: a pool created in the application's lifespan, outside every
request, is one too (the process session lets it be made). Their statements go through
asyncpg's own ``Connection``/``PreparedStatement`` methods, so OpenTelemetry's wrappers make
the same spans, and the replay layer under them answers each one from the current session:
``asyncpg.Record`` objects with the recorded values and column names, the status string of an
``execute``, or the recorded error as asyncpg's own exception class (its SQLSTATE, detail,
constraint, ...). Transactions are asyncpg's ``Transaction``: its ``BEGIN``/``COMMIT``/
``ROLLBACK`` are recorded statements like any other. A connection made before the session
began is answered the same way, never sent to.

A cursor serves the rows the recording fetched through it, in order; past them, on a cursor
the recording did not read to its end, it raises :class:`ReplayMismatchError`.

What the stand-ins do not answer: ``COPY``, listeners, type codecs (answers come
decoded as recorded, so ``set_type_codec`` does nothing), a pool's ``init``/``setup``
callbacks (never called: the connection they set up does not exist). Anything that would still
open a connection in a replay session raises :class:`ReplayMismatchError` instead.
"""

from __future__ import annotations

import inspect
from collections import deque
from collections.abc import Callable, Generator
from typing import Any

import asyncpg
import asyncpg.connect_utils
import asyncpg.connection
import asyncpg.exceptions
import asyncpg.pool
import asyncpg.prepared_stmt
import asyncpg.transaction
from asyncpg.protocol.protocol import _create_record

from timetracer_otel import wrapper_layers
from timetracer_otel.cassette.calls import CassetteCall
from timetracer_otel.protocols.sql import (
    ASYNCPG,
    asyncpg_arguments,
    asyncpg_methods,
    asyncpg_request,
    live_view,
    recorded_response,
)

from .http import recorded_error_class
from .session import ReplayMismatchError, ReplaySession, refusal, replay_session_for, round_trip

__all__ = ["install", "uninstall"]

LIBRARY = "asyncpg"
_Connection = asyncpg.connection.Connection
_Statement = asyncpg.prepared_stmt.PreparedStatement
_OUTSIDE = "a replay connection was used outside its replay session"


def _session(describe: Callable[[], str]) -> ReplaySession | None:
    return replay_session_for(LIBRARY, describe)


def _through(owner: type, name: str) -> Callable[..., Any]:
    """A stand-in's method that calls asyncpg's own (looked up per call: wrappers come and go)."""

    async def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        return await inspect.getattr_static(owner, name).__get__(self, owner)(*args, **kwargs)

    method.__name__ = name
    return method


# --------------------------------------------------------------------------- answers
def _error(call: CassetteCall) -> Exception:
    """The recorded error as asyncpg's class (or a builtin), with its PostgreSQL fields set again."""
    error = call.error or {}
    cls = recorded_error_class(error, "asyncpg", asyncpg.exceptions.PostgresError)
    attributes = (call.decoded_response() or {}).get("error_attributes") or {}
    # a PostgreSQL error's text is its message field, its str() adds the detail and hint fields
    exc = cls(attributes.get("message", error.get("message", "")))
    for attribute, value in attributes.items():
        try:
            setattr(exc, attribute, value)
        except (AttributeError, TypeError):
            continue
    return exc


def _records(response: dict[str, Any]) -> list[Any]:
    names = [column[0] for column in response.get("description") or ()]
    mapping = {name: index for index, name in enumerate(names)}
    return [_create_record(mapping, tuple(row)) for row in response.get("rows") or ()]


def _result(method: str, response: dict[str, Any], column: int) -> Any:
    if method in ("fetch", "fetchmany"):
        return _records(response)
    if method in ("fetchrow", "fetchval"):
        first = next(iter(_records(response)), None)
        return first if method == "fetchrow" or first is None else first[column]
    if method == "execute":
        return response.get("status")
    return None


def _replay(owner: type, method: str) -> Callable[..., Any]:
    prepared = owner is _Statement

    async def replay(wrapped: Callable[..., Any], instance: Any, args: tuple, kwargs: dict) -> Any:
        args, kwargs = asyncpg_arguments(method, args, kwargs, prepared)
        request = asyncpg_request(method, args, kwargs, instance.get_query() if prepared else None)
        session = _session(lambda: live_view(request).label)
        if session is None:
            connection = instance._connection if prepared else instance
            if isinstance(connection, _ReplayConnection):
                raise ReplayMismatchError(live_view(request).label, LIBRARY, "(none)", _OUTSIDE)
            return await wrapped(*args, **kwargs)
        view = live_view(session.scrubbed(request), session.redactor)
        recorded = session.answer(LIBRARY, view)
        await round_trip()
        if recorded.call.error:
            raise _error(recorded.call)
        response = recorded_response(recorded.call, recorded.view, view, session.path)
        if method == "prepare":
            return _ReplayStatement(instance, request["statement"])
        return _result(method, response, kwargs.get("column", 0))

    return replay


# --------------------------------------------------------------------------- cursors
class _ReplayCursor:
    """A cursor, or its iterator, serving the rows the recording fetched, in order.

    Past them, on a cursor the recording did not read to its end (or moved ``forward()`` on,
    which replay refuses), :class:`ReplayMismatchError`: its next rows were never recorded.
    """

    def __init__(self, call: CassetteCall, response: dict[str, Any], label: str, path: str) -> None:
        self._call = call
        self._label, self._path = label, path
        self._rows = deque(_records(response)) if "rows" in response else deque()
        self._complete = bool(response.get("complete")) and not call.error

    def _more(self, what: str) -> ReplayMismatchError:
        return ReplayMismatchError(
            f"{self._label} ({what})",
            LIBRARY,
            self._path,
            "the recording stopped fetching this cursor here",
        )

    def _take(self, n: int) -> list[Any]:
        taken = [self._rows.popleft() for _ in range(min(n, len(self._rows)))]
        if len(taken) < n and not self._complete:
            if self._call.error:
                raise _error(self._call)
            raise self._more("more rows")
        return taken

    def __aiter__(self) -> _ReplayCursor:
        return self

    async def __anext__(self) -> Any:
        taken = self._take(1)
        if not taken:
            raise StopAsyncIteration
        return taken[0]

    async def fetch(self, n: int, *, timeout: float | None = None) -> list[Any]:
        return self._take(n)

    async def fetchrow(self, *, timeout: float | None = None) -> Any:
        taken = self._take(1)
        return taken[0] if taken else None

    async def forward(self, n: int, *, timeout: float | None = None) -> int:
        raise self._more("forward")


class _ReplayCursorFactory:
    """What ``cursor()`` gives in replay: iterated, or awaited for a cursor."""

    def __init__(self, cursor: _ReplayCursor) -> None:
        self._cursor = cursor

    def __aiter__(self) -> _ReplayCursor:
        return self._cursor

    def __await__(self) -> Generator[Any, None, _ReplayCursor]:
        return self._open().__await__()

    async def _open(self) -> _ReplayCursor:
        if self._cursor._call.error and not self._cursor._rows:
            raise _error(self._cursor._call)
        return self._cursor


def _cursor(wrapped: Callable[..., Any], instance: Any, args: tuple, kwargs: dict) -> Any:
    request = asyncpg_request("cursor", args, kwargs)
    session = _session(lambda: live_view(request).label)
    if session is None:
        if isinstance(instance, _ReplayConnection):
            raise ReplayMismatchError(live_view(request).label, LIBRARY, "(none)", _OUTSIDE)
        return wrapped(*args, **kwargs)
    view = live_view(session.scrubbed(request), session.redactor)
    recorded = session.answer(LIBRARY, view)
    response = recorded_response(recorded.call, recorded.view, view, session.path)
    return _ReplayCursorFactory(
        _ReplayCursor(recorded.call, response, recorded.view.label, session.path)
    )


# --------------------------------------------------------------------------- stand-ins
class _ReplayConnection:
    """What ``asyncpg.connect()`` gives in replay: asyncpg's methods, answered from the cassette."""

    _params = None  # what OpenTelemetry's wrapper reads for its span attributes
    _addr = None

    def __init__(self) -> None:
        self._top_xact: Any = None  # asyncpg's Transaction keeps its state here
        self._pool_release_ctr = 0
        self._protocol = self
        self._closed = False
        self._unique_ids = 0

    fetch = _through(_Connection, "fetch")
    fetchrow = _through(_Connection, "fetchrow")
    fetchval = _through(_Connection, "fetchval")
    execute = _through(_Connection, "execute")
    executemany = _through(_Connection, "executemany")
    prepare = _through(_Connection, "prepare")
    fetchmany = _through(_Connection, "fetchmany")

    def cursor(self, *args: Any, **kwargs: Any) -> Any:
        return inspect.getattr_static(_Connection, "cursor").__get__(self, _Connection)(
            *args, **kwargs
        )

    def transaction(
        self, *, isolation: str | None = None, readonly: bool = False, deferrable: bool = False
    ) -> asyncpg.transaction.Transaction:
        return asyncpg.transaction.Transaction(self, isolation, readonly, deferrable)

    def is_in_transaction(self) -> bool:
        return self._top_xact is not None

    def _get_unique_id(self, prefix: str) -> str:
        """Savepoint names, as asyncpg makes them."""
        self._unique_ids += 1
        return f"__asyncpg_{prefix}_{self._unique_ids:x}__"

    def is_closed(self) -> bool:
        return self._closed

    async def close(self, *, timeout: float | None = None) -> None:
        self._closed = True

    def terminate(self) -> None:
        self._closed = True

    async def reset(self, *, timeout: float | None = None) -> None:
        pass

    async def set_type_codec(self, typename: str, **kwargs: Any) -> None:
        """The recorded values are already decoded."""

    async def reset_type_codec(self, typename: str, **kwargs: Any) -> None:
        pass

    async def set_builtin_type_codec(self, typename: str, **kwargs: Any) -> None:
        pass


class _ReplayStatement:
    """What ``prepare()`` gives in replay: asyncpg's ``PreparedStatement`` methods, answered from the cassette."""

    def __init__(self, connection: Any, query: str) -> None:
        self._connection = connection
        self._query = query

    def get_query(self) -> str:
        return self._query

    fetch = _through(_Statement, "fetch")
    fetchrow = _through(_Statement, "fetchrow")
    fetchval = _through(_Statement, "fetchval")
    executemany = _through(_Statement, "executemany")
    fetchmany = _through(_Statement, "fetchmany")


class _Acquire:
    """``pool.acquire()``: awaited, or entered as ``async with``."""

    def __init__(self, pool: _ReplayPoolAPI) -> None:
        self._pool = pool
        self._connection: _ReplayConnection | None = None

    def __await__(self) -> Generator[Any, None, _ReplayConnection]:
        return self._pool._acquire().__await__()

    async def __aenter__(self) -> _ReplayConnection:
        self._connection = await self._pool._acquire()
        return self._connection

    async def __aexit__(self, *exc_info: Any) -> None:
        if self._connection is not None:
            await self._pool.release(self._connection)


class _ReplayPoolAPI:
    """asyncpg's pool API, each acquire a new replay connection (its sizes and state in the
    attributes asyncpg's ``Pool`` keeps them in)."""

    __slots__ = ()  # laid out as asyncpg's Pool, which _ReplayedPool is
    _minsize: int
    _maxsize: int
    _closing: bool

    def __await__(self) -> Generator[Any, None, Any]:
        return self._ready().__await__()

    async def _ready(self) -> Any:
        return self

    async def __aenter__(self) -> Any:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    def acquire(self, *, timeout: float | None = None) -> _Acquire:
        return _Acquire(self)

    async def _acquire(self) -> _ReplayConnection:
        if self._closing:
            raise asyncpg.exceptions.InterfaceError("pool is closing")
        return _ReplayConnection()

    async def release(self, connection: Any, *, timeout: float | None = None) -> None:
        connection._pool_release_ctr += 1

    async def close(self) -> None:
        self.terminate()

    def terminate(self) -> None:
        self._closing = True  # type: ignore[misc]  # a slot of each subclass (asyncpg's Pool's)

    def is_closing(self) -> bool:
        return self._closing

    def get_min_size(self) -> int:
        return self._minsize

    def get_max_size(self) -> int:
        return self._maxsize

    def get_size(self) -> int:
        return 0

    def get_idle_size(self) -> int:
        return 0

    async def expire_connections(self) -> None:
        pass

    def _shortcut(name: str) -> Callable[..., Any]:  # type: ignore[misc]
        async def method(self: _ReplayPoolAPI, *args: Any, **kwargs: Any) -> Any:
            async with self.acquire() as connection:
                return await getattr(connection, name)(*args, **kwargs)

        method.__name__ = name
        return method

    fetch = _shortcut("fetch")
    fetchrow = _shortcut("fetchrow")
    fetchval = _shortcut("fetchval")
    execute = _shortcut("execute")
    executemany = _shortcut("executemany")
    fetchmany = _shortcut("fetchmany")
    del _shortcut


class _ReplayPool(_ReplayPoolAPI):
    """What ``asyncpg.create_pool()`` gives in replay."""

    __slots__ = ("_minsize", "_maxsize", "_closing")

    def __init__(self, min_size: int = 10, max_size: int = 10) -> None:
        self._minsize, self._maxsize = min_size, max_size
        self._closing = False


class _ReplayedPool(_ReplayPoolAPI, asyncpg.pool.Pool):
    """A pool made outside a replay session and first awaited in one (a test suite's fixture
    calls ``create_pool()`` without awaiting it, the app's lifespan then enters it): it
    becomes a replay pool there, as one made in the session is (see :func:`_initialize`)."""

    __slots__ = ()


# --------------------------------------------------------------------------- opening
def _opening() -> str:
    """How a connection being opened is named in a refusal."""
    return f"connect {ASYNCPG}"


def _create_pool(wrapped: Callable[..., Any], instance: Any, args: tuple, kwargs: dict) -> Any:
    if _session(_opening) is None:
        return wrapped(*args, **kwargs)
    return _ReplayPool(kwargs.get("min_size", 10), kwargs.get("max_size", 10))


async def _initialize(wrapped: Callable[..., Any], instance: Any, args: tuple, kwargs: dict) -> Any:
    """``await pool`` (``async with pool``) of a pool made outside a replay session, in one:
    it opens nothing and answers as a replay pool (asyncpg's own would refuse the replay
    connections, which are not its ``Connection`` class)."""
    if instance._initialized or instance._initializing or _session(_opening) is None:
        return await wrapped(*args, **kwargs)
    instance.__class__ = _ReplayedPool
    instance._initialized, instance._closing = True, False
    return instance


async def _connect(wrapped: Callable[..., Any], instance: Any, args: tuple, kwargs: dict) -> Any:
    if _session(_opening) is None:
        return await wrapped(*args, **kwargs)
    return _ReplayConnection()


async def _refuse(wrapped: Callable[..., Any], instance: Any, args: tuple, kwargs: dict) -> Any:
    """Below every way in: a connection something still opens in a replay session (a ``connect``
    imported before timetracer was set up) is refused, not opened."""
    if _session(_opening) is None:
        return await wrapped(*args, **kwargs)
    raise refusal(
        LIBRARY,
        _opening(),
        "asyncpg was about to open a connection during replay (asyncpg.connect or create_pool\n"
        "bound before timetracer was set up?); nothing was opened",
    )


# (owner, name, wrapper): what opens connections
_OPENERS: list[tuple[Any, str, Callable[..., Any]]] = [
    (asyncpg, "connect", _connect),
    (asyncpg.connection, "connect", _connect),
    (asyncpg, "create_pool", _create_pool),
    (asyncpg.pool, "create_pool", _create_pool),
    (asyncpg.pool.Pool, "_async__init__", _initialize),
    (asyncpg.connect_utils, "_connect", _refuse),
]


_METHODS = asyncpg_methods(_Connection, _Statement)


def install() -> None:
    for owner, method in _METHODS:
        wrapper_layers.install(owner, method, _replay(owner, method), layer="replay")
    wrapper_layers.install(_Connection, "cursor", _cursor, layer="replay")
    for owner, name, wrapper in _OPENERS:
        wrapper_layers.install(owner, name, wrapper, layer="replay")


def uninstall() -> None:
    for owner, method in _METHODS:
        wrapper_layers.uninstall(owner, method, layer="replay")
    wrapper_layers.uninstall(_Connection, "cursor", layer="replay")
    for owner, name, _ in _OPENERS:
        wrapper_layers.uninstall(owner, name, layer="replay")
