"""A service whose start-up watchdog, a thread started as its module is imported (before the
server starts, as Phoenix's ``serve`` starts one), reads the clock in a loop until the app has
started and a while after. ``GET /steps`` waits for it to finish and answers whether the clock
it read moved smoothly: no step between two reads of more than a minute."""

from __future__ import annotations

import threading
import time

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from timetracer_otel.integrations.starlette import auto_setup

_READS_AFTER_A_REQUEST = 50
_asked = threading.Event()
_done = threading.Event()
_steps: list[float] = []


def _watch() -> None:
    last, after = time.time(), 0
    while after < _READS_AFTER_A_REQUEST:
        now = time.time()
        _steps.append(now - last)
        last = now
        after += _asked.is_set()
        time.sleep(0.001)
    _done.set()


threading.Thread(target=_watch, daemon=True).start()


async def steps(request: Request) -> JSONResponse:
    _asked.set()
    finished = await anyio.to_thread.run_sync(_done.wait, 30)
    return JSONResponse({"finished": finished, "smooth": max(_steps) < 60})


def create_app() -> Starlette:
    app = Starlette(routes=[Route("/steps", steps)])
    auto_setup(app)
    return app
