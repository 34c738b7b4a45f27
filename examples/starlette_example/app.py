"""The user guide's Quick Start app (Option 1, ``auto_setup``), calling a local upstream.

``UPSTREAM_URL`` replaces https://api.github.com so the example works offline; start
one with ``python upstream.py`` (it listens on http://127.0.0.1:8001, the default here).
"""

import os

import httpx
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from timetracer_otel.integrations.starlette import auto_setup

UPSTREAM_URL = os.environ.get("UPSTREAM_URL", "http://127.0.0.1:8001")


async def homepage(request):
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{UPSTREAM_URL}/users/octocat")
        data = response.json()
    return JSONResponse({"user": data["login"]})


app = Starlette(
    debug=True,
    routes=[
        Route("/", homepage),
    ],
)

# Configure in one line
auto_setup(app, plugins=["httpx"])
