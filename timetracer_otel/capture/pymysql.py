"""PyMySQL capture: each statement an application runs on PyMySQL directly, as a ``sql`` call.

Every statement reaches the server through ``Connection.query`` (a cursor's ``execute``, each
batch of an ``executemany``, ``callproc``'s ``SET`` and ``CALL``): one call each, under the
dialect ``mysql+pymysql``, its statement the text sent (parameters quoted in by PyMySQL), its
answer the result the cursor then reads (:func:`timetracer_otel._mysql.answer_of`), or the
error's class and arguments (``(1062, "Duplicate entry ...")``). Statements PyMySQL runs as it
connects (``sql_mode``, ``init_command``) are its own, and what SQLAlchemy runs on PyMySQL is
SQLAlchemy's: this capture stands aside for both (``in_outer_call``). An unbuffered query
(``SSCursor``) is recorded without its rows, which it reads later.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pymysql.connections

from timetracer_otel import _mysql, wrapper_layers

from ._mysql import Query

__all__ = ["install", "uninstall"]

LIBRARY = "pymysql"


def _query(wrapped: Callable[..., Any], connection: Any, args: tuple, kwargs: dict) -> Any:
    query = Query(_mysql.PYMYSQL_DRIVER, connection, args, kwargs)
    try:
        result = wrapped(*args, **kwargs)
    except Exception as exc:
        query.failed(exc)
        raise
    query.answered(connection)
    return result


def _connect(wrapped: Callable[..., Any], connection: Any, args: tuple, kwargs: dict) -> Any:
    with _mysql.setting_up(connection):
        return wrapped(*args, **kwargs)


_SEAMS = (
    (pymysql.connections.Connection, "query", _query),
    (pymysql.connections.Connection, "connect", _connect),
)


def install() -> None:
    wrapper_layers.install_all(_SEAMS)


def uninstall() -> None:
    wrapper_layers.uninstall_all(_SEAMS)
