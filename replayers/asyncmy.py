"""asyncmy replay: connections that open no socket, statements answered from the cassette.

In a replay session, ``Connection.connect`` (what ``asyncmy.connect`` and ``create_pool``
await) opens nothing, and each statement awaited through ``Connection.query`` is answered
from the cassette as :mod:`._mysql` says, the recorded result left as asyncmy's own
``MySQLResult``; ``commit``, ``rollback``, ``begin``, ``autocommit``, ``ping`` and closing
send nothing. A replay connection runs no statement as a prepared statement (its statement
cache, if any, is passed by), and ``prepare()`` is refused: prepared statements are not
recorded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import asyncmy.connection

from timetracer_otel import _mysql, wrapper_layers

from ._mysql import async_seams, sends_nothing
from .session import refusal

__all__ = ["install", "uninstall"]

LIBRARY = "asyncmy"


def _opened(connection: Any) -> None:
    """Open, as a connected one is to asyncmy and its pool: a transport, a protocol that has seen no end."""
    connection._transport = _mysql.Unconnected()
    protocol: Any = asyncmy.connection._MySQLProtocol  # type: ignore[attr-defined]  # not in its stubs
    connection._proto = protocol(connection._loop)
    connection._connected = True


def _result(connection: Any, answer: dict[str, Any]) -> Any:
    """The recorded answer as asyncmy's ``MySQLResult``: its connections hold no other kind."""
    recorded = _mysql.RecordedResult(answer)
    result: Any = asyncmy.connection.MySQLResult(connection)
    result.affected_rows = recorded.affected_rows
    result.insert_id = recorded.insert_id or 0
    result.description = recorded.description
    result.field_count = recorded.field_count
    result.fields = recorded.fields
    result.rows = recorded.rows
    return result


async def _closing(wrapped: Callable[..., Any], connection: Any, args: tuple, kw: dict) -> Any:
    """``ensure_closed``: a replay connection closes with no QUIT sent."""
    if not _mysql.replaying(connection):
        return await wrapped(*args, **kw)
    connection.close()
    return None


async def _prepare(wrapped: Callable[..., Any], connection: Any, args: tuple, kw: dict) -> Any:
    if not _mysql.replaying(connection):
        return await wrapped(*args, **kw)
    query = args[0] if args else kw.get("query", "")
    raise refusal(
        LIBRARY,
        f"prepare {_mysql.statement_of(query, connection)}",
        "prepared statements are not recorded, so not replayed",
    )


_CONNECTION = asyncmy.connection.Connection
_SEAMS = (
    *async_seams(_mysql.ASYNCMY_DRIVER, _CONNECTION, "connect", _opened, _result),
    (_CONNECTION, "ensure_closed", _closing),
    # no cached prepared statement: a replay connection's statements take ``query``, answered
    (_CONNECTION, "_acquire_cached_statement", sends_nothing),
    (_CONNECTION, "prepare", _prepare),
)


def install() -> None:
    wrapper_layers.install_all(_SEAMS, layer="replay")


def uninstall() -> None:
    wrapper_layers.uninstall_all(_SEAMS, layer="replay")
