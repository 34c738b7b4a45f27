"""What psycopg2's capture and replay share: a query as text, and values quoted, without a connection.

psycopg2 renders ``psycopg2.sql`` compositions and quotes values with a live connection; replay
has none. Both sides render a statement here, so a recorded one and its replay match. Values
are quoted as PostgreSQL's defaults have them (UTF-8, ``standard_conforming_strings`` on):
exactly what psycopg2's ``mogrify`` gives on such a server, which a replayed ``mogrify`` (and
``psycopg2.extras.execute_values``, built on it) gives too.
"""

from __future__ import annotations

from typing import Any

import psycopg2.extensions
import psycopg2.extras
import psycopg2.sql

__all__ = ["DIAGNOSTICS", "asynchronous", "literal", "mogrified", "statement"]

# What an error's ``diag`` holds: the server's diagnostics (``constraint_name``, ``message_detail``, ...)
DIAGNOSTICS = tuple(
    name for name in dir(psycopg2.extensions.Diagnostics) if not name.startswith("_")
)


def statement(query: Any) -> Any:
    """A query as text: bytes decoded, a ``psycopg2.sql`` composition rendered."""
    if isinstance(query, (bytes, bytearray, memoryview)):
        return bytes(query).decode("utf-8", "replace")
    if isinstance(query, psycopg2.sql.Composable):
        return _rendered(query)
    return query


def _rendered(part: psycopg2.sql.Composable) -> str:
    if isinstance(part, psycopg2.sql.Composed):
        return "".join(_rendered(each) for each in part.seq)
    if isinstance(part, psycopg2.sql.SQL):
        return part.string
    if isinstance(part, psycopg2.sql.Identifier):
        return ".".join('"' + name.replace('"', '""') + '"' for name in part.strings)
    if isinstance(part, psycopg2.sql.Placeholder):
        return "%s" if part.name is None else f"%({part.name})s"
    if isinstance(part, psycopg2.sql.Literal):
        return literal(part.wrapped).decode("utf-8", "replace")
    return str(part)


def literal(value: Any) -> bytes:
    """``value`` as psycopg2 quotes it into a statement."""
    if isinstance(value, str):
        return b"'" + value.replace("'", "''").encode() + b"'"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return b"'\\x" + bytes(value).hex().encode() + b"'::bytea"
    if isinstance(value, list):
        if not value:
            return b"'{}'"
        return b"ARRAY[" + b",".join(map(literal, value)) + b"]"
    if isinstance(value, tuple):
        return b"(" + b", ".join(map(literal, value)) + b")"
    if isinstance(value, psycopg2.extras.Json):
        return literal(value.dumps(value.adapted))
    return psycopg2.extensions.adapt(value).getquoted()


def mogrified(query: Any, parameters: Any) -> bytes:
    """What ``cursor.mogrify(query, parameters)`` gives (see :func:`literal`)."""
    text = statement(query)
    template = text.encode() if isinstance(text, str) else bytes(text)
    if parameters is None:
        return template
    if isinstance(parameters, dict):
        return template % {str(name).encode(): literal(value) for name, value in parameters.items()}
    return template % tuple(literal(value) for value in parameters)


def asynchronous(kwargs: dict[str, Any]) -> bool:
    """Whether ``psycopg2._connect(**kwargs)`` opens an asynchronous connection (aiopg's), whose
    statements are answered later, through ``poll()``: neither recorded nor replayed."""
    return bool(kwargs.get("async") or kwargs.get("async_"))
