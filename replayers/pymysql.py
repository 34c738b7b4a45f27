"""PyMySQL replay: connections that open no socket, statements answered from the cassette.

In a replay session, ``Connection.connect`` (what ``pymysql.connect`` and every pool call) opens
nothing, and each statement sent through ``Connection.query`` is answered from the cassette as
:mod:`._mysql` says; ``commit``, ``rollback``, ``begin``, ``autocommit`` and ``ping`` send nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pymysql.connections

from timetracer_otel import _mysql, wrapper_layers

from ._mysql import LIVE, answer, opens_nothing

__all__ = ["install", "uninstall"]

LIBRARY = "pymysql"


def _query(wrapped: Callable[..., Any], connection: Any, args: tuple, kwargs: dict) -> Any:
    answered = answer(_mysql.PYMYSQL_DRIVER, connection, args, kwargs)
    return wrapped(*args, **kwargs) if answered is LIVE else answered


def _connect(wrapped: Callable[..., Any], connection: Any, args: tuple, kwargs: dict) -> Any:
    if not opens_nothing(LIBRARY, connection):
        return wrapped(*args, **kwargs)
    connection._sock = _mysql.Unconnected()  # open, as a connected one
    connection._rfile = None
    return None


def _unsent(wrapped: Callable[..., Any], connection: Any, args: tuple, kwargs: dict) -> Any:
    """A command outside queries (``COMMIT``, a ping) and the server's OK: nothing on a replay connection."""
    return None if _mysql.replaying(connection) else wrapped(*args, **kwargs)


_SEAMS = (
    (pymysql.connections.Connection, "query", _query),
    (pymysql.connections.Connection, "connect", _connect),
    (pymysql.connections.Connection, "_execute_command", _unsent),
    (pymysql.connections.Connection, "_read_ok_packet", _unsent),
)


def install() -> None:
    wrapper_layers.install_all(_SEAMS, layer="replay")


def uninstall() -> None:
    wrapper_layers.uninstall_all(_SEAMS, layer="replay")
