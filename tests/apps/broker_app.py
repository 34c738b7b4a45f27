"""An app that opens its message broker's connection as it starts, with a client library
timetracer does not replay (an asyncio stream here, as AMQP or NATS clients use), then serves
``/ping``. ``BROKER_APP_ADDRESS`` is the broker's ``host:port``.

``uvicorn --factory broker_app:create``."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from timetracer_otel.integrations.starlette import auto_setup


async def _announce() -> None:
    host, port = os.environ["BROKER_APP_ADDRESS"].rsplit(":", 1)
    _, broker = await asyncio.open_connection(host, int(port))
    broker.write(b"hello\n")
    await broker.drain()
    broker.close()
    await broker.wait_closed()


@contextlib.asynccontextmanager
async def _lifespan(app: Starlette) -> AsyncIterator[None]:
    await _announce()  # the connection, and a second one: a reconnect
    await _announce()
    yield


def create() -> Starlette:
    async def ping(request: Request) -> JSONResponse:
        return JSONResponse({"pong": True})

    app = Starlette(routes=[Route("/ping", ping)], lifespan=_lifespan)
    auto_setup(app)
    return app
