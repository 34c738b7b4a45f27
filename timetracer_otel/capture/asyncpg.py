"""asyncpg capture: each statement an application runs on asyncpg directly, as a ``sql`` call.

The wrappers sit under OpenTelemetry's asyncpg wrappers on the same methods
(``Connection.fetch``/``fetchrow``/``fetchval``/``execute``/``executemany``/``fetchmany``
and ``PreparedStatement``'s), so each call is attached to the instrumentor's client span;
``Connection.prepare`` (its errors are the statement's) and ``Connection.fetchmany``, which
the instrumentor makes no span for, are recorded too, on the span current where they are made.
A cursor (``conn.cursor(...)``, iterated or awaited) is one call: its rows as the application
fetched them (a streamed result, ``complete`` once it read them all; a ``forward()`` ends what is
kept). Pools and transactions need nothing of their own: ``pool.fetch`` runs ``Connection.fetch``,
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

from collections.abc import Callable, Generator
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
    asyncpg_arguments,
    asyncpg_methods,
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


# --------------------------------------------------------------------------- cursors
class _CursorRows:
    """A cursor's call: its rows kept as the application fetches them, until it ends or moves forward."""

    def __init__(self, call: ProtocolCall) -> None:
        self.call = call
        self.kept_all = True  # False once the application moved past rows it never saw

    @property
    def _response(self) -> dict[str, Any]:
        return self.call.response or {}

    def kept(self, records: list[Any]) -> None:
        if not self.kept_all or not records:
            return
        with guarded("asyncpg.cursor"):
            response = self._response
            if response.get("description") is None:
                response["description"] = [[name] for name in records[0].keys()]
            response["rows"].extend(list(snapshot(tuple(record.values()))) for record in records)

    def ended(self) -> None:
        with guarded("asyncpg.cursor"):
            self._response["complete"] = self.kept_all

    def skipped(self) -> None:
        self.kept_all = False

    def failed(self, exc: BaseException) -> None:
        with guarded("asyncpg.cursor"):
            self.call.error = exception_info(exc)
            if not self._response.get("rows"):
                self.call.response = {
                    "dbapi_error": None,
                    "error_attributes": error_attributes(exc),
                }


class _TeeCursor:
    """asyncpg's cursor, or its iterator, keeping what the application fetches through it."""

    def __init__(self, cursor: Any, rows: _CursorRows) -> None:
        self._cursor = cursor
        self._rows = rows

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)

    async def _run(self, awaitable: Any) -> Any:
        try:
            return await awaitable
        except StopAsyncIteration:
            self._rows.ended()
            raise
        except Exception as exc:
            self._rows.failed(exc)
            raise

    def __aiter__(self) -> _TeeCursor:
        return self

    async def __anext__(self) -> Any:
        record = await self._run(self._cursor.__anext__())
        self._rows.kept([record])
        return record

    async def fetch(self, n: int, **kwargs: Any) -> list[Any]:
        records = await self._run(self._cursor.fetch(n, **kwargs))
        self._rows.kept(records)
        if len(records) < n:
            self._rows.ended()
        return records

    async def fetchrow(self, **kwargs: Any) -> Any:
        record = await self._run(self._cursor.fetchrow(**kwargs))
        if record is None:
            self._rows.ended()
        else:
            self._rows.kept([record])
        return record

    async def forward(self, n: int, **kwargs: Any) -> int:
        self._rows.skipped()
        return await self._run(self._cursor.forward(n, **kwargs))


class _TeeCursorFactory:
    """What ``Connection.cursor()`` returns, iterated or awaited as asyncpg's, keeping the rows fetched."""

    def __init__(self, factory: Any, rows: _CursorRows) -> None:
        self._factory = factory
        self._rows = rows

    def __getattr__(self, name: str) -> Any:
        return getattr(self._factory, name)

    def __aiter__(self) -> _TeeCursor:
        return _TeeCursor(self._factory.__aiter__(), self._rows)

    def __await__(self) -> Generator[Any, None, _TeeCursor]:
        return self._open().__await__()

    async def _open(self) -> _TeeCursor:
        try:
            cursor = await self._factory
        except Exception as exc:
            self._rows.failed(exc)
            raise
        return _TeeCursor(cursor, self._rows)


def _cursor(wrapped: Callable[..., Any], instance: Any, args: tuple, kwargs: dict) -> Any:
    factory = wrapped(*args, **kwargs)
    recording = None if in_outer_call() else current_recording()
    if recording is None:
        return factory
    with guarded("asyncpg.request"):
        call = ProtocolCall("sql", LIBRARY, asyncpg_request("cursor", args, kwargs))
        call.response = {
            "description": None,
            "rowcount": -1,
            "lastrowid": None,
            "rows": [],
            "streamed": True,
            "complete": False,
        }
        recording.add_call(call)
        return _TeeCursorFactory(factory, _CursorRows(call))
    return factory


async def _housekeeping(
    wrapped: Callable[..., Any], instance: Any, args: tuple, kwargs: dict
) -> Any:
    """``Connection.reset``: the pool's own statements on release, no call of the application's
    (replay's pool runs none)."""
    with outer_call():
        return await wrapped(*args, **kwargs)


_METHODS = asyncpg_methods(_Connection, _Statement)


def install() -> None:
    for owner, method in _METHODS:
        wrapper_layers.install(owner, method, _capture(owner, method))
    wrapper_layers.install(_Connection, "reset", _housekeeping)
    wrapper_layers.install(_Connection, "cursor", _cursor)


def uninstall() -> None:
    for owner, method in _METHODS:
        wrapper_layers.uninstall(owner, method)
    wrapper_layers.uninstall(_Connection, "reset")
    wrapper_layers.uninstall(_Connection, "cursor")
