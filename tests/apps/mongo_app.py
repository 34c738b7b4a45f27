"""The application the Mongo tests record and replay.

``/orders/sync`` is a ``def`` route using pymongo's ``MongoClient``; ``/orders/async``
and ``/orders/motor`` are async routes using ``AsyncMongoClient`` and Motor. All three
run one scenario (inserts, an update, a find read in batches of two so ``getMore``
follows, an aggregation, ``count_documents``, a duplicate key and a failing pipeline the
app handles, a document with a password) and answer with what the driver gave them as
canonical extended JSON, which keeps every BSON type visible, plus each field's Python
type. Equal responses mean the app got equal values of equal types.

The clients are created with the app, before any request: replay must cover clients
that already exist. The sync client is created with ``connect=False``, as apps that fork
do: ``MongoClient`` otherwise starts its monitor threads (which connect) at construction.
``create_app(mongo_url, config)``; the database is ``shop``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import inspect
from collections.abc import AsyncIterator, Generator
from typing import Any

import motor.motor_asyncio
import pymongo
from bson import json_util
from bson.binary import Binary
from bson.decimal128 import Decimal128
from pymongo.errors import DuplicateKeyError, OperationFailure
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from timetracer_otel.config import TraceConfig
from timetracer_otel.integrations.starlette import auto_setup

KINDS = ("sync", "async", "motor")
CLOSED_URL = "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=300"
FIRST_ORDER = {
    "sku": "A-1",
    "qty": 2,
    "status": "open",
    "price": Decimal128("12.50"),
    "at": dt.datetime(2026, 1, 22, 10, 30, 0, 123000),
    "tag": Binary(b"\x01\x02", 0x80),
    "raw": b"\xff\x00",
}

# A scenario yields what a client call returned (a result, a cursor, or an awaitable of
# one); the runner sends back the value, or throws the driver's exception in at the yield.
Scenario = Generator[Any, Any, dict[str, Any]]


def scenario(db: Any) -> Scenario:
    orders = db["orders"]
    first = yield orders.insert_one(dict(FIRST_ORDER))
    more = yield orders.insert_many(
        [{"sku": f"B-{n}", "qty": n, "status": "open" if n % 2 else "closed"} for n in range(1, 6)]
    )
    updated = yield orders.update_one(
        {"sku": "B-1"}, {"$inc": {"qty": 10}, "$set": {"status": "closed"}}
    )
    # six documents: find, then two getMore
    listed = yield orders.find({}, sort=[("sku", 1)], batch_size=2)
    totals = yield orders.aggregate(
        [
            {"$match": {"qty": {"$gte": 1}}},
            {"$group": {"_id": "$status", "qty": {"$sum": "$qty"}}},
            {"$sort": {"_id": 1}},
        ]
    )
    closed = yield orders.count_documents({"status": "closed"})
    try:
        duplicate = yield orders.insert_one({"_id": first.inserted_id, "sku": "again"})
    except DuplicateKeyError as exc:
        duplicate = {"code": exc.code}
    try:
        failed = yield orders.aggregate([{"$bogus": {}}])
    except OperationFailure as exc:
        failed = {"code": exc.code, "message": str(exc.details.get("errmsg"))}
    yield db["users"].insert_one({"name": "ada", "password": "s3cret"})
    user = yield db["users"].find_one({"name": "ada"})
    return {
        "inserted_id": first.inserted_id,
        "inserted_ids": more.inserted_ids,
        "modified": updated.modified_count,
        "listed": listed,
        "types": {name: type(value).__name__ for name, value in listed[0].items()},
        "totals": totals,
        "closed": closed,
        "duplicate": duplicate,
        "failed": failed,
        "user_fields": sorted(user),
    }


def run(steps: Scenario) -> dict[str, Any]:
    """Run a scenario with a sync client: its calls ran already; cursors are read here."""
    value, error = None, None
    while True:
        try:
            pending = steps.throw(error) if error else steps.send(value)
        except StopIteration as stop:
            return stop.value
        value, error = None, None
        try:
            value = pending.to_list() if hasattr(pending, "to_list") else pending
        except pymongo.errors.PyMongoError as exc:
            error = exc


async def arun(steps: Scenario) -> dict[str, Any]:
    """Run a scenario with an async client: await what it yields and read cursors."""
    value, error = None, None
    while True:
        try:
            pending = steps.throw(error) if error else steps.send(value)
        except StopIteration as stop:
            return stop.value
        value, error = None, None
        try:
            value = await pending if inspect.isawaitable(pending) else pending
            value = await value.to_list(None) if hasattr(value, "to_list") else value
        except pymongo.errors.PyMongoError as exc:
            error = exc


def _json(result: dict[str, Any]) -> Response:
    return Response(
        json_util.dumps(result, json_options=json_util.CANONICAL_JSON_OPTIONS),
        media_type="application/json",
    )


def create_app(mongo_url: str, config: TraceConfig) -> Starlette:
    clients: dict[str, Any] = {}

    def sync_orders(request: Request) -> Response:
        return _json(run(scenario(clients["sync"]["shop"])))

    async def async_orders(request: Request) -> Response:
        return _json(await arun(scenario(clients[request.path_params["kind"]]["shop"])))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        clients["sync"].close()
        clients["motor"].close()
        await clients["async"].close()

    app = Starlette(
        routes=[Route("/orders/sync", sync_orders), Route("/orders/{kind}", async_orders)],
        lifespan=lifespan,
    )
    # before the clients: pymongo hands them its listeners
    auto_setup(app, config=config, plugins=["pymongo", "motor"])
    clients.update(
        {
            "sync": pymongo.MongoClient(mongo_url, connect=False),
            "async": pymongo.AsyncMongoClient(mongo_url),
            "motor": motor.motor_asyncio.AsyncIOMotorClient(mongo_url),
        }
    )
    return app
