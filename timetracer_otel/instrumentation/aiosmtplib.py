"""OpenTelemetry instrumentation of aiosmtplib: one CLIENT span per exchange with the server.

The spans are those of :mod:`timetracer_otel.instrumentation._smtp` (``SMTP connect``,
``SMTP EHLO``, ``SMTP AUTH``, ``SMTP MAIL``, ...): ``SMTP connect`` covers connecting, TLS
included with ``use_tls``, and the greeting. ``aiosmtplib.send`` and ``SMTP`` objects are
covered, whenever they were made.

Usage::

    from timetracer_otel.instrumentation.aiosmtplib import AiosmtplibInstrumentor

    AiosmtplibInstrumentor().instrument()
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

import aiosmtplib.protocol
import aiosmtplib.smtp
from opentelemetry import trace
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from timetracer_otel.protocols.smtp import aiosmtplib_address

from ._smtp import ExchangeSpans, unwrap_all, wrap_all

__all__ = ["AiosmtplibInstrumentor"]


class AiosmtplibInstrumentor(BaseInstrumentor):
    """Client spans for aiosmtplib, per exchange."""

    def instrumentation_dependencies(self) -> Collection[str]:
        return ("aiosmtplib >= 3",)

    def _instrument(self, **kwargs: Any) -> None:
        spans = ExchangeSpans(
            trace.get_tracer(__name__, tracer_provider=kwargs.get("tracer_provider"))
        )

        async def connecting(
            wrapped: Callable[..., Any], client: Any, args: tuple, kwargs: dict
        ) -> Any:
            host, port = aiosmtplib_address(client)
            spans.connected(client, host, port)  # the greeting is this span's reply
            with spans.replying(client) as span:
                greeting = await wrapped(*args, **kwargs)
                spans.replied(client, span, greeting.code)
            spans.connected(client.protocol, host, port, greeted=True)
            return greeting

        def sending(wrapped: Callable[..., Any], protocol: Any, args: tuple, kwargs: dict) -> Any:
            spans.sending(protocol, args[0] if args else kwargs["data"])
            return wrapped(*args, **kwargs)

        async def replying(
            wrapped: Callable[..., Any], protocol: Any, args: tuple, kwargs: dict
        ) -> Any:
            with spans.replying(protocol) as span:
                response = await wrapped(*args, **kwargs)
                spans.replied(protocol, span, response.code)
            return response

        wrap_all(_seams(connecting, sending, replying))

    def _uninstrument(self, **kwargs: Any) -> None:
        unwrap_all(_seams(None, None, None))


def _seams(connecting: Any, sending: Any, replying: Any) -> list[tuple[Any, str, Any]]:
    return [
        (aiosmtplib.smtp.SMTP, "_create_connection", connecting),
        (aiosmtplib.protocol.SMTPProtocol, "write", sending),
        (aiosmtplib.protocol.SMTPProtocol, "read_response", replying),
    ]
