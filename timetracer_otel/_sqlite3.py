"""The connection and cursor classes the sqlite3 plugin gives connections, for capture and replay alike.

sqlite3's classes are C types whose methods cannot be wrapped, and ``Connection.execute`` runs
its statement in C, past any cursor method. ``sqlite3.connect`` is given a ``factory`` of
timetracer's (mixed under the application's own, when it passes one): a connection whose
cursors are :class:`Cursor`, whose statements and fetches are Python methods that the capture
and the replayer wrap, and whose ``execute``/``executemany``/``executescript`` shortcuts go
through them. A cursor answered by replay carries that answer (:attr:`Cursor.answer`); its
``description``, ``rowcount`` and ``lastrowid`` are then the recorded ones.
"""

from __future__ import annotations

import sqlite3
import sys
from types import FrameType
from typing import Any

from timetracer_otel._class_mixing import mixed

__all__ = ["Connection", "Cursor", "STATEMENTS", "FETCHES", "connecting", "statement_arguments"]

STATEMENTS = ("execute", "executemany", "executescript")
FETCHES = ("fetchone", "fetchmany", "fetchall")


class Cursor(sqlite3.Cursor):
    """sqlite3's cursor with its statements and fetches in Python."""

    answer: Any = None  # the recorded answer replay gave the last statement, or None

    def execute(self, sql: str, parameters: Any = (), /) -> Any:
        self.answer = None
        return super().execute(sql, parameters)

    def executemany(self, sql: str, seq_of_parameters: Any, /) -> Any:
        self.answer = None
        return super().executemany(sql, seq_of_parameters)

    def executescript(self, sql_script: str, /) -> Any:
        self.answer = None
        return super().executescript(sql_script)

    def fetchone(self) -> Any:
        return super().fetchone()

    def fetchmany(self, size: int | None = None) -> list[Any]:
        return super().fetchmany(self.arraysize if size is None else size)

    def fetchall(self) -> list[Any]:
        return super().fetchall()

    def __next__(self) -> Any:
        row = self.fetchone()
        if row is None:
            raise StopIteration
        return row

    @property
    def description(self) -> Any:
        return super().description if self.answer is None else self.answer.description

    @property
    def rowcount(self) -> int:
        return super().rowcount if self.answer is None else self.answer.rowcount

    @property
    def lastrowid(self) -> Any:
        return super().lastrowid if self.answer is None else self.answer.lastrowid


class Connection(sqlite3.Connection):
    """sqlite3's connection, its cursors :class:`Cursor` and its shortcuts through them."""

    def cursor(self, factory: Any = Cursor) -> Any:
        return super().cursor(mixed(Cursor, factory))

    def execute(self, sql: str, parameters: Any = (), /) -> Any:
        return _run(self.cursor(), "execute", sql, parameters)

    def executemany(self, sql: str, parameters: Any, /) -> Any:
        return _run(self.cursor(), "executemany", sql, parameters)

    def executescript(self, sql_script: str, /) -> Any:
        return _run(self.cursor(), "executescript", sql_script)


def _run(cursor: Cursor, method: str, *args: Any) -> Any:
    """A shortcut's statement on its own cursor. sqlite3 makes that cursor in C, where nothing
    keeps it once the statement failed; here the error's traceback does (pytest keeps a failed
    test's), and an unfinished statement holds the database's write lock after the connection
    closes: the cursor is closed first."""
    try:
        return getattr(cursor, method)(*args)
    except BaseException:
        cursor.close()
        raise


def statement_arguments(operation: str, args: tuple) -> tuple:
    """A statement's arguments as both capture and replay see them: no parameters as ``()`` (what
    sqlite3 takes them for), ``executemany``'s sets made a list, so they are recorded and sent."""
    if operation == "executescript" or not args:
        return args
    if len(args) == 1:
        return (args[0], ())
    if operation == "executemany":
        return (args[0], list(args[1]), *args[2:])
    return args


_FACTORY_AT = 5  # sqlite3.connect(database, timeout, detect_types, isolation_level, check_same_thread, factory, ...)


# Tools that keep their own data in SQLite while the application runs, never the application's:
# coverage.py writes its measurements (and with dynamic contexts, at every test) to .coverage.
_TOOLS = ("coverage.",)
_FRAMES_LOOKED_AT = 8


def _opened_by_a_tool() -> bool:
    """Whether the code calling ``sqlite3.connect`` (past timetracer's and wrapt's frames) is one
    of :data:`_TOOLS`'."""
    frame: FrameType | None = sys._getframe(2)
    for _ in range(_FRAMES_LOOKED_AT):
        if frame is None:
            return False
        module = frame.f_globals.get("__name__", "")
        if not module.startswith(("timetracer_otel", "wrapt")):
            return module.startswith(_TOOLS)
        frame = frame.f_back
    return False


def connecting(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    """``sqlite3.connect`` with :class:`Connection` mixed into its ``factory``; a tool's own
    connection (:data:`_TOOLS`) is left as sqlite3 makes it, neither recorded nor replayed."""
    if _opened_by_a_tool():
        return wrapped(*args, **kwargs)
    if len(args) > _FACTORY_AT:
        args = (
            *args[:_FACTORY_AT],
            mixed(Connection, args[_FACTORY_AT]),
            *args[_FACTORY_AT + 1 :],
        )
    else:
        kwargs = {
            **kwargs,
            "factory": mixed(Connection, kwargs.get("factory", sqlite3.Connection)),
        }
    return wrapped(*args, **kwargs)
