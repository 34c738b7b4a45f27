"""SQLAlchemy capture at the DBAPI seam: every cursor execution, with its result, as SQLAlchemy saw it.

Two wrappers, on classes, so engines created before the plugin was enabled are covered:

* ``DefaultExecutionContext.create_cursor``: while a request is recorded, the DBAPI
  cursor is handed to SQLAlchemy inside a tee. Each ``execute``/``executemany`` becomes
  one ``sql`` call: the statement and parameters exactly as the DBAPI received them,
  then ``description``, ``rowcount``, ``lastrowid`` and the rows (RETURNING rows too),
  or the DBAPI error. Rows are fetched right after the execution and served to
  SQLAlchemy from that buffer, the same row objects in the same order. Server-side and
  ``stream_results`` cursors are not fetched ahead: their rows are kept as the
  application fetches them.
* ``Engine.raw_connection``: each connection checked out for a recorded request becomes
  a ``connect`` call holding the dialect's connect-time state (server version, default
  schema, isolation level, ...), so replay can set up a dialect that never met its
  database.

What SQLAlchemy runs on the driver meanwhile (the statement, the checkout's probes, commit and
rollback) is inside :func:`~timetracer_otel._recording.outer_call`, so a driver recorded on its
own (asyncpg) does not record it a second time.

Engines the OpenTelemetry instrumentor did not see being created get its
``EngineTracer`` on first use, so their statements have client spans too; each call is
attached to its statement's span.
"""

from __future__ import annotations

import threading
import weakref
from collections import deque
from collections.abc import Iterator
from typing import Any

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.engine.default import DefaultDialect, DefaultExecutionContext
from sqlalchemy.engine.interfaces import Dialect

from timetracer_otel import _orm_order, wrapper_layers
from timetracer_otel._diagnostics import guarded
from timetracer_otel._recording import (
    ProtocolCall,
    TraceRecording,
    current_recording,
    exception_info,
    in_outer_call,
    outer_call,
)
from timetracer_otel.protocols.sql import (
    PLAIN,
    connect_request,
    error_attributes,
    snapshot,
    statement_request,
)

__all__ = [
    "install",
    "uninstall",
    "dialect_state",
]

LIBRARY = "sqlalchemy"


def _plain(value: Any) -> bool:
    return type(value) in PLAIN or (type(value) is tuple and all(_plain(item) for item in value))


def dialect_state(dialect: Dialect) -> dict[str, Any]:
    """The dialect's plain-valued attributes: after its first connection, what ``initialize()`` learnt.

    Not ``_has_events``: whether the dialect has event listeners belongs to this process.
    """
    return {
        name: value
        for name, value in vars(dialect).items()
        if _plain(value) and name != "_has_events"
    }


# dialect -> its state once connected: SQLAlchemy's pool runs ``initialize()`` once, at its first connection
_connected_states: weakref.WeakKeyDictionary[Dialect, dict[str, Any]] = weakref.WeakKeyDictionary()


def _connected_state(dialect: Dialect) -> dict[str, Any]:
    """:func:`dialect_state` after a connection was checked out: read once per dialect, a copy each time."""
    state = _connected_states.get(dialect)
    if state is None:
        state = _connected_states[dialect] = dialect_state(dialect)
    return dict(state)


def _description(description: Any) -> list[list[Any]] | None:
    """The cursor description as 7-item lists of plain values (psycopg's ``Column`` objects included)."""
    if description is None:
        return None
    return [
        [item if type(item) in PLAIN else repr(item) for item in tuple(column)[:7]]
        for column in description
    ]


def error_response(exc: BaseException, dialect: Dialect) -> dict[str, Any] | None:
    """What replay needs besides the type and message: the PEP 249 class it derives from, its plain
    attributes, and the driver's own error it was raised from (``__cause__``: SQLAlchemy's asyncpg
    adapter raises its IntegrityError from asyncpg's UniqueViolationError, which apps inspect)."""
    dbapi = getattr(dialect, "loaded_dbapi", None)
    standard = next(
        (cls.__name__ for cls in type(exc).__mro__ if getattr(dbapi, cls.__name__, None) is cls),
        None,
    )
    attributes = error_attributes(exc)
    cause = exc.__cause__
    if standard is None and not attributes and cause is None:
        return None
    response: dict[str, Any] = {"dbapi_error": standard, "error_attributes": attributes}
    if isinstance(cause, Exception):
        response["cause"] = {**exception_info(cause), "attributes": error_attributes(cause)}
    return response


# --------------------------------------------------------------------------- the tee cursor
class _TeeCursor:
    """A DBAPI cursor that records what goes through it; everything else reaches the real cursor."""

    __slots__ = ("_cursor", "_recording", "_context", "_streams", "_buffer", "_sink", "_response")

    def __init__(
        self, cursor: Any, recording: TraceRecording, context: DefaultExecutionContext
    ) -> None:
        object.__setattr__(self, "_cursor", cursor)
        object.__setattr__(self, "_recording", recording)
        object.__setattr__(self, "_context", context)
        options = context.execution_options
        streams = bool(
            context._is_server_side or options.get("stream_results") or options.get("yield_per")
        )
        object.__setattr__(self, "_streams", streams)
        object.__setattr__(self, "_buffer", None)  # rows fetched ahead, served to SQLAlchemy
        # the response of a streamed result, filled as rows are fetched
        object.__setattr__(self, "_sink", None)
        object.__setattr__(self, "_response", None)  # the last execution's response

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._cursor, name, value)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.fetchone, None)

    def execute(self, statement: Any, *args: Any, **kwargs: Any) -> Any:
        call = self._begin("execute", statement, args[0] if args else None)
        return self._run(call, self._cursor.execute, statement, *args, **kwargs)

    def executemany(self, statement: Any, parameters: Any, *args: Any, **kwargs: Any) -> Any:
        parameters = parameters if isinstance(parameters, (list, tuple)) else list(parameters)
        call = self._begin("executemany", statement, parameters)
        return self._run(call, self._cursor.executemany, statement, parameters, *args, **kwargs)

    def _begin(self, operation: str, statement: Any, parameters: Any) -> ProtocolCall | None:
        object.__setattr__(self, "_buffer", None)
        object.__setattr__(self, "_sink", None)
        object.__setattr__(self, "_response", None)
        with guarded("sqlalchemy.request"):
            call = ProtocolCall(
                "sql",
                LIBRARY,
                statement_request(self._context.dialect, operation, statement, parameters),
            )
            self._recording.add_call(call)
            # the instrumentor's span, started but never current
            span = getattr(self._context, "_otel_span", None)
            span_context = span.get_span_context() if span is not None else None
            if span_context is not None and span_context.trace_id == self._recording.trace_id:
                call.span_id = span_context.span_id
            return call
        return None

    def _run(self, call: ProtocolCall | None, method: Any, *args: Any, **kwargs: Any) -> Any:
        if call is None:
            return method(*args, **kwargs)
        try:
            with outer_call():
                result = method(*args, **kwargs)
            rows = (
                self._cursor.fetchall()
                if self._cursor.description is not None and not self._streams
                else None
            )
        except Exception as exc:
            with guarded("sqlalchemy.error"):
                call.error = exception_info(exc)
                call.response = error_response(exc, self._context.dialect)
            raise
        object.__setattr__(self, "_buffer", None if rows is None else deque(rows))
        with guarded("sqlalchemy.response"):
            call.response = self._answer(rows)
            object.__setattr__(self, "_response", call.response)
        # psycopg/sqlite3 return the cursor for chaining
        return self if result is self._cursor else result

    def close(self) -> None:
        """Close; a driver that resets ``rowcount`` on close (psycopg) is recorded doing so.
        One whose closed cursor has no ``rowcount`` left (SQLAlchemy's aiosqlite adapter drops
        the cursor it reads it from) keeps the recorded one."""
        self._cursor.close()
        response = self._response
        if response is None:
            return
        try:
            after = self._cursor.rowcount
        except AttributeError:
            return
        with guarded("sqlalchemy.close"):
            if after != response["rowcount"]:
                response["rowcount_after_close"] = after

    def _answer(self, rows: list[Any] | None) -> dict[str, Any]:
        cursor = self._cursor
        response: dict[str, Any] = {
            "description": _description(cursor.description),
            "rowcount": cursor.rowcount,
            "lastrowid": getattr(cursor, "lastrowid", None),
        }
        if rows is not None:
            response["rows"] = [list(snapshot(tuple(row))) for row in rows]
        # psycopg2's named cursors have a description only once a row is fetched
        elif self._streams:
            response.update(rows=[], streamed=True, complete=False)
            object.__setattr__(self, "_sink", response)
        return response

    def _kept(self, rows: list[Any], finished: bool) -> list[Any]:
        """Rows of a streamed result, as the application fetched them."""
        sink = self._sink
        if sink is not None:
            with guarded("sqlalchemy.rows"):
                sink["rows"].extend(list(snapshot(tuple(row))) for row in rows)
                sink["complete"] = sink["complete"] or finished
                if sink["description"] is None:
                    sink["description"] = _description(self._cursor.description)
        return rows

    def fetchone(self) -> Any:
        if self._buffer is not None:
            return self._buffer.popleft() if self._buffer else None
        row = self._cursor.fetchone()
        self._kept([] if row is None else [row], row is None)
        return row

    def fetchmany(self, *args: Any, **kwargs: Any) -> list[Any]:
        if self._buffer is not None:
            size = args[0] if args else kwargs.get("size", self._cursor.arraysize)
            return [self._buffer.popleft() for _ in range(min(size, len(self._buffer)))]
        rows = self._cursor.fetchmany(*args, **kwargs)
        return self._kept(rows, not rows)

    def fetchall(self) -> list[Any]:
        if self._buffer is not None:
            rows = list(self._buffer)
            self._buffer.clear()
            return rows
        return self._kept(self._cursor.fetchall(), True)


# --------------------------------------------------------------------------- spans for every engine
_traced: weakref.WeakSet[Engine] = weakref.WeakSet()
_traced_lock = threading.Lock()
_instruments: dict[str, Any] = {}


def _engine_tracer_args() -> tuple[Any, Any]:
    """The tracer and connection-usage counter the instrumentor gives engines it traces."""
    if not _instruments:
        from opentelemetry import metrics, trace
        from opentelemetry.instrumentation.sqlalchemy import version
        from opentelemetry.semconv.metrics import MetricInstruments

        name = "opentelemetry.instrumentation.sqlalchemy"
        _instruments["tracer"] = trace.get_tracer(name, version.__version__)
        _instruments["usage"] = metrics.get_meter(name, version.__version__).create_up_down_counter(
            name=MetricInstruments.DB_CLIENT_CONNECTIONS_USAGE,
            unit="connections",
            description="The number of connections that are currently in state described by the state attribute.",
        )
    return _instruments["tracer"], _instruments["usage"]


def _ensure_spans(engine: Engine) -> None:
    """Give ``engine`` the instrumentor's span listeners if it has none (created before ``instrument()``)."""
    if engine in _traced:
        return
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer

    if not SQLAlchemyInstrumentor().is_instrumented_by_opentelemetry:
        return
    with _traced_lock:
        if engine in _traced:
            return
        listeners = engine.dispatch.before_cursor_execute
        if not any(isinstance(getattr(fn, "__self__", None), EngineTracer) for fn in listeners):
            tracer, usage = _engine_tracer_args()
            EngineTracer(tracer, engine, usage)
        _traced.add(engine)


# --------------------------------------------------------------------------- the wrappers
def _create_cursor(
    wrapped: Any, instance: DefaultExecutionContext, args: tuple, kwargs: dict
) -> Any:
    cursor = wrapped(*args, **kwargs)
    recording = current_recording()
    # inside a checkout: the dialect's own connect-time probes (``initialize()``), which
    # replay never sends, so they are not recorded
    return (
        cursor if recording is None or in_outer_call() else _TeeCursor(cursor, recording, instance)
    )


def _checkout(wrapped: Any, args: tuple, kwargs: dict) -> Any:
    with outer_call():
        return wrapped(*args, **kwargs)


def _outer(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    """What SQLAlchemy runs on the driver outside its statements, which replay never sends: the
    dialect's ``do_commit``/``do_rollback`` (COMMIT and ROLLBACK belong to SQLAlchemy's calls),
    its setting and resetting of a connection's isolation level (SQLite's ``PRAGMA
    read_uncommitted``), the pool's ``do_ping``, and ``Connection.get_isolation_level()`` (``SHOW
    TRANSACTION ISOLATION LEVEL``, which replay answers from the dialect). A driver recorded on its
    own stands aside."""
    with outer_call():
        return wrapped(*args, **kwargs)


def _raw_connection(wrapped: Any, instance: Engine, args: tuple, kwargs: dict) -> Any:
    # before the pool runs its connect listeners: none is added while they run
    with guarded("sqlalchemy.spans"):
        # an engine.execution_options() copy: its engine
        _ensure_spans(getattr(instance, "_proxied", instance))
    recording = current_recording()
    if recording is None:
        return wrapped(*args, **kwargs)
    call: ProtocolCall | None = None
    with guarded("sqlalchemy.connect"):
        call = ProtocolCall("sql", LIBRARY, connect_request(instance))
        recording.add_call(call)
    try:
        connection = _checkout(wrapped, args, kwargs)
    except Exception as exc:
        if call is not None:
            with guarded("sqlalchemy.connect"):
                call.error = exception_info(exc)
                call.response = error_response(exc, instance.dialect)
        raise
    if call is not None:
        with guarded("sqlalchemy.connect"):
            call.response = {"dialect_state": _connected_state(instance.dialect)}
    return connection


_HOUSEKEEPING = (
    "do_commit",
    "do_rollback",
    "_assert_and_set_isolation_level",
    "reset_isolation_level",
    "do_ping",
)


def install() -> None:
    _orm_order.install("capture")
    wrapper_layers.install(DefaultExecutionContext, "create_cursor", _create_cursor)
    wrapper_layers.install(Engine, "raw_connection", _raw_connection)
    for name in _HOUSEKEEPING:
        wrapper_layers.install(DefaultDialect, name, _outer)
    wrapper_layers.install(Connection, "get_isolation_level", _outer)


def uninstall() -> None:
    _orm_order.uninstall("capture")
    wrapper_layers.uninstall(DefaultExecutionContext, "create_cursor")
    wrapper_layers.uninstall(Engine, "raw_connection")
    for name in _HOUSEKEEPING:
        wrapper_layers.uninstall(DefaultDialect, name)
    wrapper_layers.uninstall(Connection, "get_isolation_level")
