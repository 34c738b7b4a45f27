"""An app whose one route (``POST /account``) meets a secret in every place a cassette keeps one.

Inbound: the ``Authorization`` and ``X-Session-Token`` headers, ``?api_key=``, and JSON
``current_password``/``new_password``. Outbound: httpx to the upstream with an
``Authorization`` header and ``?access_token=`` (answered with a ``token``), a form with a
``password`` field and a multipart body with a binary part and a ``password`` part;
SQLAlchemy on PostgreSQL (psycopg) writing a ``hashed_password`` with named and positional
parameters in every statement shape (executemany, multi-row ``VALUES``, ``UPDATE ... SET``,
``WHERE``, a literal, ``RETURNING``, ``ON CONFLICT ... DO UPDATE``), then selecting it;
Redis ``HSET``/``HGETALL`` of a ``password`` field; pymongo inserting and finding a
document with a ``password``.

Then an API key the app reads from an ``api_key`` column (so only the SQL row says it is
secret) is quoted by a failing call of every library, whose instrumentation records the
error on its span: httpx (an illegal header value), requests (a closed port, the key in the
URL), aiohttp (a 404 with ``raise_for_status``), SQLAlchemy (a unique violation whose
``DETAIL`` quotes the key), Redis (a pipeline's ``WRONGTYPE`` error quoting its command)
and pymongo (a duplicate key in ``findAndModify``). And a span of the app's own quotes a
hash before the statement that says it is one.

It answers only booleans: whether each secret reached it as sent, and whether what each
store gave back equals what it stored (so a replay that hands back the real values
answers ``true`` everywhere). :class:`Secrets` holds the values, unique per test.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import aiohttp
import httpx
import pymongo
import pymongo.errors
import redis
import requests
import sqlalchemy.exc
from opentelemetry import trace
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, insert, select, text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from timetracer_otel.config import TraceConfig
from timetracer_otel.integrations.starlette import auto_setup

PLUGINS = ["httpx", "requests", "aiohttp", "sqlalchemy", "redis", "pymongo"]
CLOSED = "http://127.0.0.1:1"


@dataclasses.dataclass(frozen=True)
class Secrets:
    """The secret values of one test, each naming its place; ``mark`` makes them unique."""

    mark: str

    def __getattr__(self, place: str) -> str:
        return f"{place}-{self.mark}"

    PLACES = (
        "inbound_auth", "inbound_token", "inbound_query", "current", "new", "outbound_auth", "outbound_query",
        "form", "multipart", "named_hash", "positional_hash", "many_1", "many_2", "multi", "updated", "literal",
        "returning", "conflict", "early", "redis", "mongo", "api_key",
    )  # fmt: skip

    def values(self) -> list[str]:
        return [getattr(self, place) for place in self.PLACES]


@dataclasses.dataclass(frozen=True)
class Deps:
    upstream: str
    postgres: str  # postgresql+psycopg://...
    redis: str
    mongo: str
    suffix: str  # names this test's table, keys and collection


def accounts(suffix: str) -> Table:
    return Table(
        f"tt_names_{suffix}", MetaData(), Column("id", Integer, primary_key=True), Column("name", String(40)),
        Column("hashed_password", String(80)), Column("api_key", String(80), unique=True),
    )  # fmt: skip


def _outbound(deps: Deps, secrets: Secrets) -> bool:
    with httpx.Client(base_url=deps.upstream, timeout=10) as client:
        got = client.get(
            "/json",
            params={"access_token": secrets.outbound_query},
            headers={"Authorization": f"Bearer {secrets.outbound_auth}"},
        )
        form = client.post("/status/200", data={"user": "ann", "password": secrets.form})
        files = {"file": ("blob.bin", bytes(range(256)), "application/octet-stream")}
        multipart = client.post(
            "/status/200", data={"user": "ann", "password": secrets.multipart}, files=files
        )
    return (
        got.json()["token"] == "upstream-secret"
        and form.status_code == multipart.status_code == 200
    )


def _sql(deps: Deps, secrets: Secrets) -> bool:
    table = accounts(deps.suffix)
    name = table.name
    engine = create_engine(deps.postgres)
    with trace.get_tracer("secrets_app").start_as_current_span(
        "prepare"
    ) as span:  # quotes a hash no statement has yet
        span.add_event("note", {"detail": f"about to store {secrets.early}"})
    try:
        with engine.begin() as conn:
            conn.execute(insert(table).values(name="named", hashed_password=secrets.named_hash))
            run = conn.exec_driver_sql
            run(
                f"INSERT INTO {name} (name, hashed_password) VALUES (%s, %s)",
                ("positional", secrets.positional_hash),
            )
            run(
                f"INSERT INTO {name} (name, hashed_password) VALUES (%s, %s)",
                [("many_1", secrets.many_1), ("many_2", secrets.many_2)],
            )
            run(
                f"INSERT INTO {name} (name, hashed_password) VALUES (%s, %s), (%s, %s)",
                ("multi", secrets.multi, "early", secrets.early),
            )
            run(
                f"UPDATE {name} SET hashed_password=%s, name=%s WHERE name=%s",
                (secrets.updated, "updated", "multi"),
            )
            run(
                f"INSERT INTO {name} (name, hashed_password) VALUES ('literal', '{secrets.literal}')"
            )
            returned = run(
                f"INSERT INTO {name} (name, hashed_password) VALUES (%(n)s, %(h)s) RETURNING hashed_password",
                {"n": "returning", "h": secrets.returning},
            ).scalar()
            upsert = f"INSERT INTO {name} (id, name, hashed_password) VALUES (%(id)s, %(n)s, %(h)s) ON CONFLICT (id) DO UPDATE SET hashed_password = EXCLUDED.hashed_password"
            run(upsert, {"id": 1, "n": "named", "h": secrets.conflict})
            found = run(
                f"SELECT name FROM {name} WHERE hashed_password = %s AND name = %s",
                (secrets.updated, "updated"),
            ).scalar()
            rows = dict(
                conn.execute(
                    select(table.c.name, table.c.hashed_password).order_by(table.c.id)
                ).all()
            )
            conn.execute(text(f"DELETE FROM {name}"))
    finally:
        engine.dispose()
    stored = {
        "named": secrets.conflict, "positional": secrets.positional_hash, "many_1": secrets.many_1, "many_2": secrets.many_2,
        "updated": secrets.updated, "early": secrets.early, "literal": secrets.literal, "returning": secrets.returning,
    }  # fmt: skip
    return (returned, found, rows) == (secrets.returning, "updated", stored)


def _stored_key(deps: Deps, secrets: Secrets) -> tuple[str | None, bool]:
    """The API key as the app reads it from its ``api_key`` column, and whether storing it again fails."""
    table = accounts(deps.suffix)
    engine = create_engine(deps.postgres)
    try:
        with engine.begin() as conn:
            conn.execute(insert(table).values(name="keyed", api_key=secrets.api_key))
            key = conn.execute(select(table.c.api_key)).scalar()
            try:
                with conn.begin_nested():  # DETAIL:  Key (api_key)=(...) already exists.
                    conn.exec_driver_sql(
                        f"INSERT INTO {table.name} (name, api_key) VALUES (%s, %s)", ("again", key)
                    )
                duplicate = False
            except sqlalchemy.exc.IntegrityError:
                duplicate = True
            conn.execute(text(f"DELETE FROM {table.name}"))
    finally:
        engine.dispose()
    return key, duplicate


async def _errors_quoting(key: str, deps: Deps) -> bool:
    """Whether a failing call of each library, quoting ``key`` in its error, failed as it does for real."""
    failed = []
    try:
        # a key read from a file, newline kept
        httpx.get(f"{deps.upstream}/json", headers={"X-Request-Note": f"{key}\n"})
    except httpx.LocalProtocolError:
        failed.append("httpx")
    try:
        requests.get(f"{CLOSED}/keys", params={"key": key}, timeout=5)
    except requests.ConnectionError:
        failed.append("requests")
    try:
        async with (
            aiohttp.ClientSession(raise_for_status=True) as session,
            session.get(f"{deps.upstream}/status/404", params={"key": key}),
        ):
            pass
    except aiohttp.ClientResponseError:
        failed.append("aiohttp")
    with redis.Redis.from_url(deps.redis) as client:
        name = f"tt-names:{deps.suffix}:note"
        pipe = client.pipeline(transaction=False)
        pipe.set(name, "text").hset(name, "note", key).delete(name)
        try:
            pipe.execute()  # Command # 2 (HSET ... note <key>) of pipeline caused error: WRONGTYPE ...
        except redis.ResponseError:
            failed.append("redis")
        client.delete(name)
    mongo: pymongo.MongoClient[Any] = pymongo.MongoClient(deps.mongo, serverSelectionTimeoutMS=5000)
    try:
        keys = mongo.test[f"keys_{deps.suffix}"]
        keys.insert_one({"_id": key, "owner": "ann"})
        # E11000 ... dup key
        keys.find_one_and_update({"_id": key, "owner": "bob"}, {"$set": {"seen": 1}}, upsert=True)
    except pymongo.errors.OperationFailure:
        failed.append("pymongo")
    finally:
        mongo.close()
    return failed == ["httpx", "requests", "aiohttp", "redis", "pymongo"]


def _redis(deps: Deps, secrets: Secrets) -> bool:
    key = f"tt-names:{deps.suffix}:user:1"
    with redis.Redis.from_url(deps.redis) as client:
        client.hset(key, mapping={"name": "ann", "password": secrets.redis})
        stored = client.hgetall(key)
        one = client.hget(key, "password")
        client.delete(key)
    return (
        stored == {b"name": b"ann", b"password": secrets.redis.encode()}
        and one == secrets.redis.encode()
    )


def _mongo(deps: Deps, secrets: Secrets) -> bool:
    client: pymongo.MongoClient[Any] = pymongo.MongoClient(
        deps.mongo, serverSelectionTimeoutMS=5000
    )
    try:
        collection = client.test[f"names_{deps.suffix}"]
        collection.insert_one({"name": "ann", "password": secrets.mongo})
        found = collection.find_one({"name": "ann"}) or {}
        found.pop("_id", None)
    finally:
        client.close()
    return found == {"name": "ann", "password": secrets.mongo}


def create_app(deps: Deps, secrets: Secrets, config: TraceConfig | None = None) -> Starlette:
    async def account(request: Request) -> JSONResponse:
        body = await request.json()
        inbound = (
            request.headers["authorization"] == f"Bearer {secrets.inbound_auth}"
            and request.headers["x-session-token"] == secrets.inbound_token
            and request.query_params["api_key"] == secrets.inbound_query
            and (body["current_password"], body["new_password"]) == (secrets.current, secrets.new)
        )
        checks = {
            "inbound": inbound,
            "outbound": _outbound(deps, secrets),
            "sql": _sql(deps, secrets),
        }
        checks.update(redis=_redis(deps, secrets), mongo=_mongo(deps, secrets))
        key, duplicate = _stored_key(deps, secrets)
        # without the key, replay reads it [REDACTED]: still quoted
        quoted = await _errors_quoting(key or "", deps)
        checks["errors"] = quoted and duplicate and key == secrets.api_key
        return JSONResponse(checks)

    app = Starlette(routes=[Route("/account", account, methods=["POST"])])
    auto_setup(app, config=config, plugins=PLUGINS)
    return app
