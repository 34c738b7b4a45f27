"""Timetracer's subclass of a driver's C type, mixed under the class the application chose.

sqlite3's and psycopg2's connections and cursors are C types whose methods cannot be wrapped:
their ``connect`` and ``cursor`` take a class to make, and timetracer hands them its own
subclass, with Python methods its capture and replay wrap, mixed under the application's.
"""

from __future__ import annotations

import functools
from typing import Any

__all__ = ["mixed"]


@functools.lru_cache(maxsize=64)
def mixed(ours: type, factory: Any) -> Any:
    """``factory`` with ``ours`` (a direct subclass of the driver's class) mixed in; a factory
    that is no subclass of the driver's class (a function) is left as it is, unrecorded."""
    base = ours.__bases__[0]
    if factory is base:
        return ours
    if not isinstance(factory, type) or not issubclass(factory, base) or issubclass(factory, ours):
        return factory
    # the application's class first: its own methods (a cursor() choosing its cursor class, an
    # execute() of its own) run as before, and reach timetracer's through super()
    return type(factory.__name__, (factory, ours), {"__module__": factory.__module__})
