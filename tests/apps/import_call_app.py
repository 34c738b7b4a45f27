"""An app module that calls its upstream while it is imported, after timetracer's integration
and before ``auto_setup``, as a database engine checking the server's version when it is
built does (piccolo's ``PostgresEngine``). Like such an engine, it keeps the outcome, a
failure included, and goes on; ``/checked`` shows it.

``uvicorn --factory import_call_app:create``, ``REPLAY_APP_UPSTREAM`` naming the upstream."""

from __future__ import annotations

import os

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from timetracer_otel.integrations.starlette import auto_setup


def _check() -> str:
    try:
        answer = httpx.get(f"{os.environ['REPLAY_APP_UPSTREAM']}/json", params={"check": "version"})
        return answer.text
    except Exception as exc:  # as the engine does: a warning, and the app starts
        return f"{type(exc).__name__}: {exc}"


CHECKED = _check()


def create() -> Starlette:
    async def checked(request: Request) -> JSONResponse:
        return JSONResponse({"checked": CHECKED})

    app = Starlette(routes=[Route("/checked", checked)])
    auto_setup(app, plugins=["httpx"])
    return app
