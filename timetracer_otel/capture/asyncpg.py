"""asyncpg capture: each statement an application runs on asyncpg directly, as a ``sql`` call.

The wrappers sit under OpenTelemetry's asyncpg wrappers on the same methods
(``Connection.fetch``/``fetchrow``/``fetchval``/``execute``/``executemany``/``fetchmany``
and ``PreparedStatement``'s), so each call is attached to the instrumentor's client span;
``Connection.prepare`` (its errors are the statement's) and ``Connection.fetchmany``, which
the instrumentor makes no span for, are recorded too, on the span current where they are made.
Pools and transactions need nothing of their own: ``pool.fetch`` runs ``Connection.fetch``,
``BEGIN``/``COMMIT``/``ROLLBACK`` are ``Connection.execute`` calls; the statements a pool runs
to reset a connection it takes back are its own, not recorded.

A call's request is :func:`~timetracer_otel.protocols.sql.asyncpg_request`'s; its response the
rows as asyncpg decoded them (their column names as the description), the status string of an
``execute``, or the error's PostgreSQL fields. ``fetchval`` is recorded with its row, run as
``fetchrow`` (what asyncpg sends for both), so the column's name is known to the redaction.
Statements SQLAlchemy runs on asyncpg are SQLAlchemy's calls: this capture stands aside
(:func:`~timetracer_otel._recording.in_outer_call`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import asyncpg.connection
import asyncpg.prepared_stmt

from timetracer_otel import wrapper_layers
from timetracer_otel._diagnostics import guarded
from timetracer_otel._recording import (
    ProtocolCall,
    current_recording,
    exception_info,
    in_outer_call,
    outer_call,
)
from timetracer_otel.protocols.sql import (
    ASYNCPG_METHODS,
    ASYNCPG_STATEMENT_METHODS,
    asyncpg_arguments,
    asyncpg_request,
    error_attributes,
    snapshot,
)

__all__ = ["install", "uninstall"]

LIBRARY = "asyncpg"
_Connection = asyncpg.connection.Connection
_Statement = asyncpg.prepared_stmt.PreparedStatement


def _rows(records: list[Any]) -> dict[str, Any]:
    return {
        "description": [[name] for name in records[0].keys()] if records else None,
        "rowcount": len(records),
        "lastrowid": None,
        "rows": [list(snapshot(tuple(record.values()))) for record in records],
    }


def _response(method: str, result: Any) -> dict[str, Any]:
    """What the cassette keeps of ``method``'s result (for ``fetchval``, the row it was taken from)."""
    if method in ("fetch", "fetchmany"):
        return _rows(result)
    if method in ("fetchrow", "fetchval"):
        return _rows([] if result is None else [result])
    if method == "prepare":
        return {
            "description": [[attribute.name] for attribute in result.get_attributes()] or None,
            "rowcount": -1,
            "lastrowid": None,
        }
    response: dict[str, Any] = {"description": None, "rowcount": -1, "lastrowid": None}
    if isinstance(result, str):
        response["status"] = result
    return response


def _run(
    owner: type, method: str, wrapped: Callable[..., Any], instance: Any
) -> Callable[..., Any]:
    """What runs the call: ``fetchval`` as the library's own ``fetchrow``, returning the row."""
    if method != "fetchval":
        return wrapped
    fetchrow = wrapper_layers.original(owner, "fetchrow")
    return lambda *args, **kwargs: fetchrow(instance, *args, **kwargs)


def _capture(owner: type, method: str) -> Callable[..., Any]:
    prepared = owner is _Statement

    async def capture(wrapped: Callable[..., Any], instance: Any, args: tuple, kwargs: dict) -> Any:
        recording = None if in_outer_call() else current_recording()
        if recording is None:
            return await wrapped(*args, **kwargs)
        call = None
        with guarded("asyncpg.request"):
            args, kwargs = asyncpg_arguments(method, args, kwargs, prepared)
            statement = instance.get_query() if prepared else None
            call = ProtocolCall("sql", LIBRARY, asyncpg_request(method, args, kwargs, statement))
            recording.add_call(call)
        column = kwargs.pop("column", 0) if method == "fetchval" else 0
        try:
            result = await _run(owner, method, wrapped, instance)(*args, **kwargs)
        except Exception as exc:
            if call is not None:
                with guarded("asyncpg.error"):
                    call.error = exception_info(exc)
                    call.response = {"dbapi_error": None, "error_attributes": error_attributes(exc)}
            raise
        if call is not None:
            with guarded("asyncpg.response"):
                call.response = _response(method, result)
        if method == "fetchval":
            return None if result is None else result[column]
        return result

    return capture


async def _housekeeping(
    wrapped: Callable[..., Any], instance: Any, args: tuple, kwargs: dict
) -> Any:
    """``Connection.reset``: the pool's own statements on release, no call of the application's
    (replay's pool runs none)."""
    with outer_call():
        return await wrapped(*args, **kwargs)


def _methods() -> list[tuple[type, str]]:
    return [(_Connection, method) for method in ASYNCPG_METHODS] + [
        (_Statement, method) for method in ASYNCPG_STATEMENT_METHODS
    ]


def install() -> None:
    for owner, method in _methods():
        wrapper_layers.install(owner, method, _capture(owner, method))
    wrapper_layers.install(_Connection, "reset", _housekeeping)


def uninstall() -> None:
    for owner, method in _methods():
        wrapper_layers.uninstall(owner, method)
    wrapper_layers.uninstall(_Connection, "reset")
