"""An app that gunicorn's forked workers serve: each worker imports it after the fork, so
each draws a signing key of its own as it starts; ``/whoami`` says which worker answered."""

from __future__ import annotations

import os
import secrets

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

SIGNING_KEY = secrets.token_hex(8)


async def whoami(request: Request) -> JSONResponse:
    return JSONResponse({"pid": os.getpid(), "key": SIGNING_KEY})


app = Starlette(routes=[Route("/whoami", whoami)])
