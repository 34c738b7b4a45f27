"""OpenTelemetry instrumentation of py-amqp (RabbitMQ): one span per method the client sends.

OpenTelemetry has instrumentors for pika, aio-pika and Celery's tasks, none for py-amqp, the
client under kombu's ``amqp://`` transport and Celery's publishing. Each method is a span
named ``AMQP <method>`` (``AMQP connect`` for opening the connection, ``AMQP Basic.Publish``,
``AMQP Queue.Declare``), running until the broker's answer is read when the method waits
for one: a PRODUCER span for a publish, CLIENT for the rest, with ``messaging.system``
(``rabbitmq``), ``server.address``, ``server.port``, and for a publish the exchange as
``messaging.destination.name`` and ``messaging.rabbitmq.destination.routing_key``.

Usage::

    from timetracer_otel.instrumentation.amqp import AmqpInstrumentor

    AmqpInstrumentor().instrument()
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

import amqp
from amqp.abstract_channel import AbstractChannel
from opentelemetry import trace
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.trace import SpanKind

from timetracer_otel.protocols.amqp import broker_address, method_name

from ._smtp import unwrap_all, wrap_all

__all__ = ["AmqpInstrumentor"]

_PUBLISH = (60, 40)


def _attributes(connection: Any) -> dict[str, str | int]:
    host, _, port = broker_address(connection.host).rpartition(":")
    return {
        "messaging.system": "rabbitmq",
        "server.address": host.strip("[]"),
        "server.port": int(port),
    }


class AmqpInstrumentor(BaseInstrumentor):
    """Spans for py-amqp, per method sent."""

    def instrumentation_dependencies(self) -> Collection[str]:
        return ("amqp >= 5.1",)

    def _instrument(self, **kwargs: Any) -> None:
        tracer = trace.get_tracer(__name__, tracer_provider=kwargs.get("tracer_provider"))

        def connecting(wrapped: Callable[..., Any], connection: Any, args: tuple, kw: dict) -> Any:
            if connection.connected:
                return wrapped(*args, **kw)
            with tracer.start_as_current_span(
                "AMQP connect", kind=SpanKind.CLIENT, attributes=_attributes(connection)
            ):
                return wrapped(*args, **kw)

        def sending(wrapped: Callable[..., Any], channel: Any, args: tuple, kw: dict) -> Any:
            connection = channel.connection
            if connection is None:
                return wrapped(*args, **kw)
            sig = tuple(args[0] if args else kw["sig"])
            attributes = _attributes(connection)
            publish = sig == _PUBLISH
            values: Any = (args[2] if len(args) > 2 else kw.get("args")) or ()
            if publish and len(values) >= 3:
                attributes["messaging.destination.name"] = values[1]
                attributes["messaging.rabbitmq.destination.routing_key"] = values[2]
            with tracer.start_as_current_span(
                f"AMQP {method_name(sig)}",
                kind=SpanKind.PRODUCER if publish else SpanKind.CLIENT,
                attributes=attributes,
            ):
                return wrapped(*args, **kw)

        wrap_all(
            [(amqp.Connection, "connect", connecting), (AbstractChannel, "send_method", sending)]
        )

    def _uninstrument(self, **kwargs: Any) -> None:
        unwrap_all([(amqp.Connection, "connect", None), (AbstractChannel, "send_method", None)])
