"""aiomysql capture: each statement an application runs on aiomysql directly, as a ``sql`` call.

aiomysql is PyMySQL's protocol on asyncio: every statement reaches the server through the
connection's ``query``, awaited in the application's task. One call each, under the dialect
``mysql+aiomysql``, recorded as :mod:`.pymysql` records PyMySQL's (its connections' own set-up
statements, and what SQLAlchemy runs on aiomysql, are not recorded).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiomysql.connection

from timetracer_otel import _mysql, wrapper_layers
from timetracer_otel.protocols.sql import AIOMYSQL

from ._mysql import Query

__all__ = ["install", "uninstall"]

LIBRARY = "aiomysql"


async def _query(wrapped: Callable[..., Any], connection: Any, args: tuple, kwargs: dict) -> Any:
    query = Query(LIBRARY, AIOMYSQL, connection, args, kwargs)
    try:
        result = await wrapped(*args, **kwargs)
    except Exception as exc:
        query.failed(exc)
        raise
    query.answered(connection)
    return result


async def _connect(wrapped: Callable[..., Any], connection: Any, args: tuple, kwargs: dict) -> Any:
    with _mysql.setting_up(connection):
        return await wrapped(*args, **kwargs)


_SEAMS = (
    (aiomysql.connection.Connection, "query", _query),
    (aiomysql.connection.Connection, "_connect", _connect),
)


def install() -> None:
    wrapper_layers.install_all(_SEAMS)


def uninstall() -> None:
    wrapper_layers.uninstall_all(_SEAMS)
