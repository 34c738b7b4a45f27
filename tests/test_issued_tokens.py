"""Tokens the app issues and keeps: a login signs a JWT and adds it to the user's set of tokens
in Redis; another request lists them. No secret name announces a token in a set member or in
the reply listing them, and that request's own inbound request never carried them: the JWTs
are still sealed wherever they stand, as text or as bytes, and replay with the key answers
both requests as recorded, the login's SADD matched with the JWT the replay signs again.

Recorded through uvicorn against the real Redis; replayed with Redis at a closed port."""

from __future__ import annotations

import base64
import datetime
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import redis.asyncio
from _replay import assert_same_response, cassette_files, new_reports
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import timetracer_otel
from timetracer_otel.config import TraceConfig
from timetracer_otel.integrations.starlette import auto_setup

_SIGNING_KEY = "a-signing-key-of-the-service-32b!"


def _app(port: int, prefix: str, config: TraceConfig) -> Starlette:
    as_bytes = redis.asyncio.Redis.from_url(f"redis://127.0.0.1:{port}/0")
    as_text = redis.asyncio.Redis.from_url(f"redis://127.0.0.1:{port}/0", decode_responses=True)

    async def login(request: Request) -> JSONResponse:
        user = request.path_params["user"]
        now = datetime.datetime.now(datetime.timezone.utc)
        claims = {"sub": user, "iat": now, "jti": str(uuid.uuid4())}
        token = jwt.encode(claims, _SIGNING_KEY, algorithm="HS256")
        await as_text.sadd(f"{prefix}:tokens:{user}", token)
        return JSONResponse({"issued": True})  # the token reaches the user another way

    async def sessions(request: Request) -> JSONResponse:
        key = f"{prefix}:tokens:{request.path_params['user']}"
        members = await as_bytes.smembers(key)
        one = await as_text.srandmember(key)
        return JSONResponse({"count": len(members), "one_is_listed": one.encode() in members})

    app = Starlette(
        routes=[
            Route("/login/{user}", login, methods=["POST"]),
            Route("/sessions/{user}", sessions),
        ]
    )
    auto_setup(app, config=config, plugins=["redis"])
    return app


def test_tokens_the_app_issued_are_sealed_where_it_keeps_them_and_replay_answers_with_them(
    serve: Callable[..., Any], cassette_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = f"tt-test:{uuid.uuid4().hex[:12]}"
    recording = serve(
        _app(6379, prefix, TraceConfig(mode="record", cassette_dir=str(cassette_dir)))
    )
    try:
        with httpx.Client(base_url=recording.url, timeout=30) as client:
            recorded = [client.post("/login/ada") for _ in range(2)]
            recorded.append(client.get("/sessions/ada"))
        with redis.Redis() as direct:
            tokens = sorted(member.decode() for member in direct.smembers(f"{prefix}:tokens:ada"))
    finally:
        with redis.Redis() as direct:
            direct.delete(f"{prefix}:tokens:ada")
    assert [r.status_code for r in recorded] == [200, 200, 200]
    assert recorded[2].json() == {"count": 2, "one_is_listed": True}
    assert timetracer_otel.flush(30)
    assert len(tokens) == 2 and all(token.startswith("eyJ") for token in tokens)

    cassettes = cassette_files(cassette_dir)
    texts = "".join(path.read_text("utf-8") for path in cassettes)
    for token in tokens:
        assert token not in texts
        assert base64.b64encode(token.encode()).decode() not in texts  # a bytes reply member
    assert texts.count("[SEALED:") >= 4  # two SADDs, the SMEMBERS members, the SRANDMEMBER

    with new_reports() as reports:
        server = serve(_app(1, prefix, TraceConfig(mode="replay", cassette_path=str(cassette_dir))))
        with httpx.Client(base_url=server.url, timeout=30) as client:
            replayed = [
                client.post("/login/ada"),
                client.post("/login/ada"),
                client.get("/sessions/ada"),
            ]
        server.stop()
    for before, after in zip(recorded, replayed, strict=True):
        assert_same_response(before, after)
    assert len(reports) == 3 and all(r.ok and not r.unmatched and not r.unused for r in reports)

    # without the key the sealed values read [REDACTED]: the JWT the login signs again is hidden
    # the same way before it is matched, so its SADD is still answered
    monkeypatch.setenv("TIMETRACER_KEY_FILE", str(cassette_dir / "no-such-key"))
    with new_reports() as reports:
        server = serve(_app(1, prefix, TraceConfig(mode="replay", cassette_path=str(cassette_dir))))
        with httpx.Client(base_url=server.url, timeout=30) as client:
            login = client.post("/login/ada")
        server.stop()
    assert_same_response(recorded[0], login)
    (report,) = reports
    assert report.unmatched == [] and report.answered == [f"SADD {prefix}:tokens:ada [REDACTED]"]
