"""OpenTelemetry instrumentation of aiomysql: one CLIENT span per statement.

OpenTelemetry has no instrumentor for aiomysql. The span of each statement is made around its
connection's ``query`` (see :mod:`._mysql`). Connections are covered whenever they were
opened; so are Tortoise ORM's and ``databases``' MySQL backends on aiomysql.

Usage::

    from timetracer_otel.instrumentation.aiomysql import AiomysqlInstrumentor

    AiomysqlInstrumentor().instrument()
"""

from __future__ import annotations

from collections.abc import Collection

import aiomysql.connection

from ._mysql import QueryInstrumentor

__all__ = ["AiomysqlInstrumentor"]


class AiomysqlInstrumentor(QueryInstrumentor):
    """Client spans for aiomysql, per statement."""

    connection_class = aiomysql.connection.Connection

    def instrumentation_dependencies(self) -> Collection[str]:
        return ("aiomysql >= 0.2",)
