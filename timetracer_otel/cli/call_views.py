"""A non-HTTP call's request and response as a person reads them: a SQL statement with its
parameters and its rows as a table under the column names, a Redis command line, a Mongo
command without the driver's session fields, a gRPC method with its metadata and messages (each
as its JSON, its type name and bytes left out); every value as the Python value the application
got (``Decimal('12.50')`` shows as 12.50, typed ``Decimal``), decoded from the cassette's typed values.

A value that does not decode (a hostile or damaged cassette), or is too large to lay out, is shown
as the cassette's JSON instead, cut at the show limit.
"""

from __future__ import annotations

import pprint
from typing import Any, NamedTuple

from timetracer_otel.cassette.values import ValueDecodeError, decode_value

from .views import Shown, value_text

__all__ = ["Cell", "SqlResult", "CallView", "call_view"]

_MAX_ROWS = 200
_CELL_CHARS = 400
_PLAIN_TYPES = (str, int, float, bool, type(None))
# Fields pymongo adds to every command and reply: session and cluster bookkeeping, not the application's.
_MONGO_NOISE = frozenset(
    {"lsid", "txnNumber", "$clusterTime", "$db", "operationTime", "$readPreference", "signature"}
)


class Cell(NamedTuple):
    """One value of a result row: its text, and its Python type when JSON could not have held it."""

    text: str
    type: str


class SqlResult(NamedTuple):
    columns: list[str]
    rows: list[list[Cell]]
    more: int  # rows left out of the table (see the download)


class CallView(NamedTuple):
    """What the dashboard and ``show --payloads`` print of one non-HTTP call."""

    request: Shown  # the statement, the command line or the command document
    parameters: Shown | None  # SQL parameters
    result: SqlResult | None  # SQL rows, when the statement returned some
    response: Shown  # the reply (for SQL: rowcount and the rest of the cursor's state)


def _decoded(value: Any, limit: int | None) -> tuple[Any, Shown | None]:
    """The Python value ``value`` stands for, or (None, its JSON text) when it does not decode or is too large."""
    raw = value_text(value, limit)
    if raw.cut:
        return None, raw
    try:
        return decode_value(value), None
    # Decimal('x'), a huge timedelta
    except (
        ValueDecodeError,
        RecursionError,
        ValueError,
        TypeError,
        ArithmeticError,
    ):
        return None, raw


def _python_text(value: Any, limit: int | None) -> Shown:
    """``value`` (cassette form) laid out as Python: ``{'price': Decimal128('9.99'), ...}``."""
    decoded, raw = _decoded(value, limit)
    if raw is not None:
        return raw
    try:
        text = pprint.pformat(decoded, width=100, sort_dicts=False)
    except (RecursionError, ValueError):
        return value_text(value, limit)
    return Shown(text, False) if limit is None or len(text) <= limit else Shown(text[:limit], True)


def _cell(value: Any) -> Cell:
    """A decoded value in a table: text as it reads (``NULL`` for None, bytes as ``b'...'``) and its type."""
    try:
        if value is None:
            text = "NULL"
        elif isinstance(value, (bytes, bytearray, memoryview)):
            text = repr(bytes(value))
        elif isinstance(value, (list, tuple, dict, set, frozenset)):
            text = repr(value)
        else:
            text = str(value)
    except ValueError:  # an int beyond Python's 4,300 digits, alone or inside
        text = f"<int of {value.bit_length()} bits>" if isinstance(value, int) else "<not shown>"
    kind = "" if isinstance(value, _PLAIN_TYPES) else type(value).__name__
    return Cell(text if len(text) <= _CELL_CHARS else text[: _CELL_CHARS - 1] + "…", kind)


def _sql_result(response: dict[str, Any], limit: int | None) -> SqlResult | None:
    description, rows = response.get("description"), response.get("rows")
    if not isinstance(description, list) or not isinstance(rows, list):
        return None
    columns = [
        str(column[0]) if isinstance(column, list) and column else "?" for column in description
    ]
    decoded, raw = _decoded(rows, limit)
    if raw is not None or not isinstance(decoded, list):
        return None
    shown = [
        [_cell(value) for value in row] if isinstance(row, (list, tuple)) else [_cell(row)]
        for row in decoded[:_MAX_ROWS]
    ]
    return SqlResult(columns, shown, max(0, len(decoded) - _MAX_ROWS))


def _sql(request: dict[str, Any], response: Any, limit: int | None) -> CallView:
    if request.get("operation") == "connect":
        return CallView(
            Shown(f"connect {request.get('engine', request.get('dialect', ''))}", False),
            None,
            None,
            _python_text(response, limit),
        )
    statement = request.get("statement")
    text = statement if isinstance(statement, str) else ""
    shown_statement = (
        Shown(text, False) if limit is None or len(text) <= limit else Shown(text[:limit], True)
    )
    parameters = _python_text(request.get("parameters"), limit) if "parameters" in request else None
    result = _sql_result(response, limit) if isinstance(response, dict) else None
    rest = (
        {k: v for k, v in response.items() if k not in ("description", "rows") or result is None}
        if isinstance(response, dict)
        else response
    )
    return CallView(shown_statement, parameters, result, _python_text(rest, limit))


def _redis_line(command: Any, limit: int | None) -> str:
    if not isinstance(command, dict):
        return _python_text(command, limit).text
    args, _ = _decoded(command.get("args", []), limit)
    words = [str(command.get("command", "?"))]
    words += [
        value if isinstance(value, str) and value and " " not in value else repr(value)
        for value in (args or [])
    ]
    return " ".join(words)


def _redis(request: dict[str, Any], response: Any, limit: int | None) -> CallView:
    pipeline = request.get("pipeline")
    if isinstance(pipeline, list):
        head = "MULTI" if request.get("transaction") else "pipeline"
        lines = [
            head,
            *(_redis_line(command, limit) for command in pipeline),
            "EXEC" if request.get("transaction") else "end",
        ]
    else:
        lines = [_redis_line(request, limit)]
    text = "\n".join(lines)
    return CallView(
        Shown(text, False) if limit is None or len(text) <= limit else Shown(text[:limit], True),
        None,
        None,
        _python_text(response, limit),
    )


def _without_noise(value: Any) -> Any:
    return (
        {k: v for k, v in value.items() if k not in _MONGO_NOISE}
        if isinstance(value, dict)
        else value
    )


def _mongo(request: dict[str, Any], response: Any, limit: int | None) -> CallView:
    command = _without_noise(request.get("command"))
    if isinstance(response, dict):
        response = {k: _without_noise(v) for k, v in response.items()}
    return CallView(_python_text(command, limit), None, None, _python_text(response, limit))


def _grpc_messages(value: Any) -> Any:
    """A gRPC request or response with each message as its JSON (its bytes, if any, are the same message)."""
    if not isinstance(value, dict) or not isinstance(value.get("messages"), list):
        return value
    messages = [
        message.get("json", message) if isinstance(message, dict) else message
        for message in value["messages"]
    ]
    return {**value, "messages": messages}


def _grpc(request: dict[str, Any], response: Any, limit: int | None) -> CallView:
    return CallView(
        _python_text(_grpc_messages(request), limit),
        None,
        None,
        _python_text(_grpc_messages(response), limit),
    )


def call_view(call: dict[str, Any], limit: int | None = None) -> CallView:
    """A non-HTTP call laid out for reading; values cut at ``limit`` characters."""
    request, response = call.get("request"), call.get("response")
    if isinstance(request, dict):
        if call.get("protocol") == "sql":
            return _sql(request, response, limit)
        if call.get("protocol") == "redis":
            return _redis(request, response, limit)
        if call.get("protocol") == "mongo":
            return _mongo(request, response, limit)
        if call.get("protocol") == "grpc":
            return _grpc(request, response, limit)
    return CallView(value_text(request, limit), None, None, value_text(response, limit))
