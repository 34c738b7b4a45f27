"""A service with bearer-token auth: the token is looked up in SQLite (as a parameter and
quoted in a literal statement), passed to the upstream in a URL, and quoted by an error.

``create_app(upstream_url, config, db_url)``: defaults ``$REPLAY_APP_UPSTREAM`` and
``$TOKEN_APP_DB``; timetracer configured by ``TIMETRACER_*`` without ``config``. The
schema is the test's to make (``create_schema``): in replay no database is reached.
"""

from __future__ import annotations

import os

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from timetracer_otel.config import TraceConfig
from timetracer_otel.integrations.starlette import auto_setup

# A JWT an error message quotes: its header and payload are base64url JSON.
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZGEifQ.c2lnbmF0dXJlLW9mLWFkYQ"


def create_schema(db_url: str, token: str, login: str) -> None:
    with create_engine(db_url).begin() as connection:
        connection.execute(text("CREATE TABLE sessions (token TEXT PRIMARY KEY, login TEXT)"))
        connection.execute(
            text("INSERT INTO sessions VALUES (:token, :login)"), {"token": token, "login": login}
        )


def _token(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token if scheme == "Bearer" and token else None


def _routes(upstream_url: str, engine: Engine) -> list[Route]:
    async def me(request: Request) -> JSONResponse:
        token = _token(request)
        if token is None:
            return JSONResponse({"error": "unauthenticated"}, status_code=401)
        with engine.connect() as connection:
            login = connection.execute(
                text("SELECT login FROM sessions WHERE token = :token"), {"token": token}
            ).scalar()
            seen = connection.execute(
                text(f"SELECT count(*) FROM sessions WHERE token = '{token}'")
            ).scalar()  # noqa: S608
        if login is None:
            return JSONResponse({"error": "unknown token"}, status_code=401)
        async with httpx.AsyncClient() as client:
            upstream = (await client.get(f"{upstream_url}/json", params={"session": token})).json()
        return JSONResponse({"login": login, "seen": seen, "upstream": upstream["login"]})

    async def boom(request: Request) -> JSONResponse:
        raise RuntimeError(f"upstream refused Bearer {_token(request)} and token {JWT}")

    async def public(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    async def login(
        request: Request,
    ) -> JSONResponse:  # quotes the password it was sent, as careless code does
        raise RuntimeError(f"no account matches the password {(await request.json())['password']}")

    return [
        Route("/me", me),
        Route("/boom", boom),
        Route("/public", public),
        Route("/login", login, methods=["POST"]),
    ]


def create_app(
    upstream_url: str | None = None,
    config: TraceConfig | None = None,
    db_url: str | None = None,
) -> Starlette:
    engine = create_engine(db_url or os.environ["TOKEN_APP_DB"])
    app = Starlette(routes=_routes(upstream_url or os.environ["REPLAY_APP_UPSTREAM"], engine))
    auto_setup(app, config=config, plugins=["httpx", "sqlalchemy"])
    return app
