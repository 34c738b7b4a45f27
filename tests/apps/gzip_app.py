"""A service behind Starlette's GZipMiddleware: ``GET /health`` answers a text long enough to be
compressed for a client that accepts gzip, and as it is for one that does not."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from timetracer_otel.integrations.starlette import auto_setup


async def health(request: Request) -> PlainTextResponse:
    return PlainTextResponse("healthy\n" * 100)


def create_app() -> Starlette:
    app = Starlette(
        routes=[Route("/health", health)], middleware=[Middleware(GZipMiddleware, minimum_size=100)]
    )
    auto_setup(app)
    return app
