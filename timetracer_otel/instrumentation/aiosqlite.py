"""OpenTelemetry instrumentation of aiosqlite: one CLIENT span per statement.

OpenTelemetry instruments sqlite3, but aiosqlite runs it in a thread of its own, where the
request's span is not current: its statements' spans would be roots of their own traces.
These spans are made where the application awaits the statement instead, named by the
statement's first keyword (``SELECT``, ``INSERT``) as OpenTelemetry's database spans are,
with ``db.system`` (``sqlite``) and ``db.statement``; SQLAlchemy's statements on aiosqlite have
SQLAlchemy's spans, none is made for them here. Connections are covered whenever they were
opened; so are Tortoise ORM's and ``databases``' SQLite backends, which run on aiosqlite.

Usage::

    from timetracer_otel.instrumentation.aiosqlite import AiosqliteInstrumentor

    AiosqliteInstrumentor().instrument()
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

import aiosqlite
from opentelemetry import trace
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from timetracer_otel import _aiosqlite
from timetracer_otel._recording import in_outer_call

from ._smtp import unwrap_all, wrap_all
from ._sql import statement_span

__all__ = ["AiosqliteInstrumentor"]


class AiosqliteInstrumentor(BaseInstrumentor):
    """Client spans for aiosqlite, per statement."""

    def instrumentation_dependencies(self) -> Collection[str]:
        return ("aiosqlite >= 0.17",)

    def _instrument(self, **kwargs: Any) -> None:
        tracer = trace.get_tracer(__name__, tracer_provider=kwargs.get("tracer_provider"))

        async def executing(
            wrapped: Callable[..., Any], connection: Any, args: tuple, kw: dict
        ) -> Any:
            operation = _aiosqlite.operation(args[0]) if args else None
            if in_outer_call() or (
                operation not in _aiosqlite.STATEMENTS and operation not in _aiosqlite.HELPERS
            ):
                return await wrapped(*args, **kw)
            with statement_span(tracer, "sqlite", args[1] if len(args) > 1 else "", str(operation)):
                return await wrapped(*args, **kw)

        wrap_all([(aiosqlite.Connection, "_execute", executing)])

    def _uninstrument(self, **kwargs: Any) -> None:
        unwrap_all([(aiosqlite.Connection, "_execute", None)])
