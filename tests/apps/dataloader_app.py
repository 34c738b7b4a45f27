"""The application of the DataLoader test: resolvers of two parents run side by side, each
reading its children's ids on a connection of its own (the second's answer comes later),
then loading each child through one
Strawberry DataLoader, which batches the loads made before it sends a query (the shape of a
GraphQL server's ``datasets { examples { revision } }``). Served by uvicorn with
``--factory dataloader_app:from_environment`` (``DATALOADER_APP_DATABASE``: a SQLAlchemy URL
of PostgreSQL through asyncpg)."""

from __future__ import annotations

import asyncio
import os

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from strawberry.dataloader import DataLoader

from timetracer_otel.integrations.starlette import auto_setup

# the second parent's query answers later (its reply came a moment after the first's)
_CHILDREN = (
    "WITH later AS (SELECT pg_sleep(:pause)) "
    "SELECT :parent * 2 + g FROM generate_series(0, 1) AS g, later"
)
_VALUES = "SELECT k, k * 10 FROM unnest(CAST(:keys AS int[])) AS k"


def create_app(engine: AsyncEngine) -> Starlette:
    async def children(request: Request) -> JSONResponse:
        async def values(keys: list[int]) -> list[int]:
            async with engine.connect() as conn:
                found = dict((await conn.execute(text(_VALUES), {"keys": list(keys)})).all())
            return [found[key] for key in keys]

        loader = DataLoader(load_fn=values)

        async def of(parent: int) -> list[int]:
            async with engine.connect() as conn:
                asked = {"parent": parent, "pause": 0.05 * (parent - 1)}
                ids = [row[0] for row in await conn.execute(text(_CHILDREN), asked)]
            return list(await asyncio.gather(*(loader.load(i) for i in ids)))

        return JSONResponse(await asyncio.gather(*(of(parent) for parent in (1, 2))))

    app = Starlette(routes=[Route("/children", children)])
    auto_setup(app, plugins=["sqlalchemy"])
    return app


def from_environment() -> Starlette:
    return create_app(create_async_engine(os.environ["DATALOADER_APP_DATABASE"]))
