"""Applications with no timetracer code: ``opentelemetry-instrument`` alone records and replays them.

``/profile/{name}`` calls the upstream named by ``PLAIN_APP_UPSTREAM`` twice with httpx,
forwarding the caller's Authorization header, and answers with what it got. ``/broken``
calls it once, then raises: Starlette's error middleware answers 500. ``app`` is
Starlette, ``fastapi_app`` the same routes on FastAPI.
"""

from __future__ import annotations

import os

import httpx
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

UPSTREAM = os.environ["PLAIN_APP_UPSTREAM"]


async def profile(request: Request) -> JSONResponse:
    headers = {"Authorization": request.headers.get("authorization", "")}
    async with httpx.AsyncClient() as client:
        user = (await client.get(f"{UPSTREAM}/json", headers=headers)).json()
        echo = (
            await client.post(f"{UPSTREAM}/echo", json={"name": request.path_params["name"]})
        ).json()
    return JSONResponse({"login": user["login"], "echo": echo})


async def broken(request: Request) -> JSONResponse:
    async with httpx.AsyncClient() as client:
        await client.get(f"{UPSTREAM}/json")
    raise RuntimeError("the app fails after its call")


app = Starlette(routes=[Route("/profile/{name}", profile), Route("/broken", broken)])
fastapi_app = FastAPI()
fastapi_app.add_api_route("/profile/{name}", profile)
fastapi_app.add_api_route("/broken", broken)
