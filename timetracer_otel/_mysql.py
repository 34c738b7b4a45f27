"""What the PyMySQL, aiomysql and asyncmy plugins share: a query's answer, recorded and stood in for.

The drivers send every statement through their connection's ``query(sql)`` (a cursor's
``execute``, each batch of an ``executemany``, ``callproc``'s ``SET`` and ``CALL``), which
leaves a ``MySQLResult`` on the connection for the cursor to read: its rows, description,
fields, affected rows and insert id. Capture keeps that result; replay leaves a
:class:`RecordedResult` in its place, which every cursor class (``DictCursor`` and the
application's own) reads as it reads the server's. A replay connection opens no socket: a
:class:`Unconnected` stands for it, and the commands sent outside queries (``COMMIT``,
``ROLLBACK``, ``BEGIN``, ``SET AUTOCOMMIT``, pings) send nothing.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from types import ModuleType, SimpleNamespace
from typing import Any, NamedTuple

from pymysql.constants import SERVER_STATUS

from timetracer_otel.protocols.sql import AIOMYSQL, ASYNCMY, PYMYSQL, snapshot

__all__ = [
    "AIOMYSQL_DRIVER",
    "ASYNCMY_DRIVER",
    "Driver",
    "PYMYSQL_DRIVER",
    "RecordedResult",
    "Unconnected",
    "answer_of",
    "connecting",
    "encoding_of",
    "replaying",
    "setting_up",
    "stand_in",
    "statement_of",
]

_REPLAYING = "_timetracer_replaying"  # set on a connection replay stands in for


class Driver(NamedTuple):
    """One MySQL driver as its plugin records and replays it."""

    library: str  # the plugin's name, each call's ``library``
    dialect: str  # each request's ``dialect`` (``mysql+aiomysql``)
    errors_module: str  # where its PEP 249 error classes are (aiomysql raises PyMySQL's)

    @property
    def errors(self) -> ModuleType:
        return importlib.import_module(self.errors_module)


PYMYSQL_DRIVER = Driver("pymysql", PYMYSQL, "pymysql.err")
AIOMYSQL_DRIVER = Driver("aiomysql", AIOMYSQL, "pymysql.err")
ASYNCMY_DRIVER = Driver("asyncmy", ASYNCMY, "asyncmy.errors")


def encoding_of(connection: Any) -> str:
    """The text encoding of ``connection``'s statements (asyncmy keeps it as ``_encoding``)."""
    return str(getattr(connection, "encoding", None) or getattr(connection, "_encoding", "utf-8"))


def statement_of(sql: Any, connection: Any) -> str:
    """The statement ``connection``'s ``query`` was given, as text (``executemany`` batches are bytes)."""
    if isinstance(sql, (bytes, bytearray, memoryview)):
        return bytes(sql).decode(encoding_of(connection), "surrogateescape")
    return str(sql)


def answer_of(result: Any) -> dict[str, Any]:
    """A ``MySQLResult`` as the cassette keeps it: description, the fields' tables (``DictCursor``
    names a repeated column ``table.column``), rows as the driver decoded them, affected rows,
    insert id."""
    description = result.description
    answer: dict[str, Any] = {
        "description": [list(column) for column in description] if description else None,
        "rowcount": result.affected_rows,
        "lastrowid": result.insert_id,
    }
    if description:
        answer["tables"] = [field.table_name for field in getattr(result, "fields", ())]
        answer["rows"] = [list(snapshot(row)) for row in result.rows or ()]
    return answer


class RecordedResult:
    """A recorded answer where the driver's cursors read a ``MySQLResult``."""

    has_next = False
    unbuffered_active = False
    warning_count = 0  # the server's warnings are not replayed: none to ask for
    message = None
    server_status = None

    def __init__(self, answer: dict[str, Any]) -> None:
        description = answer.get("description")
        self.affected_rows = answer.get("rowcount")
        self.insert_id = answer.get("lastrowid")
        self.description = tuple(tuple(column) for column in description) if description else None
        self.field_count = len(description or ())
        tables = answer.get("tables") or [""] * self.field_count
        self.fields = [
            SimpleNamespace(name=str(column[0]), table_name=table)
            for column, table in zip(description or (), tables, strict=False)
        ]
        self.rows = tuple(tuple(row) for row in answer["rows"]) if description else None


class Unconnected:
    """The socket (PyMySQL), stream reader and writer (aiomysql) or transport (asyncmy) of a
    replay connection: nothing is sent, nothing comes."""

    eof_received = False  # aiomysql's pool reads it of its connections' readers

    def __init__(self) -> None:
        self.transport = self

    def sendall(self, data: bytes) -> None:
        pass

    def write(self, data: bytes) -> None:
        pass

    async def drain(self) -> None:
        pass

    def settimeout(self, timeout: float | None) -> None:
        pass

    def at_eof(self) -> bool:
        return False

    def is_closing(self) -> bool:
        return False

    def exception(self) -> None:
        return None

    def close(self) -> None:
        pass


def stand_in(connection: Any) -> None:
    """Make ``connection`` a replay connection, as the driver's connect would leave it, with no server."""
    setattr(connection, _REPLAYING, True)
    connection._closed = False
    connection.host_info = "timetracer replay"
    connection.server_version = "replay"
    connection.server_thread_id = (0,)
    connection.protocol_version = 10
    connection.server_status = (
        SERVER_STATUS.SERVER_STATUS_AUTOCOMMIT
        if getattr(connection, "autocommit_mode", None)
        else 0
    )
    connection._result = None
    connection._affected_rows = 0


_CONNECTING = "_timetracer_connecting"  # set while a connection runs its own set-up statements


@contextlib.contextmanager
def setting_up(connection: Any) -> Iterator[None]:
    """The block in which ``connection`` connects: the statements it runs then (``sql_mode``,
    ``init_command``) are the driver's own, never recorded (a replay connection runs none)."""
    setattr(connection, _CONNECTING, True)
    try:
        yield
    finally:
        setattr(connection, _CONNECTING, False)


def connecting(connection: Any) -> bool:
    return bool(getattr(connection, _CONNECTING, False))


def replaying(connection: Any) -> bool:
    """Whether replay stands in for ``connection``."""
    return bool(getattr(connection, _REPLAYING, False))
