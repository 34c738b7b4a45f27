"""aiomysql replay: connections that open no socket, statements answered from the cassette.

In a replay session, ``Connection._connect`` (what ``aiomysql.connect`` and ``create_pool``
await) opens nothing, and each statement awaited through ``Connection.query`` is answered
from the cassette as :mod:`._mysql` says; ``commit``, ``rollback``, ``begin``, ``autocommit``
and ``ping`` send nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiomysql.connection

from timetracer_otel import _mysql, wrapper_layers
from timetracer_otel.protocols.sql import AIOMYSQL

from ._mysql import LIVE, answer, opens_nothing

__all__ = ["install", "uninstall"]

LIBRARY = "aiomysql"


async def _query(wrapped: Callable[..., Any], connection: Any, args: tuple, kwargs: dict) -> Any:
    answered = answer(LIBRARY, AIOMYSQL, connection, args, kwargs)
    return await wrapped(*args, **kwargs) if answered is LIVE else answered


async def _connect(wrapped: Callable[..., Any], connection: Any, args: tuple, kwargs: dict) -> Any:
    if not opens_nothing(LIBRARY, connection):
        return await wrapped(*args, **kwargs)
    connection._reader = connection._writer = _mysql.Unconnected()  # open, as a connected one
    return None


async def _unsent(wrapped: Callable[..., Any], connection: Any, args: tuple, kwargs: dict) -> Any:
    """A command outside queries (``COMMIT``, a ping) and the server's OK: nothing on a replay connection."""
    return None if _mysql.replaying(connection) else await wrapped(*args, **kwargs)


_SEAMS = (
    (aiomysql.connection.Connection, "query", _query),
    (aiomysql.connection.Connection, "_connect", _connect),
    (aiomysql.connection.Connection, "_execute_command", _unsent),
    (aiomysql.connection.Connection, "_read_ok_packet", _unsent),
)


def install() -> None:
    wrapper_layers.install_all(_SEAMS, layer="replay")


def uninstall() -> None:
    wrapper_layers.uninstall_all(_SEAMS, layer="replay")
