"""The client spans of SMTP exchanges, whichever client speaks them (smtplib, aiosmtplib).

An exchange is what a reply answers: the greeting read on connecting (``SMTP connect``),
a command (``SMTP MAIL``, ``SMTP RCPT``, ...), the message sent after ``DATA`` (a second
``SMTP DATA``), and each line of an ``AUTH`` dialogue (``SMTP AUTH``: what answers a
challenge never names a span). A span runs from the first byte sent to the reply, with
``server.address`` and ``server.port``; a reply of 400 or more sets its status to error.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any
from weakref import WeakKeyDictionary

from opentelemetry.instrumentation.utils import unwrap
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from wrapt import wrap_function_wrapper

from timetracer_otel.protocols.smtp import exchange_verb

__all__ = ["ExchangeSpans", "wrap_all", "unwrap_all"]


class _Connection:
    __slots__ = ("attributes", "verb", "started", "last")

    def __init__(self, host: str, port: int, last: int | None) -> None:
        self.attributes: dict[str, str | int] = {"server.address": host, "server.port": port}
        self.verb: str | None = None  # of the exchange under way, once something was sent
        self.started: int | None = None
        self.last = last  # the last reply's code: None before the greeting


class ExchangeSpans:
    """The exchange spans of each connection (keyed by any object of the client's that lives as
    long as the connection)."""

    def __init__(self, tracer: Tracer) -> None:
        self._tracer = tracer
        self._connections: WeakKeyDictionary[Any, _Connection] = WeakKeyDictionary()

    def connected(self, key: Any, host: str, port: int, greeted: bool = False) -> None:
        """A connection to ``host:port``; ``greeted``: its greeting was read already."""
        connection = _Connection(host, port, 220 if greeted else None)
        connection.started = time.time_ns()
        self._connections[key] = connection

    def sending(self, key: Any, data: bytes | str) -> None:
        connection = self._connections.get(key)
        if connection is not None and connection.verb is None:
            head = data[:64]
            sent = head.encode("latin-1", "replace") if isinstance(head, str) else bytes(head)
            connection.verb = exchange_verb(sent, connection.last)
            connection.started = connection.started or time.time_ns()

    @contextlib.contextmanager
    def replying(self, key: Any) -> Iterator[Span | None]:
        """The current span while a reply is read, None for a connection not known; the caller
        hands the reply's code to :meth:`replied`."""
        connection = self._connections.get(key)
        if connection is None:
            yield None
            return
        with self._tracer.start_as_current_span(
            f"SMTP {connection.verb or 'connect'}",
            kind=SpanKind.CLIENT,
            start_time=connection.started or time.time_ns(),
            attributes=connection.attributes,
        ) as span:
            yield span

    def replied(self, key: Any, span: Span | None, code: Any) -> None:
        connection = self._connections.get(key)
        if connection is None:
            return
        connection.last, connection.verb, connection.started = code, None, None
        if span is not None and isinstance(code, int) and code >= 400:
            span.set_status(Status(StatusCode.ERROR, f"SMTP reply {code}"))


def wrap_all(seams: list[tuple[Any, str, Any]]) -> None:
    """Wrap each (owner, attribute, wrapper) as an instrumentor does, over any wrapper already there."""
    for owner, name, wrapper in seams:
        wrap_function_wrapper(owner, name, wrapper)


def unwrap_all(seams: list[tuple[Any, str, Any]]) -> None:
    for owner, name, _ in seams:
        unwrap(owner, name)
