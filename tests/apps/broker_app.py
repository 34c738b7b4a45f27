"""An app that opens its message broker's connection as it starts, with a client library
timetracer does not replay (a raw socket here, as AMQP or NATS clients use), then serves
``/ping``. ``BROKER_APP_ADDRESS`` is the broker's ``host:port``.

``uvicorn --factory broker_app:create``."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from timetracer_otel.integrations.starlette import auto_setup


def _announce() -> None:
    host, port = os.environ["BROKER_APP_ADDRESS"].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as broker:
        broker.sendall(b"hello\n")


@contextlib.asynccontextmanager
async def _lifespan(app: Starlette) -> AsyncIterator[None]:
    _announce()  # the connection, and a second one: a reconnect
    _announce()
    yield


def create() -> Starlette:
    async def ping(request: Request) -> JSONResponse:
        return JSONResponse({"pong": True})

    app = Starlette(routes=[Route("/ping", ping)], lifespan=_lifespan)
    auto_setup(app)
    return app
