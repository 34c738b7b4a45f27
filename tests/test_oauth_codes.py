"""An OAuth 2.0 provider's authorization code grant with PKCE (RFC 6749 4.1, RFC 7636), as fief
or authlib serve it: the code is a credential under a name too common to be one alone.

``/authorize`` draws a code, keeps it in Redis and redirects to the client's callback with
it; the client's ``/callback`` receives it in its query beside ``state``; ``/token`` takes it
in a form beside ``grant_type`` and the ``code_verifier``. The callback's and the token
request's cassettes never drew the code, yet none of the three holds it (or the verifier) in
clear, and replay with the key answers all three as recorded. Recorded through uvicorn
against the real Redis; replayed with Redis at a closed port.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import redis.asyncio
from _replay import Sent, assert_same_response, cassette_files, new_reports, send
from _services import closed_port
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse
from starlette.routing import Route

import timetracer_otel
from timetracer_otel.config import TraceConfig
from timetracer_otel.integrations.starlette import auto_setup
from timetracer_otel.redaction import Redactor

_CLIENT = {"client_id": "dashboard", "redirect_uri": "https://client.test/callback"}


def _challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def _app(redis_port: int, prefix: str, config: TraceConfig) -> Starlette:
    cache = redis.asyncio.Redis.from_url(f"redis://127.0.0.1:{redis_port}/0", decode_responses=True)

    async def authorize(request: Request) -> RedirectResponse:
        query = request.query_params
        code = secrets.token_urlsafe(32)
        grant = {"challenge": query["code_challenge"], "redirect_uri": query["redirect_uri"]}
        await cache.set(f"{prefix}:code:{code}", json.dumps(grant), ex=600)
        redirect = urlencode({"code": code, "state": query["state"]})
        return RedirectResponse(f"{query['redirect_uri']}?{redirect}", status_code=302)

    async def callback(request: Request) -> JSONResponse:
        known = await cache.exists(f"{prefix}:code:{request.query_params['code']}")
        return JSONResponse({"code_known": bool(known), "state": request.query_params["state"]})

    async def token(request: Request) -> JSONResponse:
        form = await request.form()
        stored = await cache.getdel(f"{prefix}:code:{form['code']}")
        grant = json.loads(stored) if stored else None
        if (
            grant is None
            or form["grant_type"] != "authorization_code"
            or _challenge(str(form["code_verifier"])) != grant["challenge"]
        ):
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        return JSONResponse({"access_token": secrets.token_urlsafe(24), "token_type": "Bearer"})

    app = Starlette(
        routes=[
            Route("/authorize", authorize),
            Route("/callback", callback),
            Route("/token", token, methods=["POST"]),
        ]
    )
    auto_setup(app, config=config, plugins=["redis"])
    return app


def test_an_authorization_code_and_its_verifier_are_sealed_in_every_cassette(
    serve: Callable[..., Any], cassette_dir: Path
) -> None:
    prefix = f"tt-test:{uuid.uuid4().hex[:12]}"
    verifier, state = secrets.token_urlsafe(48), secrets.token_urlsafe(12)
    authorize: Sent = (
        "GET",
        "/authorize",
        {
            "params": {
                **_CLIENT,
                "response_type": "code",
                "state": state,
                "code_challenge": _challenge(verifier),
                "code_challenge_method": "S256",
            }
        },
    )
    recording = serve(
        _app(6379, prefix, TraceConfig(mode="record", cassette_dir=str(cassette_dir)))
    )
    (redirect,) = send(recording.url, [authorize])
    assert redirect.status_code == 302
    code = parse_qs(urlsplit(redirect.headers["location"]).query)["code"][0]
    form = {**_CLIENT, "grant_type": "authorization_code", "code": code, "code_verifier": verifier}
    sent: list[Sent] = [
        authorize,
        ("GET", "/callback", {"params": {"code": code, "state": state}}),
        ("POST", "/token", {"data": form}),
    ]
    recorded = [redirect, *send(recording.url, sent[1:])]
    assert recorded[1].json() == {"code_known": True, "state": state}
    assert recorded[2].status_code == 200
    assert timetracer_otel.flush(30)

    texts = {path.name: path.read_text("utf-8") for path in cassette_files(cassette_dir)}
    assert len(texts) == 3
    clear = [
        (name, what)
        for name, text in texts.items()
        for what, value in (("code", code), ("verifier", verifier))
        if value in text
    ]
    assert clear == []
    # the state is not a credential: it stays readable where it was sent
    assert sorted(name.split("__")[1] for name, text in texts.items() if state in text) == [
        "authorize",
        "callback",
    ]

    replaying = TraceConfig(mode="replay", cassette_path=str(cassette_dir))
    with new_reports() as reports:
        server = serve(_app(closed_port(), prefix, replaying))
        replayed = send(server.url, sent)
        server.stop()
    for before, after in zip(recorded, replayed, strict=True):
        assert_same_response(before, after)
    assert len(reports) == 3 and all(r.ok and not r.unmatched and not r.unused for r in reports)


@pytest.mark.parametrize(
    ("query", "hidden"),
    [
        ("code=FR&page=2", False),  # a country's code: no OAuth parameter beside it
        ("error=access_denied&code=E1042&detail=x", False),
        ("code=SplxlOBeZQQYbYS6WxSbIA&state=xyz", True),  # the redirect to the callback
        ("grant_type=authorization_code&code=SplxlOBeZQQYbYS6WxSbIA", True),
    ],
)
def test_a_code_is_secret_only_beside_the_parameters_of_an_oauth_exchange(
    query: str, hidden: bool
) -> None:
    redacted = Redactor().query(query)
    assert (redacted != query) is hidden
