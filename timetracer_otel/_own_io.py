"""Marking timetracer's own network traffic (OTLP export), which replay must neither answer nor refuse.

OpenTelemetry's own traffic counts too: its span processors export with instrumentation
suppressed (an application's ``OTLPSpanExporter`` posting spans through requests), and so
does code the application runs under ``suppress_instrumentation()``. Such calls make no
span, so they are no dependency of a request: they are not recorded, answered or refused.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

from opentelemetry.instrumentation.utils import is_instrumentation_enabled

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
    return _own.get() or not is_instrumentation_enabled()
