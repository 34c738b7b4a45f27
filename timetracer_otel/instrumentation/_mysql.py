"""Client spans for the asyncio MySQL drivers that OpenTelemetry has no instrumentor for (aiomysql,
asyncmy): one per statement, made around the connection's ``query``, through which each sends
every statement (a cursor's ``execute``, each batch of an ``executemany``, ``callproc``'s
statements). Named by the statement's first keyword (``SELECT``, ``INSERT``) as OpenTelemetry's
database spans are, with ``db.system`` (``mysql``) and ``db.statement`` (its parameters quoted
in, as sent). SQLAlchemy's statements on these drivers have SQLAlchemy's spans, and a
connection's own set-up statements none: no span is made for them here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from opentelemetry import trace
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from timetracer_otel import _mysql
from timetracer_otel._recording import in_outer_call

from ._smtp import unwrap_all, wrap_all
from ._sql import statement_span

__all__ = ["QueryInstrumentor"]


class QueryInstrumentor(BaseInstrumentor):
    """Client spans per statement for the connections of :attr:`connection_class`."""

    connection_class: type  # the driver's connection class, whose ``query`` sends every statement

    def _instrument(self, **kwargs: Any) -> None:
        tracer = trace.get_tracer(__name__, tracer_provider=kwargs.get("tracer_provider"))

        async def querying(
            wrapped: Callable[..., Any], connection: Any, args: tuple, kw: dict
        ) -> Any:
            if in_outer_call() or _mysql.connecting(connection):
                return await wrapped(*args, **kw)
            sql = args[0] if args else kw.get("sql", "")
            statement = _mysql.statement_of(sql, connection)
            with statement_span(tracer, "mysql", statement, "query"):
                return await wrapped(*args, **kw)

        wrap_all([(self.connection_class, "query", querying)])

    def _uninstrument(self, **kwargs: Any) -> None:
        unwrap_all([(self.connection_class, "query", None)])
