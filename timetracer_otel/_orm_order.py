"""SQLAlchemy's ORM loads an object's attributes in the order its mapper declares them.

SQLAlchemy sets a loaded object's attributes by iterating a ``frozenset`` of its mapper's
properties, whose order follows the properties' memory addresses. An object serialised from
its ``__dict__`` (FastAPI's ``jsonable_encoder`` where a route has no response model) lists its
members in that order: one in the recording process, another in a replaying one, which imports
other modules and so places the properties elsewhere. Iterated in their declared order, the
members come out the same in every process.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

__all__ = ["install", "uninstall"]


class _DeclaredOrder(frozenset[Any]):
    """A mapper's properties, iterated in the order they were declared (a set in every other way)."""

    __slots__ = ("_order",)
    _order: tuple[Any, ...]

    def __new__(cls, properties: Iterable[Any]) -> _DeclaredOrder:
        order = tuple(properties)
        made = super().__new__(cls, order)
        made._order = order
        return made

    def __iter__(self) -> Iterator[Any]:
        return iter(self._order)

    def intersection(self, *others: Iterable[Any]) -> _DeclaredOrder:
        """The properties a refresh loads (an expired object's attributes), still in declared order."""
        kept = frozenset(self._order).intersection(*others)
        return _DeclaredOrder(p for p in self._order if p in kept)


def _prop_set(mapper: Any) -> _DeclaredOrder:
    return _DeclaredOrder(mapper._props.values())


_original: Any = None
# who asked for the order ("capture", "replay"): SQLAlchemy's comes back when none is left
_holders: set[str] = set()


def _forget_memoized() -> None:
    """Mappers that have already loaded an object hold the set they made then."""
    from sqlalchemy.orm import mapperlib

    for registry in list(mapperlib._mapper_registries):
        for mapper in registry.mappers:
            mapper.__dict__.pop("_prop_set", None)


def install(holder: str) -> None:
    """Make every mapper's property set iterate in declared order (SQLAlchemy 2), for ``holder``
    until it uninstalls: capture and replay each install it, and either may be uninstalled alone."""
    global _original
    from sqlalchemy.orm import Mapper
    from sqlalchemy.util import HasMemoized

    _holders.add(holder)
    current = Mapper.__dict__.get("_prop_set")
    if current is None or getattr(current, "fget", None) is _prop_set:
        return
    _original = current
    Mapper._prop_set = HasMemoized.memoized_attribute(_prop_set)  # type: ignore[method-assign]
    _forget_memoized()


def uninstall(holder: str) -> None:
    global _original
    from sqlalchemy.orm import Mapper

    _holders.discard(holder)
    if _original is None or _holders:
        return
    Mapper._prop_set = _original  # type: ignore[method-assign]
    _original = None
    _forget_memoized()
