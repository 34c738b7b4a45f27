"""Credentials the app keeps where no secret name announces them, found by their shape.

Tokens it issues: a login signs a JWT and adds it to the user's set of tokens in Redis;
another request lists them, though its own inbound request never carried them. Keys it
signs with: a tenant's RSA key as a JWK in a PostgreSQL row (as fief keeps ``sign_jwk``), a
webhook key as PEM bytes in Redis. Each is sealed wherever it stands, as text or as bytes,
and replay with the key answers as recorded.

Recorded through uvicorn against the real PostgreSQL and Redis; replayed with both at a closed port."""

from __future__ import annotations

import base64
import contextlib
import datetime
import hashlib
import hmac
import json
import random
import secrets
import string
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import bcrypt
import boto3
import botocore.config
import httpx
import jwt
import psycopg
import pytest
import redis.asyncio
from _replay import assert_same_response, cassette_files, new_reports
from _services import POSTGRES_ADMIN, closed_port, postgres_schemas
from argon2 import PasswordHasher
from conftest import Upstream
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
from timetracer_otel.secret_names import SecretNames
from timetracer_otel.secret_values import kept_credentials

_SIGNING_KEY = "a-signing-key-of-the-service-32b!"


@contextlib.contextmanager
def _database(create: str) -> Iterator[str]:
    """A schema of its own on the test PostgreSQL, holding the table ``create`` makes: its URL."""
    with postgres_schemas("") as schema:
        url = f"{POSTGRES_ADMIN}?options=-csearch_path%3D{schema}"
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute(create)
        yield url


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
    with _database("CREATE TABLE tenants (slug TEXT, sign_jwk TEXT, es_jwk TEXT)") as url:
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


def _pem(key: Any, public: bool = False) -> bytes:
    if public:
        return key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


# Each issues a token for claims with the service's private key (PEM), and reads one back:
# (issue(claims, pem) -> token, read(token, pem) -> claims). OpenSSL draws the nonce of an
# ECDSA signature, the salt of an RSA-PSS one and the padding of RSA encryption itself.
def _pyjwt(algorithm: str) -> tuple[Callable[..., str], Callable[..., dict[str, Any]]]:
    return (
        lambda claims, pem: jwt.encode(claims, pem, algorithm=algorithm),
        lambda token, pem: jwt.decode(token, _public_pem(pem), algorithms=[algorithm]),
    )


def _public_pem(pem: bytes) -> bytes:
    return _pem(serialization.load_pem_private_key(pem, password=None), public=True)


def _jwcrypto(header: dict[str, str]) -> tuple[Callable[..., str], Callable[..., dict[str, Any]]]:
    from jwcrypto import jwk
    from jwcrypto import jwt as jwcrypto_jwt

    def issue(claims: dict[str, Any], pem: bytes) -> str:
        token = jwcrypto_jwt.JWT(header=header, claims=claims)
        key = jwk.JWK.from_pem(pem)
        if "enc" in header:  # encrypted to the public key, as fief encrypts ID tokens
            token.make_encrypted_token(jwk.JWK.from_pem(_public_pem(pem)))
        else:
            token.make_signed_token(key)
        return str(token.serialize())

    def read(token: str, pem: bytes) -> dict[str, Any]:
        kind = "JWE" if "enc" in header else "JWS"
        read = jwcrypto_jwt.JWT(jwt=token, key=jwk.JWK.from_pem(pem), expected_type=kind)
        return dict(json.loads(read.claims))

    return issue, read


def _joserfc(header: dict[str, str]) -> tuple[Callable[..., str], Callable[..., dict[str, Any]]]:
    from joserfc import jwe
    from joserfc import jwt as joserfc_jwt
    from joserfc.jwk import RSAKey

    algorithms = [*header.values()]

    def issue(claims: dict[str, Any], pem: bytes) -> str:
        if "enc" in header:
            payload = json.dumps(claims).encode()
            public = RSAKey.import_key(_public_pem(pem))
            return jwe.encrypt_compact(header, payload, public, algorithms=algorithms)
        return joserfc_jwt.encode(header, claims, RSAKey.import_key(pem), algorithms=algorithms)

    def read(token: str, pem: bytes) -> dict[str, Any]:
        key = RSAKey.import_key(pem)
        if "enc" in header:
            plaintext = jwe.decrypt_compact(token, key, algorithms=algorithms).plaintext
            return dict(json.loads(plaintext or b"{}"))
        return dict(joserfc_jwt.decode(token, key, algorithms=algorithms).claims)

    return issue, read


def _authlib(header: dict[str, str]) -> tuple[Callable[..., str], Callable[..., dict[str, Any]]]:
    import warnings

    with warnings.catch_warnings():  # authlib.jose is deprecated for joserfc, and still used
        warnings.simplefilter("ignore")
        from authlib.jose import JsonWebEncryption
        from authlib.jose import jwt as authlib_jwt

    def issue(claims: dict[str, Any], pem: bytes) -> str:
        if "enc" in header:
            data = JsonWebEncryption().serialize_compact(
                header, json.dumps(claims).encode(), _public_pem(pem)
            )
            return bytes(data).decode()
        return bytes(authlib_jwt.encode(header, claims, pem)).decode()

    def read(token: str, pem: bytes) -> dict[str, Any]:
        if "enc" in header:
            return dict(json.loads(JsonWebEncryption().deserialize_compact(token, pem)["payload"]))
        return dict(authlib_jwt.decode(token, _public_pem(pem)))

    return issue, read


_JWE_OAEP = {"alg": "RSA-OAEP-256", "enc": "A256GCM"}
_TOKENS = {
    "pyjwt-ES256": (_pyjwt("ES256"), "ec"),
    "pyjwt-PS256": (_pyjwt("PS256"), "rsa"),
    "jwcrypto-PS256": (_jwcrypto({"alg": "PS256"}), "rsa"),
    "jwcrypto-RSA-OAEP-256": (_jwcrypto(_JWE_OAEP), "rsa"),
    "joserfc-PS384": (_joserfc({"alg": "PS384"}), "rsa"),
    "joserfc-RSA-OAEP-256": (_joserfc(_JWE_OAEP), "rsa"),
    "authlib-PS512": (_authlib({"alg": "PS512"}), "rsa"),
    "authlib-RSA-OAEP": (_authlib({"alg": "RSA-OAEP", "enc": "A128CBC-HS256"}), "rsa"),
}


def _token_app(
    redis_url: str, prefix: str, key_pem: bytes, issue: Callable[..., str], config: TraceConfig
) -> Starlette:
    """A login issuing an access token, kept in Redis under its digest (as session stores do),
    signed or encrypted with the service's key read at start."""
    import hashlib

    cache = redis.asyncio.Redis.from_url(redis_url)

    async def login(request: Request) -> JSONResponse:
        now = datetime.datetime.now(datetime.timezone.utc)
        claims = {"sub": request.path_params["user"], "exp": int(now.timestamp()) + 3600}
        token = issue(claims, key_pem)
        digest = hashlib.sha256(token.encode()).hexdigest()
        await cache.set(f"{prefix}:session:{digest}", request.path_params["user"], ex=3600)
        return JSONResponse({"access_token": token, "session": digest})

    app = Starlette(routes=[Route("/login/{user}", login, methods=["POST"])])
    auto_setup(app, config=config, plugins=["redis"])
    return app


@pytest.mark.parametrize("token_kind", _TOKENS)
def test_a_token_openssl_randomises_is_the_recorded_one_in_replay(
    serve: Callable[..., Any], cassette_dir: Path, token_kind: str
) -> None:
    """The same claims signed (ES256, PS*) or encrypted (JWE with RSA) twice give two tokens.
    Made in a recorded request, the ECDSA nonce is RFC 6979's (derived from the key and the
    message) and the RSA output is drawn: the replayed token is the recorded one, the Redis
    key made from its digest matches, and the token still reads with the key."""
    from cryptography.hazmat.primitives.asymmetric import ec

    (issue, read), key_type = _TOKENS[token_kind]
    key = (
        ec.generate_private_key(ec.SECP256R1())
        if key_type == "ec"
        else rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    key_pem = _pem(key)
    assert issue({"sub": "x"}, key_pem) != issue({"sub": "x"}, key_pem)  # randomised
    prefix = f"tt-tokens-{uuid.uuid4().hex[:8]}"
    recording = TraceConfig(mode="record", cassette_dir=str(cassette_dir))
    server = serve(_token_app("redis://127.0.0.1:6379/0", prefix, key_pem, issue, recording))
    recorded = httpx.post(f"{server.url}/login/ada", timeout=30)
    assert recorded.status_code == 200
    assert read(recorded.json()["access_token"], key_pem)["sub"] == "ada"
    assert timetracer_otel.flush(30)
    (cassette,) = cassette_files(cassette_dir)
    drawn = [
        draw
        for draw in json.loads(cassette.read_text("utf-8"))["draws"]
        if draw["kind"] in ("signature", "encryption")
    ]
    assert len(drawn) == (key_type == "rsa")  # RFC 6979 keeps nothing
    assert all(str(draw["value"]).startswith("[SEALED:") for draw in drawn)

    replaying = TraceConfig(mode="replay", cassette_path=str(cassette_dir))
    offline = f"redis://127.0.0.1:{closed_port()}/0"
    with new_reports() as reports:
        server = serve(_token_app(offline, prefix, key_pem, issue, replaying))
        replayed = httpx.post(f"{server.url}/login/ada", timeout=30)
        server.stop()
    assert replayed.json() == recorded.json()
    assert_same_response(recorded, replayed)
    (report,) = reports
    assert report.ok and not report.unmatched and not report.unused


def test_a_drawn_signature_is_given_back_only_for_the_message_and_key_it_was_made_for() -> None:
    """Replay hands the recorded PS256 signature to the same claims signed with the same key;
    other claims, or another key, get a new signature that verifies."""
    from timetracer_otel.determinism import (
        DrawRecorder,
        DrawReplayer,
        activate,
        deactivate,
        decode_draws,
        install,
        real_time_ns,
    )
    from timetracer_otel.determinism.state import encode_draws

    install(["secrets"])
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    recorder = DrawRecorder(["secrets"])
    token = activate(recorder)
    try:
        recorded = jwt.encode({"sub": "ada"}, key, algorithm="PS256")
    finally:
        deactivate(token)
    assert [draw[1] for draw in recorder.draws] == ["signature"]

    def replayed(claims: dict[str, str], signing_key: Any) -> str:
        replayer = DrawReplayer(
            decode_draws(encode_draws(recorder.draws)), ["secrets"], real_time_ns
        )
        token = activate(replayer)
        try:
            return jwt.encode(claims, signing_key, algorithm="PS256")
        finally:
            deactivate(token)

    assert replayed({"sub": "ada"}, key) == recorded
    for claims, signing_key in (({"sub": "bob"}, key), ({"sub": "ada"}, other_key)):
        new = replayed(claims, signing_key)
        assert new.rsplit(".", 1)[1] != recorded.rsplit(".", 1)[1]
        public = signing_key.public_key()
        assert jwt.decode(new, public, algorithms=["PS256"]) == claims


def _presigning_app(upstream_url: str, config: TraceConfig) -> Starlette:
    """Signed URLs made in a request, as storage-backed services hand out downloads: an S3
    presigned URL (boto3, from the clock and the credentials; fetched once to check it) and an
    Azure-style SAS whose ``sig`` is an HMAC of its expiry."""
    s3 = boto3.client(
        "s3",
        endpoint_url=upstream_url,
        region_name="us-east-1",
        aws_access_key_id="AKIAEXAMPLEEXAMPLE00",
        aws_secret_access_key="the-test-secret-access-key-0123456789abc",
        config=botocore.config.Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )

    async def download(request: Request) -> JSONResponse:
        name = request.path_params["name"]
        presigned = s3.generate_presigned_url(
            "get_object", Params={"Bucket": "avatars", "Key": name}, ExpiresIn=3600
        )
        async with httpx.AsyncClient() as client:
            fetched = await client.get(presigned)
        expiry = (
            datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
        ).strftime("%Y-%m-%dT%H:%M:%SZ")
        digest = hmac.new(_SIGNING_KEY.encode(), f"r\n{expiry}\n/{name}".encode(), "sha256")
        sas = f"{upstream_url}/blobs/{name}?sv=2022-11-02&se={expiry}&sr=b&sp=r&sig=" + quote(
            base64.b64encode(digest.digest()).decode(), safe=""
        )
        return JSONResponse({"url": presigned, "status": fetched.status_code, "sas": sas})

    app = Starlette(routes=[Route("/download/{name}", download)])
    auto_setup(app, config=config, plugins=["httpx"])
    return app


def test_signed_urls_are_sealed_wherever_they_stand_and_replay_gives_them_back(
    serve: Callable[..., Any], upstream: Upstream, cassette_dir: Path
) -> None:
    """A signed URL grants access to whoever holds it until it expires: its signature is
    sealed in the response that hands it out and in the call that fetches it, and replay with
    the key answers the fetch and gives back the same URLs."""
    recording = serve(
        _presigning_app(upstream.url, TraceConfig(mode="record", cassette_dir=str(cassette_dir)))
    )
    with httpx.Client(base_url=recording.url, timeout=30) as client:
        recorded = client.get("/download/ada.png")
    assert timetracer_otel.flush(30)
    urls = recorded.json()
    signatures = [
        parse_qs(urlsplit(urls["url"]).query)["X-Amz-Signature"][0],
        urlsplit(urls["sas"]).query.rpartition("sig=")[2],
    ]
    assert urls["status"] == 404 and all(len(signature) > 40 for signature in signatures)
    (cassette,) = cassette_files(cassette_dir)
    text = cassette.read_text("utf-8")
    assert [signature in text for signature in signatures] == [False, False]
    assert "X-Amz-Credential=AKIAEXAMPLEEXAMPLE00" in text  # the key id names, it grants nothing

    with new_reports() as reports:
        server = serve(
            _presigning_app(upstream.url, TraceConfig(mode="replay", cassette_path=str(cassette)))
        )
        with httpx.Client(base_url=server.url, timeout=30) as client:
            replayed = client.get("/download/ada.png")
        server.stop()
    assert_same_response(recorded, replayed)
    (report,) = reports
    assert report.ok and not report.unmatched and not report.unused, report.console_text()


def _users_app(postgres_url: str, redis_url: str, prefix: str, config: TraceConfig) -> Starlette:
    """Users kept as fastapi-realworld-example-app keeps them: a bcrypt salt in a column of its
    own and the hash under a name no secret list holds (``pw``); an argon2 hash in Redis."""
    import bcrypt
    from argon2 import PasswordHasher

    cache = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
    argon2 = PasswordHasher()

    async def register(request: Request) -> JSONResponse:
        name = request.path_params["user"]
        salt = bcrypt.gensalt()
        row = (name, salt.decode(), bcrypt.hashpw(b"correct horse", salt).decode())
        async with await psycopg.AsyncConnection.connect(postgres_url) as connection:
            await connection.execute("INSERT INTO users VALUES (%s, %s, %s)", row)
        await cache.set(f"{prefix}:argon2:{name}", argon2.hash("correct horse"))
        return JSONResponse({"registered": name}, status_code=201)

    async def check(request: Request) -> JSONResponse:
        name = request.path_params["user"]
        async with await psycopg.AsyncConnection.connect(postgres_url) as connection:
            cursor = await connection.execute("SELECT salt, pw FROM users WHERE name = %s", (name,))
            salt, pw = await cursor.fetchone() or ("", "")
        stored = await cache.get(f"{prefix}:argon2:{name}")
        return JSONResponse(
            {
                "bcrypt": bcrypt.hashpw(b"correct horse", salt.encode()).decode() == pw,
                "argon2": argon2.verify(stored, "correct horse"),
            }
        )

    app = Starlette(
        routes=[
            Route("/users/{user}", register, methods=["POST"]),
            Route("/users/{user}/check", check),
        ]
    )
    auto_setup(app, config=config, plugins=["psycopg", "redis"])
    return app


def test_password_hashes_and_salts_read_back_are_sealed_by_their_shape(
    serve: Callable[..., Any], cassette_dir: Path
) -> None:
    """The request that reads a user back draws no salt of its own: its salt and hashes, under
    ordinary names, are found by their shape, sealed, and opened by replay with the key."""
    prefix = f"tt-test:{uuid.uuid4().hex[:12]}"
    with postgres_schemas("") as schema, redis.Redis(decode_responses=True) as direct:
        url = f"{POSTGRES_ADMIN}?options=-csearch_path%3D{schema}"
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute("CREATE TABLE users (name TEXT PRIMARY KEY, salt TEXT, pw TEXT)")
        try:
            config = TraceConfig(mode="record", cassette_dir=str(cassette_dir))
            recording = serve(_users_app(url, "redis://127.0.0.1:6379/0", prefix, config))
            with httpx.Client(base_url=recording.url, timeout=30) as client:
                recorded = [client.post("/users/ada"), client.get("/users/ada/check")]
            with psycopg.connect(url) as connection:
                salt, pw = connection.execute("SELECT salt, pw FROM users").fetchone() or ("", "")
            stored = direct.get(f"{prefix}:argon2:ada")
        finally:
            direct.delete(f"{prefix}:argon2:ada")
    assert [r.status_code for r in recorded] == [201, 200]
    assert recorded[1].json() == {"bcrypt": True, "argon2": True}
    assert timetracer_otel.flush(30)
    assert pw.startswith(salt) and stored.startswith("$argon2id$")
    texts = "".join(path.read_text("utf-8") for path in cassette_files(cassette_dir))
    assert [value for value in (salt, pw, stored, stored.rsplit("$", 1)[1]) if value in texts] == []

    down = closed_port()
    replaying = TraceConfig(mode="replay", cassette_path=str(cassette_dir))
    offline = url.replace(":5432/", f":{down}/")
    with new_reports() as reports:
        server = serve(_users_app(offline, f"redis://127.0.0.1:{down}/0", prefix, replaying))
        with httpx.Client(base_url=server.url, timeout=30) as client:
            replayed = [client.post("/users/ada"), client.get("/users/ada/check")]
        server.stop()
    for before, after in zip(recorded, replayed, strict=True):
        assert_same_response(before, after)
    assert len(reports) == 2 and all(r.ok and not r.unmatched and not r.unused for r in reports)


def _links_app(postgres_url: str, config: TraceConfig) -> Starlette:
    """Saved links fetched on save (as a summariser fetches the article it is given): a link
    may carry its user and password, and is kept in a row and shown back as given."""

    async def save(request: Request) -> JSONResponse:
        link = (await request.json())["url"]
        async with httpx.AsyncClient() as client:
            fetched = await client.get(link)
        async with await psycopg.AsyncConnection.connect(postgres_url) as connection:
            await connection.execute("INSERT INTO links VALUES (%s)", (link,))
        return JSONResponse({"url": link, "status": fetched.status_code}, status_code=201)

    async def listed(request: Request) -> JSONResponse:
        async with await psycopg.AsyncConnection.connect(postgres_url) as connection:
            rows = await (await connection.execute("SELECT url FROM links")).fetchall()
        return JSONResponse([url for (url,) in rows])

    app = Starlette(
        routes=[Route("/links", save, methods=["POST"]), Route("/links", listed, methods=["GET"])]
    )
    auto_setup(app, config=config, plugins=["httpx", "psycopg"])
    return app


@pytest.mark.parametrize(
    ("secret_in", "kept"),
    [("userinfo", "alice:"), ("query", "/json?lang=en&access_token=")],
    ids=["password", "query-token"],
)
def test_a_urls_secret_is_sealed_wherever_the_url_stands_and_the_call_replays(
    serve: Callable[..., Any], upstream: Upstream, cassette_dir: Path, secret_in: str, kept: str
) -> None:
    """A link's password, or its query's token (a webhook URL, a shared document's link): in the
    call that fetched it, the request and response bodies, the SQL parameters and the rows read
    back by a later request. Its sealed password once read as an IPv6 host when the call was
    matched, and the cassette could not be replayed; a token in a query was in clear outside
    the call's own URL."""
    password = f"Hunter2-{uuid.uuid4().hex[:8]}"
    link = (
        upstream.url.replace("://", f"://alice:{password}@") + "/json"
        if secret_in == "userinfo"
        else f"{upstream.url}/json?lang=en&access_token={password}"
    )
    with _database("CREATE TABLE links (url TEXT)") as url:
        config = TraceConfig(mode="record", cassette_dir=str(cassette_dir))
        recording = serve(_links_app(url, config))
        with httpx.Client(base_url=recording.url, timeout=30) as client:
            recorded = [client.post("/links", json={"url": link}), client.get("/links")]
    assert [r.status_code for r in recorded] == [201, 200]
    assert recorded[1].json() == [link]
    assert timetracer_otel.flush(30)
    texts = "".join(path.read_text("utf-8") for path in cassette_files(cassette_dir))
    assert password not in texts and kept in texts

    offline = url.replace(":5432/", f":{closed_port()}/")

    def replay(**key: str) -> tuple[list[httpx.Response], list[Any]]:
        config = TraceConfig(mode="replay", cassette_path=str(cassette_dir), **key)
        with new_reports() as reports:
            server = serve(_links_app(offline, config))
            with httpx.Client(base_url=server.url, timeout=30) as client:
                replayed = [client.post("/links", json={"url": link}), client.get("/links")]
            server.stop()
        return replayed, reports

    replayed, reports = replay()
    for before, after in zip(recorded, replayed, strict=True):
        assert_same_response(before, after)
    assert len(reports) == 2 and all(r.ok and not r.unmatched and not r.unused for r in reports)
    # without the key each call is still answered: the live link's secret is hidden by its
    # shape, or its name in the query, as the recording's was
    replayed, reports = replay(key_file=str(cassette_dir.parent / "no-key"))
    assert [r.status_code for r in replayed] == [201, 200]
    assert len(reports) == 2 and all(not r.unmatched and not r.unused for r in reports)


def _codes_app(redis_port: int, mail_url: str, prefix: str, config: TraceConfig) -> Starlette:
    """Two-factor set-up as piccolo_admin and pyotp make it: recovery codes and a mailed one-time
    code, each picked a character at a time with ``secrets.choice``, kept in Redis and sent on
    under names no pattern covers."""
    cache = redis.asyncio.Redis(port=redis_port, decode_responses=True)
    alphabet = string.ascii_lowercase + string.digits

    def group(length: int, characters: str = alphabet) -> str:
        return "".join(secrets.choice(characters) for _ in range(length))

    async def enrol(request: Request) -> JSONResponse:
        user = request.path_params["user"]
        codes = [f"{group(6)}-{group(6)}" for _ in range(4)]
        once = "".join(random.SystemRandom().choice(string.digits) for _ in range(6))
        await cache.rpush(f"{prefix}:codes:{user}", *codes)
        await cache.set(f"{prefix}:once:{user}", once)
        async with httpx.AsyncClient() as client:
            await client.post(mail_url, content=f"Your code is {once}.")
        return JSONResponse({"codes": codes})

    app = Starlette(routes=[Route("/enrol/{user}", enrol, methods=["POST"])])
    auto_setup(app, config=config, plugins=["redis", "httpx"])
    return app


def test_codes_picked_with_secrets_choice_are_sealed_wherever_they_stand(
    serve: Callable[..., Any], upstream: Upstream, cassette_dir: Path
) -> None:
    """Each draw behind ``secrets.choice`` is one byte picking one character, sealed as a draw,
    while the codes made of them stood in clear in the response, in Redis and in the mail."""
    prefix = f"tt-test:{uuid.uuid4().hex[:12]}"
    mail = f"{upstream.url}/echo"
    recording = serve(
        _codes_app(6379, mail, prefix, TraceConfig(mode="record", cassette_dir=str(cassette_dir)))
    )
    try:
        with httpx.Client(base_url=recording.url, timeout=30) as client:
            recorded = client.post("/enrol/ada")
        with redis.Redis(decode_responses=True) as direct:
            once = direct.get(f"{prefix}:once:ada")
    finally:
        with redis.Redis() as direct:
            direct.delete(f"{prefix}:codes:ada", f"{prefix}:once:ada")
    codes = recorded.json()["codes"]
    assert len(codes) == 4 and once is not None and len(once) == 6
    assert timetracer_otel.flush(30)
    texts = "".join(path.read_text("utf-8") for path in cassette_files(cassette_dir))
    groups = [part for code in codes for part in code.split("-")]
    assert [part for part in (*groups, once) if part in texts] == []
    assert (
        texts.count("[SEALED:") >= 4 + 4 + 1 + 1
    )  # the answer's, the RPUSH's, the SET's, the mail's

    with new_reports() as reports:
        server = serve(
            _codes_app(
                closed_port(),
                mail,
                prefix,
                TraceConfig(mode="replay", cassette_path=str(cassette_dir)),
            )
        )
        with httpx.Client(base_url=server.url, timeout=30) as client:
            replayed = client.post("/enrol/ada")
        server.stop()
    assert_same_response(recorded, replayed)
    (report,) = reports
    assert report.ok and not report.unmatched and not report.unused


_FERNET_KEYS = (
    b"uSieBJ_695D2NA7bOPUJqFGCS2_qI8G4aI6L42WhjjM=",
    b"Hd4d1y9wFYnVHKAa4d6M1Ffn1UTnF1r0j9NVLyl1pQU=",
)


def _fernet_app(postgres_url: str, config: TraceConfig) -> Starlette:
    """An OAuth provider's client secret kept encrypted, as fief keeps it (a Fernet made from its
    settings' key where it encrypts), and a key rotation through MultiFernet."""

    async def provider(request: Request) -> JSONResponse:
        # imported where the app imports it (a module's names are replaced, a function's are not)
        from cryptography.fernet import Fernet, MultiFernet

        old, new = (Fernet(key) for key in _FERNET_KEYS)
        encrypted = old.encrypt(await request.body()).decode()
        rotated = MultiFernet([new, old]).rotate(encrypted).decode()
        async with await psycopg.AsyncConnection.connect(postgres_url) as connection:
            await connection.execute(
                "INSERT INTO providers (client_secret) VALUES (%s), (%s)", (encrypted, rotated)
            )
        return JSONResponse({"encrypted": encrypted, "rotated": rotated})

    app = Starlette(routes=[Route("/providers", provider, methods=["POST"])])
    auto_setup(app, config=config, plugins=["psycopg"])
    return app


def test_a_fernet_encrypted_column_is_written_as_recorded_in_replay(
    serve: Callable[..., Any], cassette_dir: Path
) -> None:
    """cryptography 51's Fernet reads its IV from OpenSSL: replay wrote another ciphertext, and
    fief's suite failed at its first fixture (665 errors) on an INSERT that matched nothing."""
    from cryptography.fernet import Fernet

    key = Fernet(_FERNET_KEYS[0])
    assert key.encrypt(b"s") != key.encrypt(b"s")  # randomised
    with _database("CREATE TABLE providers (client_secret TEXT)") as url:
        config = TraceConfig(mode="record", cassette_dir=str(cassette_dir))
        recorded = httpx.post(f"{serve(_fernet_app(url, config)).url}/providers", content="cs-1")
    assert recorded.status_code == 200
    assert key.decrypt(recorded.json()["encrypted"]) == b"cs-1"
    assert timetracer_otel.flush(30)

    replayed, report = _replayed_offline(
        serve, _fernet_app, url, cassette_dir, "/providers", "cs-1"
    )
    assert_same_response(recorded, replayed)
    assert report.ok and not report.unmatched and not report.unused


def _replayed_offline(
    serve: Callable[..., Any],
    make_app: Callable[[str, TraceConfig], Starlette],
    url: str,
    cassette_dir: Path,
    path: str,
    content: str,
) -> tuple[httpx.Response, Any]:
    """The response to ``POST path`` of the app replaying ``cassette_dir`` with its PostgreSQL at
    ``url`` unreachable, and the replay's report."""
    offline = url.replace(":5432/", f":{closed_port()}/")
    with new_reports() as reports:
        server = serve(
            make_app(offline, TraceConfig(mode="replay", cassette_path=str(cassette_dir)))
        )
        replayed = httpx.post(f"{server.url}{path}", content=content)
        server.stop()
    (report,) = reports
    return replayed, report


def test_a_fernet_key_made_in_a_request_is_the_recorded_one_in_replay_and_never_in_clear(
    serve: Callable[..., Any], cassette_dir: Path
) -> None:
    """Prefect makes its block encryption key with ``Fernet.generate_key()`` in the request that
    first stores a secret, and keeps it in a settings row beside the ciphertexts: cryptography
    51 drew it in OpenSSL (another key in replay, an INSERT matching nothing), and its bytes were
    in clear in the cassette, which then opened every encrypted value."""

    def app(postgres_url: str, config: TraceConfig) -> Starlette:
        async def store(request: Request) -> JSONResponse:
            from cryptography.fernet import Fernet

            key = Fernet.generate_key()
            token = Fernet(key).encrypt(await request.body()).decode()
            async with await psycopg.AsyncConnection.connect(postgres_url) as connection:
                await connection.execute(
                    "INSERT INTO settings (fernet_key, block) VALUES (%s, %s)",
                    (key.decode(), token),
                )
                (kept,) = await (
                    await connection.execute("SELECT fernet_key FROM settings")
                ).fetchone()
            return JSONResponse(
                {"opens": Fernet(kept).decrypt(token).decode(), "length": len(kept)}
            )

        application = Starlette(routes=[Route("/blocks", store, methods=["POST"])])
        auto_setup(application, config=config, plugins=["psycopg"])
        return application

    with _database("CREATE TABLE settings (fernet_key TEXT, block TEXT)") as url:
        config = TraceConfig(mode="record", cassette_dir=str(cassette_dir))
        recorded = httpx.post(f"{serve(app(url, config)).url}/blocks", content="webhook-token")
        with psycopg.connect(url) as connection:
            ((key,),) = connection.execute("SELECT fernet_key FROM settings").fetchall()
    assert recorded.json() == {"opens": "webhook-token", "length": 44}
    assert timetracer_otel.flush(30)
    (cassette,) = [path.read_text("utf-8") for path in cassette_dir.rglob("*.json")]
    assert key not in cassette and key.rstrip("=") not in cassette

    replayed, report = _replayed_offline(serve, app, url, cassette_dir, "/blocks", "webhook-token")
    assert_same_response(recorded, replayed)
    assert report.ok and not report.unmatched and not report.unused and not report.extra_draws


def _password_hashes() -> dict[str, str]:
    """A hash of one password in each format web apps store, made as each library makes it."""
    salt = secrets.token_hex(8)
    derived = hashlib.pbkdf2_hmac("sha256", b"correct horse", salt.encode(), 1000)
    scrypted = hashlib.scrypt(b"correct horse", salt=salt.encode(), n=16384, r=8, p=1)
    ab64 = base64.b64encode(derived).decode().rstrip("=").replace("+", ".")
    return {
        "bcrypt": bcrypt.hashpw(b"correct horse", bcrypt.gensalt(4)).decode(),
        "argon2": PasswordHasher(time_cost=1, memory_cost=64, parallelism=1).hash("correct horse"),
        "passlib_pbkdf2": f"$pbkdf2-sha256$1000${salt}${ab64}",
        "django": f"pbkdf2_sha256$1000${salt}${base64.b64encode(derived).decode()}",
        "werkzeug_pbkdf2": f"pbkdf2:sha256:1000${salt}${derived.hex()}",
        "werkzeug_scrypt": f"scrypt:16384:8:1${salt}${scrypted.hex()}",
    }


def test_every_password_hash_format_is_found_by_its_shape_among_typed_values() -> None:
    """Each format is found in a document's rows under a name no secret list holds, also where
    typed values (``$type``) stand before it."""
    hashes = _password_hashes()
    typed = {"$type": "decimal", "value": "1.50"}
    doc = {
        "calls": [
            {
                "protocol": "sql",
                "response": {"rows": [[typed, name, value] for name, value in hashes.items()]},
            }
        ]
    }
    found = kept_credentials(doc, SecretNames())
    assert {name: value in found for name, value in hashes.items()} == dict.fromkeys(hashes, True)
