"""A password given at sign-up comes back later with nothing naming it: in a URL, then as an
SQL parameter (a lookup by an invitation code, a reset link). SQLAlchemy on a SQLite file.

``create_app(database_url, config)``; ``app`` for ``timetracer replay --app``, on
``APP_DATABASE`` and the environment's config.
"""

from __future__ import annotations

import os

import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from timetracer_otel.config import TraceConfig
from timetracer_otel.integrations.starlette import auto_setup


def create_app(database_url: str, config: TraceConfig | None = None) -> Starlette:
    engine = sa.create_engine(database_url)

    async def signup(request: Request) -> JSONResponse:
        await request.json()  # {"password": ...}: secret by its name
        return JSONResponse({"ok": True})

    def lookup(request: Request) -> JSONResponse:
        with engine.connect() as connection:
            size = connection.execute(
                sa.text("SELECT length(:code)"), {"code": request.path_params["code"]}
            ).scalar()
        return JSONResponse({"length": size})

    app = Starlette(
        routes=[Route("/signup", signup, methods=["POST"]), Route("/lookup/{code}", lookup)]
    )
    auto_setup(app, config=config, plugins=["sqlalchemy"])
    return app


def app_from_environment() -> Starlette:
    return create_app(os.environ["APP_DATABASE"])
