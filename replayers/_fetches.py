"""The fetches of a replay cursor, shared by the SQL replayers that stand in for a driver's cursor."""

from __future__ import annotations

from typing import Any

__all__ = ["Fetches"]


class Fetches:
    """``fetchone``, ``fetchmany`` and ``fetchall`` over a cursor's ``_take(count)`` (the next rows,
    at most ``count``, made the application's) and ``_left()`` (how many rows remain)."""

    arraysize: int

    def _take(self, count: int) -> list[Any]:
        raise NotImplementedError

    def _left(self) -> int:
        raise NotImplementedError

    def fetchone(self) -> Any:
        taken = self._take(1)
        return taken[0] if taken else None

    def fetchmany(self, size: int | None = None) -> list[Any]:
        return self._take(self.arraysize if size is None else size)

    def fetchall(self) -> list[Any]:
        return self._take(self._left())
