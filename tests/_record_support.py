"""Helpers shared by the record tests: counters, scripts run in a fresh Python process,
and the barrier app the concurrency tests record."""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import timetracer_otel
from timetracer_otel.config import TraceConfig
from timetracer_otel.integrations.starlette import auto_setup

# One SSL context for every client: at a thousand clients, each loading the CA bundle is slow.
SHARED_SSL = ssl.create_default_context()

_TESTS = Path(__file__).parent


def stat(name: str) -> int:
    """One of ``timetracer_otel.stats()``, 0 when it never happened."""
    return timetracer_otel.stats().get(name, 0)


def run_python(script: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``script`` in a new interpreter (fresh logging and counters) that can import the test modules."""
    path = os.pathsep.join(filter(None, [str(_TESTS), os.environ.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=120,
    )


class Barrier:
    """Holds each request until ``expected`` requests arrived, so they really overlap in one event loop."""

    def __init__(self, expected: int, seconds: float) -> None:
        self._expected, self._seconds = expected, seconds
        self._arrived = 0
        self._everyone: asyncio.Event | None = None

    async def wait(self) -> None:
        self._everyone = self._everyone or asyncio.Event()
        self._arrived += 1
        if self._arrived == self._expected:
            self._everyone.set()
        await asyncio.wait_for(self._everyone.wait(), self._seconds)


def barrier_app(
    config: TraceConfig, upstream_url: str, expected: int, barrier_seconds: float
) -> Starlette:
    """``/items/{i}`` waits until ``expected`` requests arrived, then calls ``upstream /echo?i=<i>``."""
    barrier = Barrier(expected, barrier_seconds)

    async def item(request: Request) -> JSONResponse:
        await barrier.wait()
        async with httpx.AsyncClient(timeout=30, verify=SHARED_SSL) as client:
            echo = (
                await client.get(f"{upstream_url}/echo", params={"i": request.path_params["i"]})
            ).json()
        return JSONResponse({"echo": echo["query"]})

    app = Starlette(routes=[Route("/items/{i:int}", item)])
    auto_setup(app, config=config, plugins=["httpx"])
    return app


def calls_by_path(cassettes: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Request path -> the URLs of the calls its cassette holds."""
    return {
        c["request"]["path"]: [call["request"]["url"] for call in c["calls"]] for c in cassettes
    }
