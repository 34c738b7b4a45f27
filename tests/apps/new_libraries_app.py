"""The application of the mixed new-libraries test: asyncpg, psycopg, boto3 (urllib3), grpc.aio
and httpx2 beside httpx and Redis, in one request.

``GET /mixed/{rid}`` makes, all at once (``asyncio.gather``), an httpx and an httpx2 call to the
upstream, a Redis SET then GET, an asyncpg ``fetchrow`` and a psycopg query on pools, a boto3 S3 put then get
on a thread (boto3 is sync: ``asyncio.to_thread``, as async apps call it), and a grpc.aio unary
call; each carries the request id ``rid``. The clients are shared by every request, as a
service's are: made with the app, or (the pools, the httpx client, the aio channel) in the
lifespan. It answers with what each client gave it, so a call answered with another request's
data shows as a wrong id.

``create_app(deps, config)``; ``from_environment()`` is the ``uvicorn --factory`` entry
(``NEW_LIBRARIES_APP_DEPS`` holds the :class:`Deps` as JSON, the config comes from
``TIMETRACER_*``). ``echo_pb2`` must be importable (see tests/_grpc_echo.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import boto3
import echo_pb2
import echo_pb2_grpc
import grpc.aio
import httpx
import httpx2
import redis.asyncio
from google.protobuf import json_format
from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from timetracer_otel.config import TraceConfig
from timetracer_otel.integrations.starlette import auto_setup

PLUGINS = ["httpx", "httpx2", "redis", "asyncpg", "psycopg", "urllib3", "grpc"]
BUCKET = "timetracer-mixed"


@dataclasses.dataclass(frozen=True)
class Deps:
    """Where the dependencies are; every Redis key starts with ``redis_prefix``."""

    upstream: str
    postgres: str  # postgresql://... (asyncpg and psycopg both take it)
    redis: str
    redis_prefix: str
    s3: str
    grpc: str  # host:port

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))


class _Clients:
    """What the app calls with: the clients made with the app, the pools and channel made in the lifespan."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        # at most 10 connections, requests waiting their turn, as services bound their pools
        # (100 opened at once by a busy event loop can outlast redis-py's 5 s connect timeout)
        self.redis = redis.asyncio.Redis(
            connection_pool=redis.asyncio.BlockingConnectionPool.from_url(
                deps.redis, max_connections=10
            )
        )
        self.s3 = boto3.Session().client("s3", endpoint_url=deps.s3, region_name="us-east-1")

    async def open(self) -> None:
        self.http_client = httpx.AsyncClient()
        self.http2_client = httpx2.AsyncClient()
        self.asyncpg = await asyncpg.create_pool(self.deps.postgres, min_size=2, max_size=10)
        self.psycopg = AsyncConnectionPool(self.deps.postgres, min_size=2, max_size=10, open=False)
        await self.psycopg.open(wait=True)
        # an aio channel belongs to the running loop: made here
        self.channel = grpc.aio.insecure_channel(self.deps.grpc)
        self.echo = echo_pb2_grpc.EchoStub(self.channel)

    async def close(self) -> None:
        await self.channel.close()
        await self.psycopg.close()
        await self.asyncpg.close()
        await self.redis.aclose()
        await self.http_client.aclose()
        await self.http2_client.aclose()
        self.s3.close()

    async def http(self, rid: str) -> Any:
        response = await self.http_client.post(
            f"{self.deps.upstream}/echo", params={"rid": rid}, json={"rid": rid}
        )
        return response.json()

    async def http2(self, rid: str) -> Any:
        response = await self.http2_client.get(f"{self.deps.upstream}/echo", params={"via": rid})
        return response.json()

    async def redis_set_get(self, rid: str) -> str:
        key = f"{self.deps.redis_prefix}{rid}"
        return repr((await self.redis.set(key, rid), await self.redis.get(key)))

    async def asyncpg_row(self, rid: str, n: int) -> str:
        return repr(
            await self.asyncpg.fetchrow("SELECT $1::text AS rid, $2::int * 10 AS n", rid, n)
        )

    async def psycopg_row(self, rid: str, n: int) -> str:
        async with self.psycopg.connection() as conn:
            cursor = await conn.execute("SELECT %s::text AS rid, %s::int + 1 AS n", (rid, n))
            return repr(await cursor.fetchone())

    def s3_put_get(self, rid: str) -> str:
        key = f"{rid}.txt"
        put = self.s3.put_object(Bucket=BUCKET, Key=key, Body=f"body of {rid}".encode())
        got = self.s3.get_object(Bucket=BUCKET, Key=key)
        return repr((put["ETag"], got["ETag"], got["Body"].read()))

    async def grpc_say(self, rid: str, n: int) -> Any:
        reply = await self.echo.Say(echo_pb2.EchoRequest(text=rid, count=n + 1))
        return json_format.MessageToDict(reply)


async def mixed(request: Request) -> JSONResponse:
    c: _Clients = request.app.state.clients
    rid = request.path_params["rid"]
    n = int(rid.rsplit("-", 1)[1])
    names = ("http", "http2", "redis", "asyncpg", "psycopg", "s3", "grpc")
    results = await asyncio.gather(
        c.http(rid),
        c.http2(rid),
        c.redis_set_get(rid),
        c.asyncpg_row(rid, n),
        c.psycopg_row(rid, n),
        asyncio.to_thread(c.s3_put_get, rid),
        c.grpc_say(rid, n),
    )
    return JSONResponse({"rid": rid, **dict(zip(names, results, strict=True))})


def create_app(deps: Deps, config: TraceConfig | None = None) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await app.state.clients.open()
        yield
        await app.state.clients.close()

    app = Starlette(routes=[Route("/mixed/{rid}", mixed)], lifespan=lifespan)
    auto_setup(app, config=config, plugins=PLUGINS)  # grpc: the aio channel's client spans too
    app.state.clients = _Clients(deps)
    return app


def from_environment() -> Starlette:
    return create_app(Deps(**json.loads(os.environ["NEW_LIBRARIES_APP_DEPS"])))
