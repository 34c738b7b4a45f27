"""What the PyMySQL, aiomysql and asyncmy captures share: the call a connection's ``query`` makes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from timetracer_otel import _mysql
from timetracer_otel._diagnostics import guarded
from timetracer_otel._recording import ProtocolCall, current_recording, in_outer_call
from timetracer_otel.protocols.sql import mysql_request
from timetracer_otel.wrapper_layers import Seam

from ._dbapi import failed

__all__ = ["Query", "async_seams"]


class Query:
    """The call a connection's ``query(sql, unbuffered)`` makes, or None where nothing is recorded."""

    def __init__(self, driver: _mysql.Driver, connection: Any, args: tuple, kwargs: dict) -> None:
        self.call: ProtocolCall | None = None
        self._driver = driver
        self.unbuffered = bool(args[1] if len(args) > 1 else kwargs.get("unbuffered"))
        recording = (
            None if in_outer_call() or _mysql.connecting(connection) else current_recording()
        )
        if recording is None:
            return
        with guarded(f"{driver.library}.request"):
            sql = args[0] if args else kwargs["sql"]
            statement = _mysql.statement_of(sql, connection)
            call = ProtocolCall("sql", driver.library, mysql_request(driver.dialect, statement))
            recording.add_call(call)
            self.call = call

    def failed(self, exc: Exception) -> None:
        failed(self.call, exc, self._driver.errors)

    def answered(self, connection: Any) -> None:
        if self.call is not None:
            with guarded(f"{self.call.library}.response"):
                answer = _mysql.answer_of(connection._result)
                if self.unbuffered:
                    answer.pop("rows", None)
                self.call.response = answer


def async_seams(driver: _mysql.Driver, connection_class: type, connect: str) -> tuple[Seam, ...]:
    """The capture of an asyncio driver on PyMySQL's protocol (aiomysql, asyncmy): its connection
    class's ``query``, and its method ``connect`` that opens a connection and runs its set-up."""

    async def querying(wrapped: Callable[..., Any], connection: Any, args: tuple, kw: dict) -> Any:
        query = Query(driver, connection, args, kw)
        try:
            result = await wrapped(*args, **kw)
        except Exception as exc:
            query.failed(exc)
            raise
        query.answered(connection)
        return result

    async def connecting(
        wrapped: Callable[..., Any], connection: Any, args: tuple, kw: dict
    ) -> Any:
        with _mysql.setting_up(connection):
            return await wrapped(*args, **kw)

    return ((connection_class, "query", querying), (connection_class, connect, connecting))
