"""Secret values capture took out of a call, by the span of that call.

A Redis ``AUTH`` password is redacted from the recorded command at capture, but the
OpenTelemetry instrumentor's span can still quote it: redis-py's error message for a
failing pipeline names the command with its arguments, and the span records that
message as an exception event and as its status. The OTLP exporter looks each span up
here, and so does freezing a recording, whose copy takes the values along to the
cassette's redaction (in the writer process, where this table is empty): the redactor
hides them in the span's text. Bounded: the oldest entries go first; spans are exported
and recordings frozen within seconds of their end.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Iterable

__all__ = ["remember", "secrets_of"]

_MAX_SPANS = 10_000
_secrets: "OrderedDict[int, tuple[str, ...]]" = OrderedDict()
_lock = threading.Lock()


def remember(span_id: int, texts: Iterable[str]) -> None:
    """Note that the span ``span_id`` may quote ``texts``, which must not leave the process."""
    texts = tuple(texts)
    if not span_id or not texts:
        return
    with _lock:
        _secrets[span_id] = _secrets.get(span_id, ()) + texts
        while len(_secrets) > _MAX_SPANS:
            _secrets.popitem(last=False)


def secrets_of(span_id: int) -> tuple[str, ...]:
    """The values remembered for ``span_id`` (none for almost every span)."""
    return _secrets.get(span_id, ())
