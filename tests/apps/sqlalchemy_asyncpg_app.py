"""A FastAPI-style service on SQLAlchemy's asyncio engine over asyncpg, set up as the asyncpg
docs show it (``auto_setup(app, plugins=["asyncpg"])``): the engine's URL is ``$APP_DB_URL``."""

from __future__ import annotations

import os

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from timetracer_otel.integrations.starlette import auto_setup


def create_app() -> Starlette:
    engine = create_async_engine(os.environ["APP_DB_URL"])

    async def square(request: Request) -> JSONResponse:
        number = int(request.path_params["number"])
        async with engine.connect() as connection:
            found = await connection.execute(
                text("SELECT CAST(:n AS int) * :n AS v"), {"n": number}
            )
            return JSONResponse({"square": found.scalar_one()})

    app = Starlette(routes=[Route("/square/{number}", square)])
    auto_setup(app, plugins=["asyncpg"])
    return app
