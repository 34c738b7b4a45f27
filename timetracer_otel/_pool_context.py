"""Work handed to a thread pool runs in a copy of the context that handed it over.

``loop.run_in_executor`` (asyncio's and uvloop's) and ``ThreadPoolExecutor.submit`` run a
function in a pool thread with that thread's own context, unlike ``asyncio.to_thread`` and
Starlette's ``run_in_threadpool``, which copy the caller's. A request's recording, its replay
session and its draws live in context variables: a boto3 call sent through
``run_in_executor``, or migrations a test fixture runs there, belonged to no cassette, went
to the network in replay, and drew real values. Once installed, ``submit`` hands the pool
``contextvars.copy_context().run`` with the function, as ``asyncio.to_thread`` does.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from timetracer_otel import wrapper_layers

__all__ = ["install"]

_lock = threading.Lock()


def _submit(wrapped: Callable[..., Future], executor: Any, args: tuple, kwargs: dict) -> Future:
    if not args:  # submit(fn=...) is no call pools accept: theirs to refuse
        return wrapped(*args, **kwargs)
    return wrapped(contextvars.copy_context().run, *args, **kwargs)


def install() -> None:
    """Copy the submitting context into every thread pool's work, once per process."""
    with _lock:
        wrapper_layers.install(ThreadPoolExecutor, "submit", _submit)
