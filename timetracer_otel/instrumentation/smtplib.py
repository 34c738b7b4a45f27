"""OpenTelemetry instrumentation of :mod:`smtplib`: one CLIENT span per exchange with the server.

An exchange is what a reply answers: the greeting read on connecting (``SMTP connect``),
a command (``SMTP MAIL``, ``SMTP RCPT``, ...), the message sent after ``DATA`` (a second
``SMTP DATA``), and each line of an ``AUTH`` dialogue (``SMTP AUTH``: what answers a
challenge never names a span). The span runs from the first byte sent to the reply, with
``server.address`` and ``server.port``; a reply of 400 or more sets its status to error.
``SMTP`` and ``SMTP_SSL`` (and ``LMTP`` over TCP) are covered, whenever their objects were made.

Usage::

    from timetracer_otel.instrumentation.smtplib import SmtplibInstrumentor

    SmtplibInstrumentor().instrument()
"""

from __future__ import annotations

import smtplib
import time
from collections.abc import Callable, Collection
from typing import Any
from weakref import WeakKeyDictionary

from opentelemetry import trace
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.instrumentation.utils import unwrap
from opentelemetry.trace import SpanKind, Status, StatusCode
from wrapt import wrap_function_wrapper

__all__ = ["SmtplibInstrumentor"]

_CHALLENGE, _SEND_DATA = 334, 354  # replies after which the exchange goes on


class _Exchange:
    """What the spans of one connection need between the calls that make an exchange."""

    __slots__ = ("host", "port", "verb", "started", "last")

    def __init__(self) -> None:
        self.host: str | None = None
        self.port: int | None = None
        self.verb: str | None = None
        self.started: int | None = None
        self.last: int | None = None


class SmtplibInstrumentor(BaseInstrumentor):
    """Client spans for :mod:`smtplib`, sync, per exchange."""

    def instrumentation_dependencies(self) -> Collection[str]:
        return ()  # the standard library's

    def _instrument(self, **kwargs: Any) -> None:
        tracer = trace.get_tracer(__name__, tracer_provider=kwargs.get("tracer_provider"))
        exchanges: WeakKeyDictionary[Any, _Exchange] = WeakKeyDictionary()

        def exchange(client: Any) -> _Exchange:
            found = exchanges.get(client)
            if found is None:
                found = exchanges[client] = _Exchange()
            return found

        def connecting(wrapped: Callable[..., Any], client: Any, args: tuple, kwargs: dict) -> Any:
            state = exchange(client)
            state.host, state.port = args[0], args[1]
            state.verb, state.started, state.last = None, time.time_ns(), None
            return wrapped(*args, **kwargs)

        def sending(wrapped: Callable[..., Any], client: Any, args: tuple, kwargs: dict) -> Any:
            state = exchange(client)
            if state.started is None:
                state.started = time.time_ns()
            return wrapped(*args, **kwargs)

        def command(wrapped: Callable[..., Any], client: Any, args: tuple, kwargs: dict) -> Any:
            state = exchange(client)
            if state.last != _CHALLENGE:  # an answer to a challenge: the secret, not a verb
                state.verb = str(args[0] if args else kwargs.get("cmd", "")).split(" ")[0].upper()
            return sending(wrapped, client, args, kwargs)

        def reply(wrapped: Callable[..., Any], client: Any, args: tuple, kwargs: dict) -> Any:
            state = exchange(client)
            attributes: dict[str, str | int] = {
                "server.address": state.host or "",
                "server.port": state.port or 0,
            }
            with tracer.start_as_current_span(
                f"SMTP {state.verb or 'connect'}",
                kind=SpanKind.CLIENT,
                start_time=state.started or time.time_ns(),
                attributes=attributes,
            ) as span:
                code, message = wrapped(*args, **kwargs)
                if isinstance(code, int) and code >= 400:
                    span.set_status(Status(StatusCode.ERROR, f"SMTP reply {code}"))
            state.last, state.started = code, None
            if code not in (_CHALLENGE, _SEND_DATA):
                state.verb = None
            return code, message

        for owner, name, wrapper in _seams(connecting, sending, command, reply):
            wrap_function_wrapper(owner, name, wrapper)

    def _uninstrument(self, **kwargs: Any) -> None:
        for owner, name, _ in _seams(None, None, None, None):
            unwrap(owner, name)


def _seams(connecting: Any, sending: Any, command: Any, reply: Any) -> list[tuple[Any, str, Any]]:
    return [
        (smtplib.SMTP, "_get_socket", connecting),
        (smtplib.SMTP_SSL, "_get_socket", connecting),
        (smtplib.SMTP, "send", sending),
        (smtplib.SMTP, "putcmd", command),
        (smtplib.SMTP, "getreply", reply),
    ]
