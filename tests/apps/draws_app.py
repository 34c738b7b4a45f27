"""An app that draws from the clock, UUIDs and randomness the way services do: through names
imported at the top (``from time import time``), model defaults bound at import, a
``random.Random`` made at import, ``secrets`` tokens, tasks and worker threads.

``/draw/{source}/{n}`` returns what one source gave (``ids``: libraries' time-ordered keys); ``/gather/{n}`` draws from three tasks
and a worker thread; ``/extra/{n}`` draws ``$DRAWS_APP_EXTRA`` more values than usual;
``/outside/{n}`` draws in a thread started without the request's context; ``/many/{n}``
waits at a barrier the test gives, then draws (the concurrency test).
"""

from __future__ import annotations

import asyncio
import importlib
import os
import random
import secrets
import threading
import uuid
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from os import urandom
from random import choice, getrandbits, randint
from random import random as random_float
from secrets import token_bytes, token_hex
from time import (
    localtime,
    monotonic,
    monotonic_ns,
    perf_counter,
    perf_counter_ns,
    strftime,
    time,
    time_ns,
)
from timeit import default_timer
from typing import Any
from uuid import uuid1, uuid4

import bcrypt
import fastuuid
import uuid6
import uuid_utils
import uuid_utils.compat
from bcrypt import gensalt
from bson import ObjectId
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from ulid import ULID
from uuid_extensions import uuid7 as extensions_uuid7
from uuid_utils import uuid7

from timetracer_otel.config import TraceConfig
from timetracer_otel.integrations.starlette import auto_setup

# uuid6 copied into the app's own package: apps.shop_ids from the tests, shop_ids under uvicorn
shop_uuid7 = importlib.import_module(
    f"{__package__}.shop_ids.uuid6" if __package__ else "shop_ids.uuid6"
).uuid7


@dataclass
class Order:
    """A model whose defaults were bound when it was imported, like an ORM's columns."""

    id: uuid.UUID = field(default_factory=uuid4)
    created_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))


RNG = random.Random()  # made at import, like Faker's
SYSTEM = random.SystemRandom()


def _utcnow() -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return datetime.utcnow().isoformat()


def _clock() -> dict[str, Any]:
    return {
        "time": time(), "time_ns": time_ns(), "now": datetime.now().isoformat(), "utc": datetime.now(timezone.utc).isoformat(),
        "utcnow": _utcnow(), "today": date.today().isoformat(), "datetime_today": datetime.today().isoformat(),
        "localtime": list(localtime()), "strftime": strftime("%Y-%m-%d %H:%M:%S"), "model": Order().created_at.isoformat(),
        "hour_window": int(time()) // 3600,
        # the durations an app measures and sends (FastAPI's X-Process-Time middleware)
        "perf_counter": perf_counter(), "perf_counter_ns": perf_counter_ns(), "default_timer": default_timer(),
        "monotonic": monotonic(), "monotonic_ns": monotonic_ns(),
    }  # fmt: skip


def _uuid() -> dict[str, Any]:
    return {
        "uuid4": str(uuid4()),
        "uuid1": str(uuid1()),
        "module": str(uuid.uuid4()),
        "model": str(Order().id),
        "objectid": str(ObjectId()),  # BSON's: its random part is the process's, drawn at import
    }


def _ids() -> dict[str, Any]:
    """Time-ordered keys from libraries: uuid-utils and fastuuid (Rust: they read the clock and
    the entropy themselves), imported by name and through the module, and its stdlib-typed twin; uuid6, a copy
    of it in the app's own package, the uuid7 package and python-ulid (Python, each keeping the
    last id's timestamp in its module)."""
    return {
        "uuid_utils_uuid7": str(uuid7()), "uuid_utils_uuid4": str(uuid_utils.uuid4()),
        "uuid_utils_compat": str(uuid_utils.compat.uuid7()), "uuid6_uuid7": str(uuid6.uuid7()), "ulid": str(ULID()),
        "vendored_uuid7": str(shop_uuid7()), "extensions_uuid7": extensions_uuid7(as_type="str"),
        "fastuuid_uuid4": str(fastuuid.uuid4()), "fastuuid_uuid7": str(fastuuid.uuid7()),
    }  # fmt: skip


def _random() -> dict[str, Any]:
    deck = list(range(10))
    random.shuffle(deck)
    return {
        "random": random_float(), "choice": choice("abcdefgh"), "randint": randint(1, 10**6), "getrandbits": getrandbits(64),
        "shuffle": deck, "sample": random.sample(range(100), 5), "gauss": random.gauss(0, 1), "instance": RNG.random(),
        # beyond 64 bits (a factory's big number): a JSON writer keeps no such int as a number
        "wide": hex(getrandbits(20_000)), "wide_below": hex(-getrandbits(200)),
        "new_instance": random.Random().randint(1, 10**6),
    }  # fmt: skip


def _urandom() -> dict[str, Any]:
    return {
        "urandom": urandom(16).hex(), "os": os.urandom(8).hex(),
        # a compiled library's own entropy: bcrypt's salt (Rust), imported by name and through the module
        "bcrypt_hash": bcrypt.hashpw(b"s3cret-pw", gensalt(rounds=4)).decode(), "bcrypt_salt": bcrypt.gensalt().decode(),
    }  # fmt: skip


def _secrets() -> dict[str, Any]:
    return {
        "token_hex": token_hex(8), "token_bytes": token_bytes(8).hex(), "urlsafe": secrets.token_urlsafe(8),
        "choice": secrets.choice("abcdef"), "randbelow": secrets.randbelow(1000), "system_random": SYSTEM.random(),
    }  # fmt: skip


SOURCES: dict[str, Callable[[], dict[str, Any]]] = {
    "clock": _clock, "uuid": _uuid, "random": _random, "urandom": _urandom, "secrets": _secrets,
    "ids": _ids,
}  # fmt: skip


async def draw(request: Request) -> JSONResponse:
    return JSONResponse(SOURCES[request.path_params["source"]]())


async def _part() -> list[Any]:
    await asyncio.sleep(0)
    first = str(uuid4())
    await asyncio.sleep(0)
    return [first, time_ns(), getrandbits(32)]


async def gather(request: Request) -> JSONResponse:
    tasks = await asyncio.gather(*(_part() for _ in range(3)))
    worker = await run_in_threadpool(lambda: [str(uuid4()), time_ns(), urandom(4).hex()])
    return JSONResponse({"tasks": tasks, "worker": worker})


async def extra(request: Request) -> JSONResponse:
    count = 1 + int(os.environ.get("DRAWS_APP_EXTRA", "0"))
    return JSONResponse(
        {"uuids": [str(uuid4()) for _ in range(count)], "clock": [time_ns() for _ in range(count)]}
    )


async def outside(request: Request) -> JSONResponse:
    drawn: list[Any] = []
    thread = threading.Thread(target=lambda: drawn.extend([str(uuid4()), time_ns()]))
    thread.start()
    thread.join()
    return JSONResponse({"inside": str(uuid4()), "outside": drawn})


async def _at_once() -> None:
    """No barrier: ``/many`` draws at once."""


def create_app(
    config: TraceConfig | None = None, barrier: Callable[[], Awaitable[None]] = _at_once
) -> Starlette:
    """The app, set up by ``config`` (default: the environment); ``/many`` awaits ``barrier()`` before it draws."""

    async def many(request: Request) -> JSONResponse:
        await barrier()
        values: list[Any] = [str(uuid4())]
        await asyncio.sleep(0)
        values.append(time_ns())
        values.extend(await asyncio.gather(_part(), _part()))
        values.append(await run_in_threadpool(lambda: urandom(8).hex()))
        return JSONResponse({"n": request.path_params["n"], "values": values})

    app = Starlette(
        routes=[
            Route("/draw/{source}/{n:int}", draw),
            Route("/gather/{n:int}", gather),
            Route("/extra/{n:int}", extra),
            Route("/outside/{n:int}", outside),
            Route("/many/{n:int}", many),
        ]
    )
    auto_setup(app, config=config)
    return app
