"""The context variables that say which request code runs for, and awaiting the server outside them.

asyncio copies the current context into each callback it registers, and an ASGI server may
register one from inside the ``receive`` or ``send`` a request awaits: uvicorn resumes
reading a connection that a large body paused from there. The callback that then reads
the next request on the connection, and so that request's task, ran with the earlier
request's recording current: the next request was not recorded, and its calls went to
the earlier request's cassette. :func:`outside_request` gives the app a ``receive`` and
``send`` that await the server's with every variable registered here at its default.
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

__all__ = ["request_scoped", "outside_request"]

T = TypeVar("T")

_SCOPED: list[tuple[contextvars.ContextVar[Any], Any]] = []


def request_scoped(var: contextvars.ContextVar[T]) -> contextvars.ContextVar[T]:
    """Register ``var`` (made with a default) as one that belongs to the request being served."""
    _SCOPED.append((var, var.get()))
    return var


def outside_request(call: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """``call`` (the server's ``receive`` or ``send``) awaited with the request's variables at their defaults."""

    async def outside(*args: Any) -> T:
        reset = [(var, var.set(default)) for var, default in _SCOPED if var.get() is not default]
        try:
            return await call(*args)
        finally:
            for var, token in reversed(reset):
                var.reset(token)

    return outside
