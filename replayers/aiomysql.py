"""aiomysql replay: connections that open no socket, statements answered from the cassette.

In a replay session, ``Connection._connect`` (what ``aiomysql.connect`` and ``create_pool``
await) opens nothing, and each statement awaited through ``Connection.query`` is answered
from the cassette as :mod:`._mysql` says; ``commit``, ``rollback``, ``begin``, ``autocommit``
and ``ping`` send nothing.
"""

from __future__ import annotations

from typing import Any

import aiomysql.connection

from timetracer_otel import _mysql, wrapper_layers

from ._mysql import async_seams

__all__ = ["install", "uninstall"]

LIBRARY = "aiomysql"


def _opened(connection: Any) -> None:
    connection._reader = connection._writer = _mysql.Unconnected()  # open, as a connected one


_SEAMS = async_seams(_mysql.AIOMYSQL_DRIVER, aiomysql.connection.Connection, "_connect", _opened)


def install() -> None:
    wrapper_layers.install_all(_SEAMS, layer="replay")


def uninstall() -> None:
    wrapper_layers.uninstall_all(_SEAMS, layer="replay")
