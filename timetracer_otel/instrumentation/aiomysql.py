"""OpenTelemetry instrumentation of aiomysql: one CLIENT span per statement.

OpenTelemetry has no instrumentor for aiomysql. Every statement aiomysql sends goes through
its connection's ``query`` (a cursor's ``execute``, each batch of an ``executemany``,
``callproc``'s statements), where the span is made, named by the statement's first keyword
(``SELECT``, ``INSERT``) as OpenTelemetry's database spans are, with ``db.system`` (``mysql``)
and ``db.statement`` (its parameters quoted in, as sent). SQLAlchemy's statements on aiomysql
have SQLAlchemy's spans: none is made for them here. Connections are covered whenever they
were opened; so are Tortoise ORM's and ``databases``' MySQL backends on aiomysql.

Usage::

    from timetracer_otel.instrumentation.aiomysql import AiomysqlInstrumentor

    AiomysqlInstrumentor().instrument()
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

import aiomysql.connection
from opentelemetry import trace
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from timetracer_otel import _mysql
from timetracer_otel._recording import in_outer_call

from ._smtp import unwrap_all, wrap_all
from ._sql import statement_span

__all__ = ["AiomysqlInstrumentor"]


class AiomysqlInstrumentor(BaseInstrumentor):
    """Client spans for aiomysql, per statement."""

    def instrumentation_dependencies(self) -> Collection[str]:
        return ("aiomysql >= 0.2",)

    def _instrument(self, **kwargs: Any) -> None:
        tracer = trace.get_tracer(__name__, tracer_provider=kwargs.get("tracer_provider"))

        async def querying(
            wrapped: Callable[..., Any], connection: Any, args: tuple, kw: dict
        ) -> Any:
            if in_outer_call() or _mysql.connecting(connection):
                return await wrapped(*args, **kw)
            sql = args[0] if args else kw.get("sql", "")
            statement = _mysql.statement_of(sql, connection.encoding)
            with statement_span(tracer, "mysql", statement, "query"):
                return await wrapped(*args, **kw)

        wrap_all([(aiomysql.connection.Connection, "query", querying)])

    def _uninstrument(self, **kwargs: Any) -> None:
        unwrap_all([(aiomysql.connection.Connection, "query", None)])
