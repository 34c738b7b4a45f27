"""What the PyMySQL and aiomysql captures share: the call a connection's ``query`` makes."""

from __future__ import annotations

from typing import Any

import pymysql.err

from timetracer_otel import _mysql
from timetracer_otel._diagnostics import guarded
from timetracer_otel._recording import ProtocolCall, current_recording, in_outer_call
from timetracer_otel.protocols.sql import mysql_request

from ._dbapi import failed

__all__ = ["Query"]


class Query:
    """The call a connection's ``query(sql, unbuffered)`` makes, or None where nothing is recorded."""

    def __init__(
        self, library: str, dialect: str, connection: Any, args: tuple, kwargs: dict
    ) -> None:
        self.call: ProtocolCall | None = None
        self.unbuffered = bool(args[1] if len(args) > 1 else kwargs.get("unbuffered"))
        recording = (
            None if in_outer_call() or _mysql.connecting(connection) else current_recording()
        )
        if recording is None:
            return
        with guarded(f"{library}.request"):
            sql = args[0] if args else kwargs["sql"]
            statement = _mysql.statement_of(sql, connection.encoding)
            call = ProtocolCall("sql", library, mysql_request(dialect, statement))
            recording.add_call(call)
            self.call = call

    def failed(self, exc: Exception) -> None:
        failed(self.call, exc, pymysql.err)

    def answered(self, connection: Any) -> None:
        if self.call is not None:
            with guarded(f"{self.call.library}.response"):
                answer = _mysql.answer_of(connection._result)
                if self.unbuffered:
                    answer.pop("rows", None)
                self.call.response = answer
