"""OpenTelemetry instrumentation of :mod:`smtplib`: one CLIENT span per exchange with the server.

The spans are those of :mod:`timetracer_otel.instrumentation._smtp` (``SMTP connect``,
``SMTP EHLO``, ``SMTP AUTH``, ``SMTP MAIL``, ...). ``SMTP`` and ``SMTP_SSL`` (and ``LMTP``
over TCP) are covered, whenever their objects were made.

Usage::

    from timetracer_otel.instrumentation.smtplib import SmtplibInstrumentor

    SmtplibInstrumentor().instrument()
"""

from __future__ import annotations

import smtplib
from collections.abc import Callable, Collection
from typing import Any

from opentelemetry import trace
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from ._smtp import ExchangeSpans, unwrap_all, wrap_all

__all__ = ["SmtplibInstrumentor"]


class SmtplibInstrumentor(BaseInstrumentor):
    """Client spans for :mod:`smtplib`, per exchange."""

    def instrumentation_dependencies(self) -> Collection[str]:
        return ()  # the standard library's

    def _instrument(self, **kwargs: Any) -> None:
        spans = ExchangeSpans(
            trace.get_tracer(__name__, tracer_provider=kwargs.get("tracer_provider"))
        )

        def connecting(wrapped: Callable[..., Any], client: Any, args: tuple, kwargs: dict) -> Any:
            spans.connected(client, args[0], args[1])
            return wrapped(*args, **kwargs)

        def sending(wrapped: Callable[..., Any], client: Any, args: tuple, kwargs: dict) -> Any:
            spans.sending(client, args[0] if args else kwargs["s"])
            return wrapped(*args, **kwargs)

        def replying(wrapped: Callable[..., Any], client: Any, args: tuple, kwargs: dict) -> Any:
            with spans.replying(client) as span:
                code, message = wrapped(*args, **kwargs)
                spans.replied(client, span, code)
            return code, message

        wrap_all(_seams(connecting, sending, replying))

    def _uninstrument(self, **kwargs: Any) -> None:
        unwrap_all(_seams(None, None, None))


def _seams(connecting: Any, sending: Any, replying: Any) -> list[tuple[Any, str, Any]]:
    return [
        (smtplib.SMTP, "_get_socket", connecting),
        (smtplib.SMTP_SSL, "_get_socket", connecting),
        (smtplib.SMTP, "send", sending),
        (smtplib.SMTP, "getreply", replying),
    ]
