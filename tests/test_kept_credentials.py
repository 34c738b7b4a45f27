"""Credentials the app keeps where no secret name announces them, found by their shape.

Tokens it issues: a login signs a JWT and adds it to the user's set of tokens in Redis;
another request lists them, though its own inbound request never carried them. Keys it
signs with: a tenant's RSA key as a JWK in a PostgreSQL row (as fief keeps ``sign_jwk``), a
webhook key as PEM bytes in Redis. Each is sealed wherever it stands, as text or as bytes,
and replay with the key answers as recorded.

Recorded through uvicorn against the real PostgreSQL and Redis; replayed with both at a closed port."""

from __future__ import annotations

import base64
import datetime
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import psycopg
import pytest
import redis.asyncio
from _replay import assert_same_response, cassette_files, new_reports
from _services import POSTGRES_ADMIN, closed_port, postgres_schemas
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from jwt.algorithms import RSAAlgorithm
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


def _signing_app(postgres_url: str, redis_url: str, prefix: str, config: TraceConfig) -> Starlette:
    cache = redis.asyncio.Redis.from_url(redis_url)

    async def token(request: Request) -> JSONResponse:
        async with await psycopg.AsyncConnection.connect(postgres_url) as connection:
            cursor = await connection.execute("SELECT sign_jwk FROM tenants WHERE slug = 'main'")
            (sign_jwk,) = await cursor.fetchone() or ("",)
        claims = {"sub": request.path_params["user"], "jti": str(uuid.uuid4())}
        token = jwt.encode(claims, RSAAlgorithm.from_jwk(sign_jwk), algorithm="RS256")
        webhook_key = serialization.load_pem_private_key(
            await cache.get(f"{prefix}:webhook-key"), password=None
        )
        assert isinstance(webhook_key, rsa.RSAPrivateKey)
        signature = webhook_key.sign(token.encode(), padding.PKCS1v15(), hashes.SHA256())
        return JSONResponse({"access_token": token, "signature": signature.hex()})

    app = Starlette(routes=[Route("/token/{user}", token, methods=["POST"])])
    auto_setup(app, config=config, plugins=["psycopg", "redis"])
    return app


def _private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def test_signing_keys_kept_in_a_row_and_in_redis_are_sealed_and_replay_signs_with_them(
    serve: Callable[..., Any], cassette_dir: Path
) -> None:
    sign_jwk = json.loads(RSAAlgorithm.to_jwk(_private_key()))
    webhook_pem = _private_key().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    prefix = f"tt-test:{uuid.uuid4().hex[:12]}"
    with postgres_schemas("") as schema, redis.Redis() as direct:
        url = f"{POSTGRES_ADMIN}?options=-csearch_path%3D{schema}"
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute("CREATE TABLE tenants (slug TEXT PRIMARY KEY, sign_jwk TEXT)")
            connection.execute("INSERT INTO tenants VALUES ('main', %s)", (json.dumps(sign_jwk),))
        direct.set(f"{prefix}:webhook-key", webhook_pem)
        try:
            config = TraceConfig(mode="record", cassette_dir=str(cassette_dir))
            recording = serve(_signing_app(url, "redis://127.0.0.1:6379/0", prefix, config))
            recorded = httpx.post(f"{recording.url}/token/ada", timeout=30)
        finally:
            direct.delete(f"{prefix}:webhook-key")
    assert recorded.status_code == 200
    assert timetracer_otel.flush(30)

    (cassette,) = cassette_files(cassette_dir)
    text = cassette.read_text("utf-8")
    private = [sign_jwk[member] for member in ("d", "p", "q", "dp", "dq", "qi")]
    pem_lines = webhook_pem.decode().splitlines()[1:-1]
    assert not [value for value in private + pem_lines if value in text]
    assert base64.b64encode(webhook_pem).decode()[:40] not in text
    assert recorded.json()["access_token"] not in text  # an issued token, in the response
    assert sign_jwk["n"] in text  # the public members stay readable

    down = closed_port()
    replaying = TraceConfig(mode="replay", cassette_path=str(cassette_dir))
    offline = url.replace(":5432/", f":{down}/")
    with new_reports() as reports:
        server = serve(_signing_app(offline, f"redis://127.0.0.1:{down}/0", prefix, replaying))
        replayed = httpx.post(f"{server.url}/token/ada", timeout=30)
        server.stop()
    assert_same_response(recorded, replayed)
    (report,) = reports
    assert report.ok and not report.unmatched and not report.unused


def _tenants_app(postgres_url: str, config: TraceConfig) -> Starlette:
    """A tenant gets signing keys of its own when it is created (as fief's tenants do): an RSA key
    for RS256 and an EC key for ES256, kept as JWKs in its row, and an Ed25519 key; the response
    shows the public parts."""

    async def create_tenant(request: Request) -> JSONResponse:
        from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
        from jwt.algorithms import ECAlgorithm

        rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        ec_key = ec.generate_private_key(ec.SECP256R1())
        ed_key = ed25519.Ed25519PrivateKey.generate()
        row = (
            request.path_params["slug"],
            RSAAlgorithm.to_jwk(rsa_key),
            ECAlgorithm.to_jwk(ec_key),
        )
        async with await psycopg.AsyncConnection.connect(postgres_url) as connection:
            await connection.execute("INSERT INTO tenants VALUES (%s, %s, %s)", row)
        public = {
            "rs256": json.loads(RSAAlgorithm.to_jwk(rsa_key.public_key())),
            "es256": json.loads(ECAlgorithm.to_jwk(ec_key.public_key())),
            "eddsa": ed_key.public_key()
            .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            .hex(),
        }
        return JSONResponse(public, status_code=201)

    app = Starlette(routes=[Route("/tenants/{slug}", create_tenant, methods=["POST"])])
    auto_setup(app, config=config, plugins=["psycopg"])
    return app


def test_keys_made_in_a_request_are_the_recorded_ones_in_replay(
    serve: Callable[..., Any], cassette_dir: Path
) -> None:
    """OpenSSL draws a new key's randomness itself: the key is kept as a sealed draw, and the
    replayed request makes the same keys, so its INSERT matches and its response is the recorded one."""
    with postgres_schemas("") as schema:
        url = f"{POSTGRES_ADMIN}?options=-csearch_path%3D{schema}"
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute("CREATE TABLE tenants (slug TEXT, sign_jwk TEXT, es_jwk TEXT)")
        config = TraceConfig(mode="record", cassette_dir=str(cassette_dir))
        recording = serve(_tenants_app(url, config))
        recorded = httpx.post(f"{recording.url}/tenants/bretagne", timeout=30)
        with psycopg.connect(url) as connection:
            (stored,) = connection.execute("SELECT sign_jwk FROM tenants").fetchone() or ("",)
    assert recorded.status_code == 201
    assert timetracer_otel.flush(30)
    (cassette,) = cassette_files(cassette_dir)
    text = cassette.read_text("utf-8")
    assert json.loads(stored)["d"] not in text
    assert "BEGIN PRIVATE KEY" not in text
    keys = [d for d in json.loads(text)["draws"] if d["kind"] == "private_key"]
    assert [d["source"] for d in keys] == ["secrets"] * 3
    assert all(str(d["value"]).startswith("[SEALED:") for d in keys)

    replaying = TraceConfig(mode="replay", cassette_path=str(cassette_dir))
    offline = url.replace(":5432/", f":{closed_port()}/")
    with new_reports() as reports:
        server = serve(_tenants_app(offline, replaying))
        replayed = httpx.post(f"{server.url}/tenants/bretagne", timeout=30)
        server.stop()
    assert_same_response(recorded, replayed)
    (report,) = reports
    assert report.ok and not report.unmatched and not report.unused


def _es256_app(redis_url: str, prefix: str, key_pem: bytes, config: TraceConfig) -> Starlette:
    """A login issuing an ES256 access token, kept in Redis under its digest (as session stores
    do), signed with the service's EC key read at start."""
    import hashlib

    from cryptography.hazmat.primitives.asymmetric import ec

    cache = redis.asyncio.Redis.from_url(redis_url)
    signing_key = serialization.load_pem_private_key(key_pem, password=None)
    assert isinstance(signing_key, ec.EllipticCurvePrivateKey)

    async def login(request: Request) -> JSONResponse:
        now = datetime.datetime.now(datetime.timezone.utc)
        claims = {"sub": request.path_params["user"], "exp": now + datetime.timedelta(hours=1)}
        token = jwt.encode(claims, signing_key, algorithm="ES256")
        digest = hashlib.sha256(token.encode()).hexdigest()
        await cache.set(f"{prefix}:session:{digest}", request.path_params["user"], ex=3600)
        return JSONResponse({"access_token": token, "session": digest})

    app = Starlette(routes=[Route("/login/{user}", login, methods=["POST"])])
    auto_setup(app, config=config, plugins=["redis"])
    return app


def test_an_es256_token_signed_in_a_request_is_the_recorded_one_in_replay(
    serve: Callable[..., Any], cassette_dir: Path
) -> None:
    """OpenSSL draws an ECDSA signature's nonce itself, so the same claims signed twice give two
    tokens. Signed in a recorded or replayed request, the nonce is RFC 6979's (derived from the
    key and the message): the replayed token is the recorded one, the Redis key made from its
    digest matches, and the token still verifies with the public key."""
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    prefix = f"tt-es256-{uuid.uuid4().hex[:8]}"
    recording = TraceConfig(mode="record", cassette_dir=str(cassette_dir))
    server = serve(_es256_app("redis://127.0.0.1:6379/0", prefix, key_pem, recording))
    recorded = httpx.post(f"{server.url}/login/ada", timeout=30)
    assert recorded.status_code == 200
    claims = jwt.decode(recorded.json()["access_token"], key.public_key(), algorithms=["ES256"])
    assert claims["sub"] == "ada"
    assert timetracer_otel.flush(30)

    replaying = TraceConfig(mode="replay", cassette_path=str(cassette_dir))
    offline = f"redis://127.0.0.1:{closed_port()}/0"
    with new_reports() as reports:
        server = serve(_es256_app(offline, prefix, key_pem, replaying))
        replayed = httpx.post(f"{server.url}/login/ada", timeout=30)
        server.stop()
    assert replayed.json() == recorded.json()
    assert_same_response(recorded, replayed)
    (report,) = reports
    assert report.ok and not report.unmatched and not report.unused
