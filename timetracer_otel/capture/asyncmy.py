"""asyncmy capture: each statement an application runs on asyncmy directly, as a ``sql`` call.

asyncmy speaks PyMySQL's protocol on asyncio, as aiomysql does, and is what Tortoise ORM's and
``databases``' MySQL backends take when it is installed: every statement goes through the
connection's ``query``, recorded as :mod:`.aiomysql` records aiomysql's, under the dialect
``mysql+asyncmy``. Statements asyncmy runs as server-side prepared statements (only with a
statement cache, ``stmt_cache_size`` above its default 0) do not pass there: they are not
recorded (a warning says so, once).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import asyncmy.connection

from timetracer_otel import _mysql, wrapper_layers
from timetracer_otel._diagnostics import logger
from timetracer_otel._recording import current_recording

from ._mysql import async_seams

__all__ = ["install", "uninstall"]

LIBRARY = "asyncmy"


@functools.cache
def _warn_unrecorded() -> None:
    logger.warning(
        "asyncmy runs statements with parameters as prepared statements on connections with"
        " a statement cache (stmt_cache_size): those are not recorded; leave it at 0 to record them"
    )


async def _preparing(wrapped: Callable[..., Any], connection: Any, args: tuple, kw: dict) -> Any:
    if current_recording() is not None:
        _warn_unrecorded()
    return await wrapped(*args, **kw)


_SEAMS = (
    *async_seams(_mysql.ASYNCMY_DRIVER, asyncmy.connection.Connection, "connect"),
    (asyncmy.connection.Connection, "_acquire_cached_statement", _preparing),
)


def install() -> None:
    wrapper_layers.install_all(_SEAMS)


def uninstall() -> None:
    wrapper_layers.uninstall_all(_SEAMS)
