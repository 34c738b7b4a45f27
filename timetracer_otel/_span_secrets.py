"""Secret values a request's spans may quote, by trace id (or by the span of one call).

Redaction works on finished spans, long after the values it must hide were seen: the
inbound request's credentials (noted by trace id when the request starts), a Redis
``AUTH`` password taken out of the recorded command at capture (noted by the call's span:
redis-py's error message for a failing pipeline names the command with its arguments).
The OTLP exporter looks each span up here by its span and trace ids, and so does freezing
a recording, whose copy takes the values along to the cassette's redaction (in the writer
process, where this table is empty); :mod:`timetracer_otel.secret_values` hides them.
Bounded: the oldest entries go first; spans are exported and recordings frozen within
seconds of their end.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Iterable

__all__ = ["remember", "secrets_of", "exporting", "start_exporting"]

_MAX_SPANS = 10_000
_secrets: "OrderedDict[int, tuple[str, ...]]" = OrderedDict()
_lock = threading.Lock()
_exporting = False  # an OTLP export redacts spans in this process: the inbound request's values are noted


def start_exporting() -> None:
    """Called by the redacting OTLP exporter: from now on, inbound requests note their secret values."""
    global _exporting
    _exporting = True


def exporting() -> bool:
    return _exporting


def remember(owner: int, texts: Iterable[str]) -> None:
    """Note that the span or trace ``owner`` may quote ``texts``, which must not leave the process."""
    texts = tuple(texts)
    if not owner or not texts:
        return
    with _lock:
        _secrets[owner] = _secrets.get(owner, ()) + texts
        while len(_secrets) > _MAX_SPANS:
            _secrets.popitem(last=False)


def secrets_of(*owners: int) -> tuple[str, ...]:
    """The values remembered for any of ``owners`` (span and trace ids)."""
    return tuple(text for owner in owners for text in _secrets.get(owner, ()))
