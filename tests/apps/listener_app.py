"""An app whose lifespan starts a Redis pub/sub listener, as fastapi_best_architecture's
cache invalidation does: it subscribes, then reads messages for as long as the app runs;
``POST /invalidate`` publishes one and answers with what the listener has seen.

``from_environment()`` is the ``uvicorn --factory`` entry (``LISTENER_APP_REDIS``,
``LISTENER_APP_CHANNEL``; the config comes from ``TIMETRACER_*``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator

import redis.asyncio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from timetracer_otel.integrations.starlette import auto_setup


def from_environment() -> Starlette:
    client = redis.asyncio.Redis.from_url(os.environ["LISTENER_APP_REDIS"], decode_responses=True)
    channel = os.environ["LISTENER_APP_CHANNEL"]
    seen: list[str] = []
    errors: list[str] = []
    subscribed = asyncio.Event()

    async def listen() -> None:
        while True:
            try:
                pubsub = client.pubsub()
                await pubsub.subscribe(channel)
                async for message in pubsub.listen():
                    if message["type"] == "subscribe":
                        subscribed.set()
                    elif message["type"] == "message":
                        seen.append(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - the app logs and subscribes again
                errors.append(f"{type(error).__name__}: {str(error).splitlines()[0]}")
                print(f"listener_app: listener failed: {errors[-1]}", file=sys.stderr, flush=True)
                await asyncio.sleep(0.05)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(listen())
        await subscribed.wait()
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        print(f"listener_app: stopped, {len(errors)} listener errors", file=sys.stderr, flush=True)

    async def invalidate(request: Request) -> JSONResponse:
        receivers = await client.publish(channel, request.query_params["key"])
        return JSONResponse({"receivers": receivers})

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"errors": errors})

    app = Starlette(
        routes=[Route("/invalidate", invalidate, methods=["POST"]), Route("/health", health)],
        lifespan=lifespan,
    )
    auto_setup(app, plugins=["redis"])
    return app
