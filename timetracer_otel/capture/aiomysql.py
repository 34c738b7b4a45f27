"""aiomysql capture: each statement an application runs on aiomysql directly, as a ``sql`` call.

aiomysql is PyMySQL's protocol on asyncio: every statement reaches the server through the
connection's ``query``, awaited in the application's task. One call each, under the dialect
``mysql+aiomysql``, recorded as :mod:`.pymysql` records PyMySQL's (its connections' own set-up
statements, and what SQLAlchemy runs on aiomysql, are not recorded).
"""

from __future__ import annotations

import aiomysql.connection

from timetracer_otel import _mysql, wrapper_layers

from ._mysql import async_seams

__all__ = ["install", "uninstall"]

LIBRARY = "aiomysql"

_SEAMS = async_seams(_mysql.AIOMYSQL_DRIVER, aiomysql.connection.Connection, "_connect")


def install() -> None:
    wrapper_layers.install_all(_SEAMS)


def uninstall() -> None:
    wrapper_layers.uninstall_all(_SEAMS)
