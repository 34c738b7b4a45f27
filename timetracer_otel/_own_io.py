"""Marking timetracer's own network traffic (OTLP export), which replay must neither answer nor refuse."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

_own = contextvars.ContextVar("timetracer_own_io", default=False)


@contextlib.contextmanager
def own_io() -> Iterator[None]:
    """Calls made in the block are timetracer's own, not the application's."""
    token = _own.set(True)
    try:
        yield
    finally:
        _own.reset(token)


def is_own_io() -> bool:
    return _own.get()
