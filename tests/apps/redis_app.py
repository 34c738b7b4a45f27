"""The application the Redis tests record and replay.

Each route answers with what redis-py gave it, rendered with every value's exact type
(bytes vs str, int vs float, tuples, sets, dicts, exceptions), so equal responses mean
the application got equal values of equal types. The clients are created with the app,
before any request: replay must also cover clients (and pools) that already exist.

``create_app(redis_url, config, prefix)``; every key starts with ``prefix``.
"""

from __future__ import annotations

import contextlib
import inspect
import pickle
import secrets
from collections.abc import AsyncIterator, Callable, Generator
from typing import Any

import redis
import redis.asyncio
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from timetracer_otel.config import TraceConfig
from timetracer_otel.integrations.starlette import auto_setup

FLAVOURS = ("sync-bytes", "sync-str", "async-bytes", "async-str")

# A scenario yields (step name, what the client returned or the awaitable it returned);
# the runner sends back the value, or throws the client's exception in at the yield.
Scenario = Generator[tuple[str, Any], Any, None]


def shown(value: Any) -> str:
    """``repr`` with every type visible and a stable order for sets; exceptions as ``Class(message)``."""
    if isinstance(value, Exception):
        return f"{type(value).__module__}.{type(value).__qualname__}({value})"
    if isinstance(value, (set, frozenset)):
        return f"{type(value).__name__}({{{', '.join(sorted(map(shown, value)))}}})"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{shown(k)}: {shown(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        items = ", ".join(map(shown, value))
        return f"[{items}]" if isinstance(value, list) else f"({items},)"
    return repr(value)


def scenario(client: Any, key: Callable[[str], str]) -> Scenario:
    """Reads and writes of every kind: plain commands, a pipeline, a transaction, a WATCH conflict, errors."""
    yield "set ex", client.set(key("s"), "hello", ex=60)
    yield "get", client.get(key("s"))
    yield "get missing", client.get(key("missing"))
    yield "incr", client.incr(key("n"))
    yield "incrbyfloat", client.incrbyfloat(key("n"), 1.5)
    yield "hset", client.hset(key("h"), mapping={"a": 1, "b": "two"})
    yield "hgetall", client.hgetall(key("h"))
    yield "lpush", client.lpush(key("l"), "x", "y", 3)
    yield "lrange", client.lrange(key("l"), 0, -1)
    yield "sadd", client.sadd(key("set"), "m1", "m2", "m3")
    yield "smembers", client.smembers(key("set"))
    yield "zadd", client.zadd(key("z"), {"one": 1, "two": 2.5})
    yield "zrange withscores", client.zrange(key("z"), 0, -1, withscores=True)
    yield "expire", client.expire(key("s"), 120)
    pipe = client.pipeline(transaction=False)
    pipe.set(key("p"), "v").get(key("p")).lpush(key("s"), "wrong").exists(
        key("p"), key("nothing")
    ).zscore(key("z"), "two")
    yield "pipeline", pipe.execute(raise_on_error=False)
    tx = client.pipeline(transaction=True)
    tx.incr(key("t")).lpush(key("s"), "wrong").expire(key("t"), 60).ttl(key("t"))
    yield "multi/exec", tx.execute(raise_on_error=False)
    watched = client.pipeline()
    yield "watch", watched.watch(key("w"))
    yield "watched get", watched.get(key("w"))
    yield "write by another connection", client.set(key("w"), "theirs")
    watched.multi()
    watched.set(key("w"), "mine")
    try:
        yield "exec after conflict", watched.execute()
    except redis.WatchError as exc:
        yield "conflict handled", exc
    try:
        yield "wrongtype", client.lpush(key("s"), "x")
    except redis.ResponseError as exc:
        yield "wrongtype handled", exc
    yield "get after all", client.get(key("w"))


def item(client: Any, key: Callable[[str], str], number: int) -> Scenario:
    """A small request whose values depend on ``number`` (the concurrency test)."""
    yield "set", client.set(key("v"), f"value-{number}")
    yield "incrby", client.incrby(key("c"), number)
    pipe = client.pipeline()
    pipe.get(key("v")).strlen(key("v"))
    yield "pipeline", pipe.execute()


def lookup(client: Any, key: Callable[[str], str]) -> Scenario:
    yield "get", client.get(key("k"))


def credentials(client: Any, key: Callable[[str], str]) -> Scenario:
    """Commands carrying passwords, alone and in a pipeline whose error quotes its command."""
    # the default user has no password
    yield (
        "auth",
        client.execute_command("AUTH", "default", "s3cret-pw"),
    )
    yield (
        "migrate",
        client.execute_command(
            "MIGRATE", "127.0.0.1", 1, "", 0, 100, "AUTH2", "u", "mig-s3cret", "KEYS", key("none")
        ),
    )
    # the failing command quotes the password (redis-py hides AUTH's own arguments in errors)
    pipe = client.pipeline(transaction=False)
    pipe.execute_command("AUTH", "default", "pipe-s3cret").execute_command(
        "SETEX", key("pipe"), "soon", "pipe-s3cret"
    )
    try:
        yield "pipeline auth", pipe.execute()
    except redis.ResponseError as exc:
        yield "pipeline auth refused", exc


# values of fields named like secrets, each read back in a reply that names its field
HASH_TOKEN, STREAM_TOKEN, TRIMMED_TOKEN = (
    "hash-tok-5f2b9c0e",
    "stream-tok-7d1a4b3c",
    "trim-tok-8e6f0a9d",
)


def secret_fields(client: Any, key: Callable[[str], str]) -> Scenario:
    """A user hash with an ``api_token`` and a stream of issued tokens, read every way that names the field."""
    yield "hset", client.hset(key("user"), mapping={"name": "ann", "api_token": HASH_TOKEN})
    yield "hscan", client.hscan(key("user"))
    yield "hrandfield", client.hrandfield(key("user"), 2, withvalues=True)
    yield "xadd", client.xadd(key("issued"), {"user": "ann", "access_token": STREAM_TOKEN})
    yield (
        "xadd trimmed",
        client.xadd(key("issued"), {"refresh_token": TRIMMED_TOKEN}, maxlen=100, approximate=True),
    )
    yield "xrange", client.xrange(key("issued"))
    yield "xrevrange", client.xrevrange(key("issued"), count=1)
    yield "xread", client.xread({key("issued"): 0})
    yield "xgroup", client.xgroup_create(key("issued"), "mailer", id=0)
    yield "xreadgroup", client.xreadgroup("mailer", "one", {key("issued"): ">"}, count=1)
    yield "xautoclaim", client.xautoclaim(key("issued"), "mailer", "two", 0)
    yield "xinfo", client.xinfo_stream(key("issued"))


def invite(client: Any, key: Callable[[str], str]) -> Scenario:
    """A job queued as a queue library does: its arguments pickled, an invitation token among them."""
    token = secrets.token_urlsafe(24)
    job = {"function": "send_invite", "kwargs": {"email": "ann@example.com", "invite_token": token}}
    yield "queued", client.set(key("job"), pickle.dumps(job))
    yield "token", token


def job(client: Any, key: Callable[[str], str]) -> Scenario:
    """The queued job read back in a later request (its status page): the token, with no name to tell."""
    yield "job", client.get(key("job"))


def news(client: Any, key: Callable[[str], str]) -> Scenario:
    """Pub/sub: subscribe, publish, read the confirmation and the message, unsubscribe."""
    pubsub = client.pubsub()
    yield "subscribe", pubsub.subscribe(key("news"))
    yield "publish", client.publish(key("news"), "hello")
    yield "first read", pubsub.get_message(timeout=5)
    yield "second read", pubsub.get_message(timeout=5)
    yield "nothing more", pubsub.get_message(timeout=0.05)
    yield "unsubscribe", pubsub.unsubscribe(key("news"))
    closing = pubsub.aclose() if isinstance(client, redis.asyncio.Redis) else pubsub.close()
    yield "close", closing


def _row(name: str, value: Any) -> dict[str, str]:
    return {"step": name, "value": shown(value)}


def run(steps: Scenario) -> list[dict[str, str]]:
    """Run a scenario with a sync client: its calls (and their errors) happen inside the scenario."""
    return [_row(name, value) for name, value in steps]


async def arun(steps: Scenario) -> list[dict[str, str]]:
    """Run a scenario with an asyncio client: await what it yields, throw its errors back in."""
    rows, value, error = [], None, None
    while True:
        try:
            name, pending = steps.throw(error) if error else steps.send(value)
        except StopIteration:
            return rows
        value, error = pending, None
        if inspect.isawaitable(pending):
            try:
                value = await pending
            except Exception as exc:  # noqa: BLE001 - given back to the scenario, which decides
                error = exc
        if error is None:
            rows.append(_row(name, value))


def create_app(redis_url: str, config: TraceConfig, prefix: str) -> Starlette:
    clients = {
        "sync-bytes": redis.Redis.from_url(redis_url),
        "sync-str": redis.Redis.from_url(redis_url, decode_responses=True),
        "async-bytes": redis.asyncio.Redis.from_url(redis_url),
        "async-str": redis.asyncio.Redis.from_url(redis_url, decode_responses=True),
    }

    def keys(*parts: str) -> Callable[[str], str]:
        return lambda name: ":".join((prefix, *parts, name))

    async def respond(flavour: str, steps: Scenario) -> JSONResponse:
        try:
            rows = (
                await arun(steps)
                if flavour.startswith("async")
                else await run_in_threadpool(run, steps)
            )
        except Exception as exc:  # noqa: BLE001 - the tests read what went wrong from the response
            return JSONResponse(
                {"error": type(exc).__qualname__, "message": str(exc)}, status_code=500
            )
        return JSONResponse(rows)

    async def scenario_route(request: Request) -> JSONResponse:
        flavour = request.path_params["flavour"]
        return await respond(flavour, scenario(clients[flavour], keys(flavour)))

    async def item_route(request: Request) -> JSONResponse:
        number = int(request.path_params["number"])
        return await respond(
            "async-str", item(clients["async-str"], keys("item", str(number)), number)
        )

    async def lookup_route(request: Request) -> JSONResponse:
        return await respond(
            "async-str", lookup(clients["async-str"], keys("lookup", request.path_params["name"]))
        )

    async def news_route(request: Request) -> JSONResponse:
        flavour = request.path_params["flavour"]
        return await respond(flavour, news(clients[flavour], keys("news", flavour)))

    async def secret_fields_route(request: Request) -> JSONResponse:
        flavour = request.path_params["flavour"]
        return await respond(flavour, secret_fields(clients[flavour], keys("secrets", flavour)))

    async def invite_route(request: Request) -> JSONResponse:
        return await respond("sync-bytes", invite(clients["sync-bytes"], keys("jobs")))

    async def job_route(request: Request) -> JSONResponse:
        return await respond("sync-bytes", job(clients["sync-bytes"], keys("jobs")))

    async def credentials_route(request: Request) -> JSONResponse:
        return await respond("sync-str", credentials(clients["sync-str"], keys("auth")))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        for client in clients.values():
            if isinstance(client, redis.asyncio.Redis):
                await client.aclose()
            else:
                client.close()

    app = Starlette(
        routes=[
            Route("/scenario/{flavour}", scenario_route),
            Route("/item/{number}", item_route),
            Route("/lookup/{name}", lookup_route),
            Route("/credentials", credentials_route),
            Route("/invite", invite_route),
            Route("/job", job_route),
            Route("/secret-fields/{flavour}", secret_fields_route),
            Route("/news/{flavour}", news_route),
        ],
        lifespan=lifespan,
    )
    app.state.redis_clients = clients
    auto_setup(app, config=config, plugins=["redis"])
    return app
