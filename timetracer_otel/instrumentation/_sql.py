"""The span of a statement, as timetracer's own SQL instrumentors (sqlite3, aiosqlite, aiomysql, asyncmy) make it."""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind

__all__ = ["statement_span"]


def statement_span(tracer: trace.Tracer, system: str, statement: Any, operation: str) -> Any:
    """A CLIENT span for a statement on ``system`` (``sqlite``, ``mysql``), named by its first
    keyword (or ``operation``)."""
    words = statement.split(None, 1) if isinstance(statement, str) else []
    return tracer.start_as_current_span(
        words[0].upper() if words else operation,
        kind=SpanKind.CLIENT,
        attributes={"db.system": system, "db.statement": str(statement)},
    )
