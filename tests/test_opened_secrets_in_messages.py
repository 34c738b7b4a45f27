"""What a mismatch says hides the secrets the key opened in any cassette of the process, not
only in the one replayed: a session token one request drew, sealed in its cassette, that a
later request's live call carries where the recording had another one, is not printed.

Through uvicorn and the machine's Redis (session keys, as fastapi-admin's are). The app keeps
the last token it issued in memory (as a single-user tool might), so replaying the two logins
before the lookup makes the lookup's key carry the second token, which its cassette never saw.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis.asyncio
from _replay import new_reports, send
from _services import REDIS, redis_namespace
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import timetracer_otel
from timetracer_otel.config import TraceConfig
from timetracer_otel.integrations.starlette import auto_setup


def _create_app(prefix: str, config: TraceConfig) -> Starlette:
    store = redis.asyncio.Redis.from_url(REDIS.format(port=6379), decode_responses=True)
    issued: dict[str, str] = {}

    async def login(request: Request) -> JSONResponse:
        token = secrets.token_urlsafe(24)
        await store.set(f"{prefix}session:{token}", "ada")
        issued["last"] = token
        return JSONResponse({"token": token})

    async def whoami(request: Request) -> JSONResponse:
        return JSONResponse({"login": await store.get(f"{prefix}session:{issued['last']}")})

    app = Starlette(routes=[Route("/login", login, methods=["POST"]), Route("/whoami", whoami)])
    auto_setup(app, config=config)
    return app


def test_a_mismatch_hides_a_token_the_key_opened_in_another_cassette(
    serve: Callable[..., Any], cassette_dir: Path, capfd: Any
) -> None:
    with redis_namespace() as prefix:
        record = serve(
            _create_app(prefix, TraceConfig(mode="record", cassette_dir=str(cassette_dir)))
        )
        recorded = send(
            record.url, [("POST", "/login", {}), ("GET", "/whoami", {}), ("POST", "/login", {})]
        )
        assert timetracer_otel.flush(30), "cassette writer did not drain"
    first, second = recorded[0].json()["token"], recorded[2].json()["token"]

    with new_reports() as reports:
        replay = serve(
            _create_app(prefix, TraceConfig(mode="replay", cassette_path=str(cassette_dir)))
        )
        replayed = send(
            replay.url, [("POST", "/login", {}), ("POST", "/login", {}), ("GET", "/whoami", {})]
        )
        replay.stop()
    assert [r.json()["token"] for r in replayed[:2]] == [first, second]
    assert replayed[2].status_code == 500
    (lookup,) = [r for r in reports if r.path == "/whoami"]
    (error,) = lookup.unmatched
    assert f"no recorded call matches GET {prefix}session:[REDACTED] (redis)" in error
    printed = capfd.readouterr()
    for shown in (error, json.dumps(lookup.calls), printed.out + printed.err):
        assert second not in shown
