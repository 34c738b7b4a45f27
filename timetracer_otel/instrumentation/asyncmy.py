"""OpenTelemetry instrumentation of asyncmy: one CLIENT span per statement.

OpenTelemetry has no instrumentor for asyncmy. The span of each statement is made around its
connection's ``query`` (see :mod:`._mysql`). Connections are covered whenever they were
opened; so are Tortoise ORM's and ``databases``' MySQL backends on asyncmy.

Usage::

    from timetracer_otel.instrumentation.asyncmy import AsyncmyInstrumentor

    AsyncmyInstrumentor().instrument()
"""

from __future__ import annotations

from collections.abc import Collection

import asyncmy.connection

from ._mysql import QueryInstrumentor

__all__ = ["AsyncmyInstrumentor"]


class AsyncmyInstrumentor(QueryInstrumentor):
    """Client spans for asyncmy, per statement."""

    connection_class = asyncmy.connection.Connection

    def instrumentation_dependencies(self) -> Collection[str]:
        return ("asyncmy >= 0.2",)
