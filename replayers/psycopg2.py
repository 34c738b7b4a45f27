"""psycopg2 replay: connections that open nothing, statements answered from the cassette.

In a replay session, ``psycopg2._connect`` (what ``psycopg2.connect``, its pools and a
``connect`` imported early all call) gives a :class:`_ReplayConnection` without a socket: libpq
connects in C, past the guard on Python's sockets, so nothing else stops a live connection.
Its cursors answer each ``execute``, ``executemany`` and ``callproc`` from the session, and
build the rows as the cursor class chosen builds them (``RealDictCursor``'s ``RealDictRow``,
``DictCursor``'s ``DictRow``, ``NamedTupleCursor``'s namedtuples, tuples otherwise; a
connection class of ``psycopg2.extras`` chooses its cursor class as it does); ``description``
holds psycopg2's ``Column``\\ s. A recorded error is raised as psycopg2's own class
(``psycopg2.errors.UniqueViolation``) with its message, ``pgcode`` and ``pgerror``.
``commit()`` and ``rollback()`` send nothing: what each statement answered is in the cassette.
``mogrify`` quotes as PostgreSQL's default settings have it (:mod:`timetracer_otel._psycopg2`),
so ``psycopg2.extras.execute_values`` builds the statement it recorded.

Refused with :class:`ReplayMismatchError` at the call site, since the cassette holds no answer:
server-side (named) cursors, ``COPY`` (``copy_from``, ``copy_to``, ``copy_expert``), large
objects, two-phase commits, and asynchronous connections (aiopg's).
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Callable, Iterator
from types import FunctionType, SimpleNamespace
from typing import Any

import psycopg2
import psycopg2.extensions
import psycopg2.extras

from timetracer_otel import _psycopg2, wrapper_layers
from timetracer_otel._recording import in_outer_call
from timetracer_otel.cassette.calls import CassetteCall
from timetracer_otel.protocols.sql import PSYCOPG2, live_view, psycopg2_request, recorded_response

from ._fetches import Fetches
from .http import recorded_error_class, with_recorded_attributes
from .session import ReplayMismatchError, ReplaySession, refusal, replay_session_for

__all__ = ["install", "uninstall"]

LIBRARY = "psycopg2"
_OUTSIDE = "a replay connection was used outside its replay session"
_extras = psycopg2.extras


def _session(describe: Callable[[], str]) -> ReplaySession | None:
    return replay_session_for(LIBRARY, describe)


def _error(call: CassetteCall) -> Exception:
    """The recorded error as psycopg2's class (or a builtin), its ``pgcode``, ``pgerror`` and
    ``diag`` as recorded."""
    error = call.error or {}
    response = call.decoded_response() or {}
    cls: Any = recorded_error_class(error, "psycopg2", psycopg2.Error)
    diagnostics = response.get("diagnostics")
    if isinstance(diagnostics, dict) and issubclass(cls, psycopg2.Error):
        exc = _diagnosed(cls)(error.get("message", ""))
        exc.recorded_diag = SimpleNamespace(
            **{name: diagnostics.get(name) for name in _psycopg2.DIAGNOSTICS}
        )
    else:
        exc = cls(error.get("message", ""))
    return with_recorded_attributes(exc, response.get("error_attributes") or {})


@functools.lru_cache(maxsize=64)
def _diagnosed(cls: Any) -> Any:
    """``cls`` whose ``diag`` is the recorded one: psycopg2 reads it from the server's result, which
    replay has not. Named as ``cls``, so handlers, ``except`` clauses and its ``repr`` see no change."""
    return type(
        cls.__name__,
        (cls,),
        {
            "diag": property(lambda exc: exc.recorded_diag),
            "__module__": cls.__module__,
            "__qualname__": cls.__qualname__,
        },
    )


# --------------------------------------------------------------------------- rows
def _row_maker(cursor_class: Any) -> Callable[[list[str], tuple], Any]:
    """How the cursor class chosen builds a row of the given column names and values."""
    kind: Any = cursor_class if isinstance(cursor_class, type) else object
    if issubclass(kind, _extras.RealDictCursor):
        return lambda names, values: _extras.RealDictRow(zip(names, values, strict=True))
    if issubclass(kind, _extras.DictCursor):
        return _dict_row
    if issubclass(kind, _extras.NamedTupleCursor):
        return lambda names, values: kind._cached_make_nt(tuple(names))._make(values)
    return lambda names, values: values


def _dict_row(names: list[str], values: tuple) -> Any:
    row = _extras.DictRow.__new__(_extras.DictRow)
    list.__init__(row, values)
    row._index = OrderedDict((name, index) for index, name in enumerate(names))
    return row


# The cursor class each connection class of psycopg2.extras gives its cursors by default.
_CONNECTION_CURSORS = (
    (_extras.RealDictConnection, _extras.RealDictCursor),
    (_extras.DictConnection, _extras.DictCursor),
    (_extras.NamedTupleConnection, _extras.NamedTupleCursor),
)


# --------------------------------------------------------------------------- cursors
class _ReplayCursor(Fetches):
    """What a replay connection's ``cursor()`` gives: psycopg2's cursor API over a recorded answer."""

    def __init__(self, connection: _ReplayConnection, cursor_class: Any) -> None:
        self.connection = connection
        self.name = None
        self.arraysize = 1
        self.itersize = 2000
        self.closed = False
        self.description: tuple[psycopg2.extensions.Column, ...] | None = None
        self.rowcount = -1
        self.rownumber = 0
        self.lastrowid: int | None = None
        self.statusmessage: str | None = None
        self._executed: tuple[Any, Any] | None = None  # the last execute's query and parameters
        self._make_row = _row_maker(cursor_class)
        self._names: list[str] = []
        self._rows: list[tuple] | None = None

    # ---- answering
    def _answer(self, operation: str, query: Any, parameters: Any) -> None:
        if self.closed:
            raise psycopg2.InterfaceError("cursor already closed")
        if self.connection.closed:
            raise psycopg2.InterfaceError("connection already closed")
        request = psycopg2_request(operation, _psycopg2.statement(query), parameters)
        session = _session(lambda: live_view(request).label)
        if session is None:
            raise ReplayMismatchError(live_view(request).label, LIBRARY, "(none)", _OUTSIDE)
        view = live_view(session.scrubbed(request), session.redactor)
        recorded = session.answer(LIBRARY, view)
        self.description, self._rows, self.rownumber = None, None, 0
        if recorded.call.error:
            raise _error(recorded.call)
        response = recorded_response(recorded.call, recorded.view, view, session.path)
        columns = response.get("description")
        if columns:
            self._names = [str(column[0]) for column in columns]
            self.description = tuple(
                psycopg2.extensions.Column(name=str(c[0]), type_code=c[1] if len(c) > 1 else None)
                for c in columns
            )
            self._rows = [tuple(row) for row in response.get("rows") or ()]
        self.rowcount = int(response.get("rowcount", -1))
        self.lastrowid = response.get("lastrowid")
        self.statusmessage = response.get("status")

    def execute(self, query: Any, vars: Any = None) -> None:  # noqa: A002 - psycopg2's name
        self._answer("execute", query, vars)
        self._executed = (query, vars)

    def executemany(self, query: Any, vars_list: Any) -> None:
        self._answer("executemany", query, list(vars_list))

    def callproc(self, procname: Any, parameters: Any = None) -> Any:
        self._answer("callproc", procname, parameters)
        return parameters

    def mogrify(self, query: Any, vars: Any = None) -> bytes:  # noqa: A002
        return _psycopg2.mogrified(query, vars)

    @property
    def query(self) -> bytes | None:
        """The last execute's statement as sent, quoted when read (few applications read it)."""
        if self._executed is None:
            return None
        try:
            return _psycopg2.mogrified(*self._executed)
        except Exception:  # a value psycopg2 adapts only with a live connection
            return None

    # ---- reading
    def _result(self) -> list[tuple]:
        if self.closed:
            raise psycopg2.InterfaceError("cursor already closed")
        if self._rows is None:
            raise psycopg2.ProgrammingError("no results to fetch")
        return self._rows

    def _take(self, count: int) -> list[Any]:
        rows = self._result()[self.rownumber : self.rownumber + count]
        self.rownumber += len(rows)
        return [self._make_row(self._names, row) for row in rows]

    def _left(self) -> int:
        return len(self._result()) - self.rownumber

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        row = self.fetchone()
        if row is None:
            raise StopIteration
        return row

    def scroll(self, value: int, mode: str = "relative") -> None:
        position = value if mode == "absolute" else self.rownumber + value
        if not 0 <= position < len(self._result()):
            raise psycopg2.ProgrammingError("scroll destination out of bounds")
        self.rownumber = position

    def setinputsizes(self, sizes: Any) -> None:
        pass

    def setoutputsize(self, size: Any, column: Any = None) -> None:
        pass

    def nextset(self) -> None:
        raise psycopg2.NotSupportedError("not supported by PostgreSQL")

    def close(self) -> None:
        self.closed = True

    def __enter__(self) -> _ReplayCursor:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # ---- refused
    def _copy(self, what: str) -> Any:
        raise refusal(LIBRARY, what, "COPY is not replayed: its data never reaches the cassette")

    def copy_from(self, file: Any, table: str, *args: Any, **kwargs: Any) -> None:
        self._copy(f"copy_from {table}")

    def copy_to(self, file: Any, table: str, *args: Any, **kwargs: Any) -> None:
        self._copy(f"copy_to {table}")

    def copy_expert(self, sql: Any, file: Any, size: int = 8192) -> None:
        self._copy(f"copy_expert {_psycopg2.statement(sql)}")


# --------------------------------------------------------------------------- connections
class _Info:
    """``connection.info``: what OpenTelemetry and psycopg2's pools read."""

    def __init__(self, parameters: dict[str, str]) -> None:
        self.dbname = parameters.get("dbname")
        self.user = parameters.get("user")
        self.host = parameters.get("host")
        self.port = int(parameters["port"]) if parameters.get("port", "").isdigit() else None
        self.options = parameters.get("options")
        self.dsn_parameters = parameters
        self.status = psycopg2.extensions.STATUS_READY
        self.transaction_status = psycopg2.extensions.TRANSACTION_STATUS_IDLE
        self.server_version = 0
        self.protocol_version = 3
        self.backend_pid = 0
        self.error_message = None
        self.ssl_in_use = False

    def parameter_status(self, name: str) -> None:
        return None


class _ReplayConnection:
    """What ``psycopg2.connect()`` gives in replay: psycopg2's connection API, each statement answered from the cassette."""

    def __init__(self, dsn: str, connection_class: Any) -> None:
        try:
            parameters = psycopg2.extensions.parse_dsn(dsn or "")
        except psycopg2.ProgrammingError:
            parameters = {}
        parameters.pop("password", None)
        self.dsn = " ".join(f"{name}={value}" for name, value in parameters.items())
        self.info = _Info(parameters)
        kind = connection_class if isinstance(connection_class, type) else object
        self._default_cursor = next(
            (cursor for owner, cursor in _CONNECTION_CURSORS if issubclass(kind, owner)), None
        )
        self.cursor_factory: Any = None
        self.closed = 0
        self.autocommit = False
        self.isolation_level: int | None = None
        self.readonly: bool | None = None
        self.deferrable: bool | None = None
        self.encoding = "UTF8"
        self.server_version = 0
        self.protocol_version = 3
        self.status = psycopg2.extensions.STATUS_READY
        self.async_ = 0
        self.notices: list[str] = []
        self.notifies: list[Any] = []
        self._connection_class = kind

    def __getattr__(self, name: str) -> Any:
        """The application's own connection methods (``LoggingConnection.initialize``), on the stand-in."""
        for owner in self.__dict__.get("_connection_class", object).__mro__:
            found = owner.__dict__.get(name)
            if isinstance(found, FunctionType):
                return found.__get__(self)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def _open(self) -> None:
        if self.closed:
            raise psycopg2.InterfaceError("connection already closed")

    def cursor(
        self,
        name: str | None = None,
        cursor_factory: Any = None,
        withhold: bool = False,
        scrollable: bool | None = None,
    ) -> _ReplayCursor:
        self._open()
        if name is not None:
            raise refusal(
                LIBRARY,
                f"cursor {name!r}",
                "server-side cursors are not replayed: use a client-side cursor (no name)",
            )
        return _ReplayCursor(self, cursor_factory or self.cursor_factory or self._default_cursor)

    def commit(self) -> None:
        self._open()

    def rollback(self) -> None:
        self._open()

    def close(self) -> None:
        self.closed = 1
        self.info.transaction_status = psycopg2.extensions.TRANSACTION_STATUS_UNKNOWN

    def reset(self) -> None:
        self._open()

    def set_session(self, *args: Any, **kwargs: Any) -> None:
        self._open()
        for name in ("isolation_level", "readonly", "deferrable", "autocommit"):
            if name in kwargs:
                setattr(self, name, kwargs[name])

    def set_isolation_level(self, level: int) -> None:
        self._open()
        self.isolation_level = level

    def set_client_encoding(self, encoding: str) -> None:
        self._open()
        self.encoding = encoding

    def get_transaction_status(self) -> int:
        return self.info.transaction_status

    def get_backend_pid(self) -> int:
        return 0

    def get_parameter_status(self, name: str) -> None:
        return None

    def get_dsn_parameters(self) -> dict[str, str]:
        return dict(self.info.dsn_parameters)

    def cancel(self) -> None:
        pass

    def poll(self) -> int:
        return psycopg2.extensions.POLL_OK

    def isexecuting(self) -> bool:
        return False

    def __enter__(self) -> _ReplayConnection:
        self._open()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        pass  # psycopg2 ends the transaction and leaves the connection open

    # ---- refused
    def lobject(self, *args: Any, **kwargs: Any) -> Any:
        raise refusal(LIBRARY, "lobject", "large objects are not replayed")

    def tpc_begin(self, xid: Any) -> None:
        raise refusal(LIBRARY, "tpc_begin", "two-phase commits are not replayed")


# --------------------------------------------------------------------------- opening
def _opening() -> str:
    return f"connect {PSYCOPG2}"


def _connect(wrapped: Callable[..., Any], instance: Any, args: tuple, kwargs: dict) -> Any:
    """A stand-in for each connection opened in a replay session; SQLAlchemy's, inside its
    ``outer_call()``, and any outside every session, are psycopg2's own."""
    if in_outer_call() or _session(_opening) is None:
        return wrapped(*args, **kwargs)
    if _psycopg2.asynchronous(kwargs):
        raise refusal(
            LIBRARY,
            _opening(),
            "asynchronous psycopg2 connections (aiopg) are not replayed; nothing was opened",
        )
    dsn = args[0] if args else kwargs.get("dsn", "")
    return _ReplayConnection(dsn, kwargs.get("connection_factory"))


_SEAMS = ((psycopg2, "_connect", _connect),)


def install() -> None:
    wrapper_layers.install_all(_SEAMS, layer="replay")


def uninstall() -> None:
    wrapper_layers.uninstall_all(_SEAMS, layer="replay")
