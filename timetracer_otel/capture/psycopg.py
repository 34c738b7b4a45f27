"""psycopg capture: each statement an application runs on psycopg 3 directly, as a ``sql`` call.

The wrappers sit on ``Cursor.execute``/``executemany`` (and ``AsyncCursor``'s), which the
cursor class OpenTelemetry's instrumentor gives every connection calls from inside its span,
so each call is tied to the instrumentor's client span. ``Connection.execute`` runs a cursor's
``execute``, so it is one call too. A client-side cursor holds every row of its result once
``execute`` returns: the call keeps them all then, as plain tuples read with the cursor's own
loaders, whatever the row factory makes of them (replay builds the rows with the application's
row factory again). Every result set of the call is kept (``executemany(..., returning=True)``).

A call's request is :func:`~timetracer_otel.protocols.sql.psycopg_request`'s; its response the
rows with their column names and type OIDs, the row count and the command status, or the
error's class and its PostgreSQL diagnostics (SQLSTATE, constraint, ...). Statements
SQLAlchemy runs on psycopg are SQLAlchemy's calls: this capture stands aside
(:func:`~timetracer_otel._recording.in_outer_call`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import psycopg.adapt
import psycopg.errors
from psycopg.pq import ExecStatus

from timetracer_otel import wrapper_layers
from timetracer_otel._diagnostics import guarded
from timetracer_otel._recording import (
    ProtocolCall,
    current_recording,
    exception_info,
    in_outer_call,
)
from timetracer_otel.protocols.sql import error_attributes, psycopg_request, snapshot

__all__ = ["install", "uninstall"]

LIBRARY = "psycopg"
_CURSORS = (psycopg.Cursor, psycopg.AsyncCursor)
_OPERATIONS = ("execute", "executemany")


def _arguments(operation: str, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """The call's arguments with ``executemany``'s parameter sets made a list, so they can be both recorded and sent."""
    if operation != "executemany":
        return args, kwargs
    if len(args) > 1:
        return (args[0], list(args[1]), *args[2:]), kwargs
    if "params_seq" in kwargs:
        return args, {**kwargs, "params_seq": list(kwargs["params_seq"])}
    return args, kwargs


def _request(operation: str, args: tuple, kwargs: dict) -> dict[str, Any]:
    query = args[0] if args else kwargs.get("query")
    name = "params_seq" if operation == "executemany" else "params"
    parameters = args[1] if len(args) > 1 else kwargs.get(name)
    return psycopg_request(operation, query, parameters)


def _result(cursor: Any, result: Any, encoding: str) -> dict[str, Any]:
    """One result set as the cassette keeps it: column names and type OIDs, rows as tuples, status."""
    tuples = result.command_tuples
    kept: dict[str, Any] = {"description": None, "rowcount": -1 if tuples is None else tuples}
    status = result.command_status
    if status is not None:
        kept["status"] = status.decode(encoding)
    if result.status == ExecStatus.TUPLES_OK:
        kept["description"] = [
            [result.fname(i).decode(encoding), result.ftype(i)] for i in range(result.nfields)
        ]
        loader = psycopg.adapt.Transformer(cursor)
        loader.set_pgresult(result)
        kept["rows"] = [list(snapshot(row)) for row in loader.load_rows(0, result.ntuples, tuple)]
        kept["rowcount"] = result.ntuples
    return kept


def _response(cursor: Any) -> dict[str, Any]:
    """Every result set of the cursor's last operation; the first one's at the top."""
    encoding = cursor.connection.info.encoding
    results = [_result(cursor, result, encoding) for result in cursor._results]
    response: dict[str, Any] = {
        "description": None,
        "rowcount": -1,
        **(results[0] if results else {}),
    }
    response["rowcount"] = cursor.rowcount
    response["lastrowid"] = None
    if len(results) > 1:
        response["results"] = results
    return response


def diagnostics(exc: BaseException) -> dict[str, Any]:
    """A psycopg error's plain attributes and PostgreSQL diagnostics (``sqlstate``, ``constraint_name``, ...)."""
    found = error_attributes(exc)
    if isinstance(exc, psycopg.Error):
        for field in psycopg.errors.DiagnosticField:
            value = getattr(exc.diag, field.name.lower(), None)
            if value is not None:
                found[field.name.lower()] = value
    return found


class _Call:
    """The call a cursor's ``execute``/``executemany`` makes, or None where nothing is recorded."""

    def __init__(self, operation: str) -> None:
        self.operation = operation
        self.call: ProtocolCall | None = None

    def begin(self, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        recording = None if in_outer_call() else current_recording()
        if recording is None:
            return args, kwargs
        with guarded("psycopg.request"):
            args, kwargs = _arguments(self.operation, args, kwargs)
            call = ProtocolCall("sql", LIBRARY, _request(self.operation, args, kwargs))
            recording.add_call(call)
            self.call = call
        return args, kwargs

    def failed(self, exc: BaseException) -> None:
        if self.call is not None:
            with guarded("psycopg.error"):
                self.call.error = exception_info(exc)
                self.call.response = {"dbapi_error": None, "error_attributes": diagnostics(exc)}

    def answered(self, cursor: Any) -> None:
        if self.call is not None:
            with guarded("psycopg.response"):
                self.call.response = _response(cursor)


def _capture(operation: str) -> Callable[..., Any]:
    def capture(wrapped: Callable[..., Any], instance: Any, args: tuple, kwargs: dict) -> Any:
        call = _Call(operation)
        args, kwargs = call.begin(args, kwargs)
        try:
            result = wrapped(*args, **kwargs)
        except Exception as exc:
            call.failed(exc)
            raise
        call.answered(instance)
        return result

    return capture


def _capture_async(operation: str) -> Callable[..., Any]:
    async def capture(wrapped: Callable[..., Any], instance: Any, args: tuple, kwargs: dict) -> Any:
        call = _Call(operation)
        args, kwargs = call.begin(args, kwargs)
        try:
            result = await wrapped(*args, **kwargs)
        except Exception as exc:
            call.failed(exc)
            raise
        call.answered(instance)
        return result

    return capture


def install() -> None:
    for operation in _OPERATIONS:
        wrapper_layers.install(psycopg.Cursor, operation, _capture(operation))
        wrapper_layers.install(psycopg.AsyncCursor, operation, _capture_async(operation))


def uninstall() -> None:
    for cursor in _CURSORS:
        for operation in _OPERATIONS:
            wrapper_layers.uninstall(cursor, operation)
