"""Trace context carried inside a call's payload, left out of matching.

OpenTelemetry's propagators write the current trace and span ids (a W3C ``traceparent``,
``00-<trace id>-<span id>-<flags>``) wherever an instrumentation hands context on: taskiq's
and Celery's into a task message's labels or headers, sqlcommenter into a SQL comment, an
app's ``propagate.inject()`` into any dict it sends. Those ids are new on every run, and
replay does not make the recorded ones, so a call carrying them is compared without them,
as the ``traceparent`` header of an HTTP call is.
"""

from __future__ import annotations

import re
from typing import AnyStr

__all__ = ["without_trace_context"]

_TRACEPARENT = re.compile(r"\b[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}\b")
_TRACEPARENT_BYTES = re.compile(_TRACEPARENT.pattern.encode())
_STANDS_FOR = "00-<trace id>-<span id>-<flags>"


def without_trace_context(value: AnyStr) -> AnyStr:
    """``value`` (a payload's text or bytes) with each W3C ``traceparent`` in it replaced by the
    same placeholder."""
    if isinstance(value, str):
        return _TRACEPARENT.sub(_STANDS_FOR, value) if "-" in value else value
    return _TRACEPARENT_BYTES.sub(_STANDS_FOR.encode(), value) if b"-" in value else value
