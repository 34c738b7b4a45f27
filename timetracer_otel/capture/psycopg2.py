"""psycopg2 capture: each statement an application runs on psycopg2 directly, as a ``sql`` call.

psycopg2's connection and cursor are C types whose methods cannot be wrapped. ``psycopg2._connect``
(what ``psycopg2.connect`` and its pools call) is given a ``connection_factory`` of timetracer's,
mixed under the application's own (``RealDictConnection``, ``LoggingConnection``); its
``cursor()`` mixes timetracer's cursor under whatever cursor class is chosen (the
``cursor_factory`` of the call, of the connection, or OpenTelemetry's traced one, whose span
is then around the call). Each ``execute``, ``executemany`` and ``callproc`` is one call under
the dialect ``postgresql+psycopg2``: the statement as text (a ``psycopg2.sql`` composition
rendered, see :mod:`timetracer_otel._psycopg2`) and its parameters; the answer its
description (column names and type OIDs), ``rowcount``, ``lastrowid``, ``statusmessage``, and
every row of a client-side cursor, which holds them all once ``execute`` returns: read as
plain tuples before the application's row class (``RealDictRow``, ``DictRow``, namedtuples)
makes them its own, the cursor then rewound so the application reads them as before. A
server-side (named) cursor's rows stay on the server: its statement is recorded, its rows are
not. An error keeps its class, message, ``pgcode``/``pgerror`` and the server's diagnostics. What SQLAlchemy runs on
psycopg2 is SQLAlchemy's call: this capture stands aside (``in_outer_call``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg2
import psycopg2.extensions

from timetracer_otel import _psycopg2, wrapper_layers
from timetracer_otel._class_mixing import mixed
from timetracer_otel._diagnostics import guarded
from timetracer_otel._recording import ProtocolCall, current_recording, in_outer_call
from timetracer_otel.protocols.sql import psycopg2_request, snapshot

from ._dbapi import failed

__all__ = ["install", "uninstall"]

LIBRARY = "psycopg2"
_CURSOR: Any = psycopg2.extensions.cursor


def _run(
    cursor: _Cursor, operation: str, method: Callable[..., Any], query: Any, parameters: Any
) -> Any:
    """``method(query, parameters)``, the cursor's own statement, recorded when a request records."""
    recording = None if in_outer_call() else current_recording()
    if recording is None:
        return method(query, parameters)
    # an iterator is read once: by the recording and the driver alike
    if operation == "executemany":
        parameters = list(parameters)
    call = None
    with guarded("psycopg2.request"):
        request = psycopg2_request(operation, _psycopg2.statement(query), parameters)
        call = ProtocolCall("sql", LIBRARY, request)
        recording.add_call(call)
    try:
        result = method(query, parameters)
    except Exception as exc:
        _failed(call, exc)
        raise
    if call is not None:
        with guarded("psycopg2.response"):
            call.response = _answer(cursor)
    return result


def _failed(call: ProtocolCall | None, exc: Exception) -> None:
    """The error as every DB-API driver's, and the server's diagnostics psycopg2 gives it (``diag``)."""
    failed(call, exc, psycopg2)
    if call is not None and isinstance(call.response, dict):
        with guarded("psycopg2.error"):
            diagnostics = getattr(exc, "diag", None)
            found = {name: getattr(diagnostics, name, None) for name in _psycopg2.DIAGNOSTICS}
            if any(value is not None for value in found.values()):
                call.response["diagnostics"] = found


def _answer(cursor: _Cursor) -> dict[str, Any]:
    description = cursor.description
    columns = None if description is None else [[c.name, c.type_code] for c in description]
    answer: dict[str, Any] = {
        "description": columns,
        "rowcount": cursor.rowcount,
        "lastrowid": cursor.lastrowid,
    }
    if cursor.statusmessage is not None:
        answer["status"] = cursor.statusmessage
    if description is not None and cursor.name is None:
        answer["rows"] = _rows(cursor)
    return answer


def _rows(cursor: _Cursor) -> list[list[Any]]:
    """Every row of the cursor's result as plain values, read past its row class; the cursor rewound."""
    row_class = cursor.row_factory
    cursor.row_factory = None
    try:
        rows = _CURSOR.fetchall(cursor)
    finally:
        cursor.row_factory = row_class
        if cursor.rowcount > 0:
            _CURSOR.scroll(cursor, 0, "absolute")
    return [list(snapshot(row)) for row in rows]


class _Cursor(_CURSOR):
    """psycopg2's cursor with its statements in Python, recorded."""

    def execute(self, query: Any, vars: Any = None) -> Any:  # noqa: A002 - psycopg2's name
        return _run(self, "execute", super().execute, query, vars)

    def executemany(self, query: Any, vars_list: Any) -> Any:
        return _run(self, "executemany", super().executemany, query, vars_list)

    def callproc(self, procname: Any, parameters: Any = None) -> Any:
        return _run(self, "callproc", super().callproc, procname, parameters)


class _Connection(psycopg2.extensions.connection):
    """psycopg2's connection, each cursor it makes a :class:`_Cursor` of the class chosen."""

    def cursor(self, *args: Any, **kwargs: Any) -> Any:
        if len(args) > 1:  # cursor(name, cursor_factory, ...)
            args = (args[0], mixed(_Cursor, args[1] or self.cursor_factory or _CURSOR), *args[2:])
        else:
            chosen = kwargs.get("cursor_factory") or self.cursor_factory or _CURSOR
            kwargs = {**kwargs, "cursor_factory": mixed(_Cursor, chosen)}
        return super().cursor(*args, **kwargs)


def _connecting(wrapped: Callable[..., Any], instance: Any, args: tuple, kwargs: dict) -> Any:
    """``psycopg2._connect`` with :class:`_Connection` mixed into its ``connection_factory``."""
    if _psycopg2.asynchronous(kwargs):
        return wrapped(*args, **kwargs)
    chosen = kwargs.get("connection_factory") or psycopg2.extensions.connection
    return wrapped(*args, **{**kwargs, "connection_factory": mixed(_Connection, chosen)})


_SEAMS = ((psycopg2, "_connect", _connecting),)


def install() -> None:
    wrapper_layers.install_all(_SEAMS)


def uninstall() -> None:
    wrapper_layers.uninstall_all(_SEAMS)
