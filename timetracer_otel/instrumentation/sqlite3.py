"""OpenTelemetry instrumentation of sqlite3 as the sqlite3 plugin connects it: a CLIENT span per statement.

The spans are made in the cursor methods of timetracer's connection classes
(:mod:`timetracer_otel._sqlite3`, which the plugin gives ``sqlite3.connect``), so the
connection's own ``execute`` shortcuts have them too. Each is named by the statement's first
keyword (``SELECT``, ``INSERT``), as OpenTelemetry's database spans are, with ``db.system``
(``sqlite``) and ``db.statement``. Statements SQLAlchemy or aiosqlite run on sqlite3 have
their own spans: none is made for them here.

Usage::

    from timetracer_otel.instrumentation.sqlite3 import Sqlite3Instrumentor

    Sqlite3Instrumentor().instrument()
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from opentelemetry import trace
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from timetracer_otel import _sqlite3
from timetracer_otel._recording import in_outer_call

from ._smtp import unwrap_all, wrap_all
from ._sql import statement_span

__all__ = ["Sqlite3Instrumentor"]


class Sqlite3Instrumentor(BaseInstrumentor):
    """Client spans for sqlite3, per statement."""

    def instrumentation_dependencies(self) -> Collection[str]:
        return ()

    def _instrument(self, **kwargs: Any) -> None:
        tracer = trace.get_tracer(__name__, tracer_provider=kwargs.get("tracer_provider"))

        def executing(wrapped: Callable[..., Any], cursor: Any, args: tuple, kw: dict) -> Any:
            if in_outer_call():
                return wrapped(*args, **kw)
            with statement_span(
                tracer, "sqlite", args[0] if args else kw.get("sql", ""), wrapped.__name__
            ):
                return wrapped(*args, **kw)

        wrap_all([(_sqlite3.Cursor, name, executing) for name in _sqlite3.STATEMENTS])

    def _uninstrument(self, **kwargs: Any) -> None:
        unwrap_all([(_sqlite3.Cursor, name, None) for name in _sqlite3.STATEMENTS])
