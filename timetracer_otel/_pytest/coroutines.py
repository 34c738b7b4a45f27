"""Async tests and fixtures answered from the cassette pytest has active when it runs them.

A cassette is made active in pytest's thread, through context variables. pytest-asyncio
runs each test and fixture in a task of its own, which copies that context then. AnyIO's
plugin runs them all in one task of its test runner, made when the first needs it and kept
as long as its event loop (a module-scoped async fixture keeps it for the module): its
context is a copy taken once, and every later test's calls and draws went to the first
test's cassette. Wrapped here, a test's or fixture's coroutine makes the cassette active
at that moment its own, in whatever context runs it.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from .blocks import running_block

__all__ = ["in_running_block", "swapped"]


def _serving() -> contextlib.AbstractContextManager[None]:
    block = running_block()
    return block.serving() if block is not None else contextlib.nullcontext()


def in_running_block(function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` with each step of its coroutine (or async generator: set-up, then
    teardown) run under the cassette active then; anything else as it is."""
    if inspect.isasyncgenfunction(function):

        @functools.wraps(function)
        async def generator(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            steps = function(*args, **kwargs)
            while True:
                with _serving():
                    try:
                        value = await steps.__anext__()
                    except StopAsyncIteration:
                        return
                yield value

        return generator
    if inspect.iscoroutinefunction(function):

        @functools.wraps(function)
        async def coroutine(*args: Any, **kwargs: Any) -> Any:
            with _serving():
                return await function(*args, **kwargs)

        return coroutine
    return function


@contextlib.contextmanager
def swapped(owner: Any, name: str) -> Iterator[None]:
    """``owner.name`` (a test item's ``obj``, a fixture's ``func``) wrapped by
    :func:`in_running_block` while pytest runs it."""
    function = getattr(owner, name)
    setattr(owner, name, in_running_block(function))
    try:
        yield
    finally:
        setattr(owner, name, function)
