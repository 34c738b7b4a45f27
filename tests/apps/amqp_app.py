"""An order service on RabbitMQ, as services use it: kombu over py-amqp, its connection opened
as the app starts, publishing with confirms; orders carry a payment token and the producer
an API token in each message's headers. ``AMQP_URL`` names the broker, ``AMQP_QUEUE`` the
queue of this run and ``AMQP_EXCHANGE`` its exchange, ``AMQP_CLOSED`` a ``host:port`` nothing listens on.

``uvicorn --factory amqp_app:create_app``."""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import AsyncIterator

import amqp
from kombu import Connection, Exchange, Producer, Queue
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from timetracer_otel.integrations.starlette import auto_setup

API_TOKEN = "tok-7f3a9c2e51d84b06a1e2"  # a secret the producer sends with each message


def _exchange() -> Exchange:
    return Exchange(os.environ["AMQP_EXCHANGE"], type="topic", durable=False)


def _queue() -> Queue:
    return Queue(
        os.environ["AMQP_QUEUE"],
        _exchange(),
        routing_key="orders.#",
        durable=False,
        auto_delete=False,
    )


class _Broker:
    """The connection and producer the app opens once, at start."""

    connection: Connection
    producer: Producer


_broker = _Broker()


@contextlib.asynccontextmanager
async def _lifespan(app: Starlette) -> AsyncIterator[None]:
    connection = Connection(os.environ["AMQP_URL"], transport_options={"confirm_publish": True})
    connection.connect()
    _broker.connection = connection
    _broker.producer = Producer(connection.channel(), exchange=_exchange())
    _queue().bind(_broker.producer.channel).declare()
    yield
    connection.release()


def place_order(request_body: dict) -> dict:
    order = {"order": str(uuid.uuid4()), "item": request_body["item"]}
    _broker.producer.publish(
        {**order, "payment": {"card_token": request_body["card_token"]}},
        routing_key="orders.created",
        serializer="json",
        headers={"x-api-token": API_TOKEN},
    )
    return order


async def orders(request: Request) -> JSONResponse:
    return JSONResponse(place_order(await request.json()), status_code=201)


async def depth(request: Request) -> JSONResponse:
    """How many orders wait: the broker's count, asked passively."""
    _, waiting, consumers = _broker.producer.channel.queue_declare(
        os.environ["AMQP_QUEUE"], passive=True
    )
    return JSONResponse({"waiting": waiting, "consumers": consumers})


async def next_order(request: Request) -> JSONResponse:
    """The oldest waiting order, taken off the queue."""
    message = _queue().bind(_broker.producer.channel).get(no_ack=True)
    if message is None:
        return JSONResponse({"order": None})
    body = json.loads(message.body)
    return JSONResponse(
        {"order": body["order"], "item": body["item"], "signed": "x-api-token" in message.headers}
    )


async def unreachable(request: Request) -> JSONResponse:
    """A broker that is not there: py-amqp's own error."""
    try:
        amqp.Connection(os.environ["AMQP_CLOSED"], connect_timeout=2).connect()
    except OSError as exc:
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
