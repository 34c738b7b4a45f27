"""The application: lifespan start-up checks, CORS, a request-id header and the API routers."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from starlette.concurrency import run_in_threadpool
from starlette.middleware.cors import CORSMiddleware

from .cache import redis_client
from .config import settings
from .db import engine, init_db
from .routes import api_router


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Fail fast when a dependency is missing: ping Redis and create the tables before serving."""
    await run_in_threadpool(redis_client.ping)
    await run_in_threadpool(init_db)
    yield
    redis_client.close()
    engine.dispose()


async def request_id(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    """Every response names its request, so a client's bug report can be found in the logs."""
    response = await call_next(request)
    response.headers["X-Request-ID"] = request.headers.get("X-Request-ID") or uuid.uuid4().hex
    return response


def create_app() -> FastAPI:
    app = FastAPI(
        title=settings.PROJECT_NAME,
        openapi_url=f"{settings.API_V1_STR}/openapi.json",
        lifespan=lifespan,
    )
    app.add_middleware(
        CORSMiddleware,
        allow_origins=[settings.FRONTEND_HOST],
        allow_credentials=True,
        allow_methods=["*"],
        allow_headers=["*"],
    )
    app.middleware("http")(request_id)
    app.include_router(api_router, prefix=settings.API_V1_STR)
    return app
