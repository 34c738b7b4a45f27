"""An app whose one route (``POST /account``) meets a secret in every place a cassette keeps one.

Inbound: the ``Authorization`` and ``X-Session-Token`` headers, ``?api_key=``, and JSON
``current_password``/``new_password``. Outbound: httpx to the upstream with an
``Authorization`` header and ``?access_token=`` (answered with a ``token``), a form with a
``password`` field and a multipart body with a binary part and a ``password`` part;
SQLAlchemy on PostgreSQL (psycopg) inserting a ``hashed_password`` with named and with
positional parameters, then selecting it; Redis ``HSET``/``HGETALL`` of a ``password``
field; pymongo inserting and finding a document with a ``password``.

It answers only booleans: whether each secret reached it as sent, and whether what each
store gave back equals what it stored (so a replay that hands back the real values
answers ``true`` everywhere). :class:`Secrets` holds the values, unique per test.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import httpx
import pymongo
import redis
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, insert, select, text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from timetracer_otel.config import TraceConfig
from timetracer_otel.integrations.starlette import auto_setup

PLUGINS = ["httpx", "sqlalchemy", "redis", "pymongo"]


@dataclasses.dataclass(frozen=True)
class Secrets:
    """The secret values of one test, each naming its place; ``mark`` makes them unique."""

    mark: str

    def __getattr__(self, place: str) -> str:
        return f"{place}-{self.mark}"

    PLACES = (
        "inbound_auth", "inbound_token", "inbound_query", "current", "new", "outbound_auth", "outbound_query",
        "form", "multipart", "named_hash", "positional_hash", "redis", "mongo",
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
        f"tt_names_{suffix}", MetaData(), Column("id", Integer, primary_key=True), Column("name", String(40)), Column("hashed_password", String(80))
    )


def _outbound(deps: Deps, secrets: Secrets) -> bool:
    with httpx.Client(base_url=deps.upstream, timeout=10) as client:
        got = client.get("/json", params={"access_token": secrets.outbound_query}, headers={"Authorization": f"Bearer {secrets.outbound_auth}"})
        form = client.post("/status/200", data={"user": "ann", "password": secrets.form})
        files = {"file": ("blob.bin", bytes(range(256)), "application/octet-stream")}
        multipart = client.post("/status/200", data={"user": "ann", "password": secrets.multipart}, files=files)
    return got.json()["token"] == "upstream-secret" and form.status_code == multipart.status_code == 200


def _sql(deps: Deps, secrets: Secrets) -> bool:
    table = accounts(deps.suffix)
    engine = create_engine(deps.postgres)
    try:
        with engine.begin() as conn:
            conn.execute(insert(table).values(name="named", hashed_password=secrets.named_hash))
            conn.exec_driver_sql(f"INSERT INTO {table.name} (name, hashed_password) VALUES (%s, %s)", ("positional", secrets.positional_hash))
            rows = dict(conn.execute(select(table.c.name, table.c.hashed_password).order_by(table.c.id)).all())
            conn.execute(text(f"DELETE FROM {table.name}"))
    finally:
        engine.dispose()
    return rows == {"named": secrets.named_hash, "positional": secrets.positional_hash}


def _redis(deps: Deps, secrets: Secrets) -> bool:
    key = f"tt-names:{deps.suffix}:user:1"
    with redis.Redis.from_url(deps.redis) as client:
        client.hset(key, mapping={"name": "ann", "password": secrets.redis})
        stored = client.hgetall(key)
        one = client.hget(key, "password")
        client.delete(key)
    return stored == {b"name": b"ann", b"password": secrets.redis.encode()} and one == secrets.redis.encode()


def _mongo(deps: Deps, secrets: Secrets) -> bool:
    client: pymongo.MongoClient[Any] = pymongo.MongoClient(deps.mongo, serverSelectionTimeoutMS=5000)
    try:
        collection = client.test[f"names_{deps.suffix}"]
        collection.insert_one({"name": "ann", "password": secrets.mongo})
        found = collection.find_one({"name": "ann"}) or {}
        found.pop("_id", None)
    finally:
        client.close()
    return found == {"name": "ann", "password": secrets.mongo}


def create_app(deps: Deps, secrets: Secrets, config: Optional[TraceConfig] = None) -> Starlette:
    async def account(request: Request) -> JSONResponse:
        body = await request.json()
        inbound = (
            request.headers["authorization"] == f"Bearer {secrets.inbound_auth}"
            and request.headers["x-session-token"] == secrets.inbound_token
            and request.query_params["api_key"] == secrets.inbound_query
            and (body["current_password"], body["new_password"]) == (secrets.current, secrets.new)
        )
        checks = {"inbound": inbound, "outbound": _outbound(deps, secrets), "sql": _sql(deps, secrets)}
        checks.update(redis=_redis(deps, secrets), mongo=_mongo(deps, secrets))
        return JSONResponse(checks)

    app = Starlette(routes=[Route("/account", account, methods=["POST"])])
    auto_setup(app, config=config, plugins=PLUGINS)
    return app
