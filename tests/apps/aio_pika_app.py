"""The order service of amqp_app.py on aio-pika (aiormq underneath), as asyncio services use
RabbitMQ: a robust connection opened as the app starts, a channel with publisher confirms,
the exchange and queue declared there. ``AMQP_URL``, ``AMQP_QUEUE``, ``AMQP_EXCHANGE`` and ``AMQP_CLOSED`` as there.

``uvicorn --factory aio_pika_app:create_app``."""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import AsyncIterator

import aio_pika
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from timetracer_otel.integrations.starlette import auto_setup

API_TOKEN = "tok-7f3a9c2e51d84b06a1e2"  # a secret the producer sends with each message


class _Broker:
    """The connection, channel, exchange and queue the app opens once, at start."""

    connection: aio_pika.abc.AbstractRobustConnection
    channel: aio_pika.abc.AbstractChannel
    exchange: aio_pika.abc.AbstractExchange
    queue: aio_pika.abc.AbstractQueue


_broker = _Broker()


@contextlib.asynccontextmanager
async def _lifespan(app: Starlette) -> AsyncIterator[None]:
    _broker.connection = await aio_pika.connect_robust(os.environ["AMQP_URL"])
    _broker.channel = await _broker.connection.channel()  # publisher confirms: aio-pika's default
    _broker.exchange = await _broker.channel.declare_exchange(
        os.environ["AMQP_EXCHANGE"], aio_pika.ExchangeType.TOPIC
    )
    _broker.queue = await _broker.channel.declare_queue(os.environ["AMQP_QUEUE"])
    await _broker.queue.bind(_broker.exchange, routing_key="orders.#")
    yield
    await _broker.connection.close()


async def orders(request: Request) -> JSONResponse:
    body = await request.json()
    order = {"order": str(uuid.uuid4()), "item": body["item"]}
    message = aio_pika.Message(
        json.dumps({**order, "payment": {"card_token": body["card_token"]}}).encode(),
        content_type="application/json",
        headers={"x-api-token": API_TOKEN},
    )
    await _broker.exchange.publish(message, routing_key="orders.created")
    return JSONResponse(order, status_code=201)


async def depth(request: Request) -> JSONResponse:
    """How many orders wait: the broker's count, asked passively."""
    declared = await _broker.channel.channel.queue_declare(os.environ["AMQP_QUEUE"], passive=True)
    return JSONResponse({"waiting": declared.message_count, "consumers": declared.consumer_count})


async def next_order(request: Request) -> JSONResponse:
    """The oldest waiting order, taken off the queue."""
    message = await _broker.queue.get(no_ack=True, fail=False)
    if message is None:
        return JSONResponse({"order": None})
    body = json.loads(message.body)
    return JSONResponse(
        {"order": body["order"], "item": body["item"], "signed": "x-api-token" in message.headers}
    )


async def unreachable(request: Request) -> JSONResponse:
    """A broker that is not there: aiormq's own error."""
    try:
        await aio_pika.connect(f"amqp://guest:guest@{os.environ['AMQP_CLOSED']}/", timeout=2)
    except aio_pika.exceptions.AMQPConnectionError as exc:
        return JSONResponse({"error": type(exc).__name__}, status_code=503)
    return JSONResponse({"error": None})


def create_app() -> Starlette:
    app = Starlette(
        routes=[
            Route("/orders", orders, methods=["POST"]),
            Route("/orders/depth", depth),
            Route("/orders/next", next_order, methods=["POST"]),
            Route("/unreachable", unreachable),
        ],
        lifespan=_lifespan,
    )
    auto_setup(app)
    return app
