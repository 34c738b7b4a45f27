"""Mongo signatures: what changes per run never counts, what the application asked for always does."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

import pytest
from bson import Binary, Decimal128, Regex
from bson.int64 import Int64
from bson.objectid import ObjectId
from bson.timestamp import Timestamp

from timetracer_otel.cassette.calls import CassetteCall
from timetracer_otel.cassette.values import decode_value, encode_value
from timetracer_otel.protocols.mongo import command_view, recorded_view


@pytest.mark.parametrize(
    "value",
    [
        ObjectId("5f2b3c4d5e6f708192a3b4c5"),
        Decimal128("1.10"),
        Int64(7),
        Binary(b"\x01\x02", 4),
        Timestamp(1700000000, 3),
        Regex("^a.*", 2),
    ],
)
def test_bson_values_round_trip_with_their_exact_type(value: Any) -> None:
    result = decode_value(json.loads(json.dumps(encode_value(value), allow_nan=False)))
    assert result == value
    assert type(result) is type(value)


def _view(command: dict[str, Any], database: str = "shop") -> Any:
    return command_view(database, next(iter(command)), encode_value(command))


def _session(number: int) -> dict[str, Any]:
    """The fields pymongo and the server add to a command, different on every run."""
    return {
        "lsid": {"id": uuid.uuid4()},
        "txnNumber": Int64(number),
        "$clusterTime": {
            "clusterTime": Timestamp(1_700_000_000 + number, number),
            "signature": {"hash": bytes(20), "keyId": Int64(0)},
        },
        "$db": "shop",
        "$readPreference": {"mode": "primaryPreferred"} if number % 2 else {"mode": "primary"},
        "apiVersion": "1",
        "maxTimeMS": 1000 - number,
        "readConcern": {"level": "majority", "afterClusterTime": Timestamp(1_700_000_000, number)},
    }


def test_volatile_fields_and_top_level_order_do_not_count() -> None:
    find = {"find": "orders", "filter": {"status": "open"}, "sort": {"sku": 1}, "batchSize": 2}
    first = _view({**find, **_session(1)})
    second = _view(
        {
            "find": "orders",
            **_session(2),
            "batchSize": 2,
            "sort": {"sku": 1},
            "filter": {"status": "open"},
        }
    )
    assert first.key == second.key
    assert first.label == "find shop.orders"
    assert first.fields == {
        "database": "shop",
        "command": "find",
        "batchSize": "2",
        "filter": '{"status":"open"}',
        "find": '"orders"',
        "readConcern": '{"level":"majority"}',
        "sort": '{"sku":1}',
    }


def test_what_the_application_asked_for_counts() -> None:
    base = _view({"find": "orders", "filter": {"status": "open"}, "sort": {"sku": 1, "qty": -1}})
    changes = [
        {"find": "orders", "filter": {"status": "closed"}, "sort": {"sku": 1, "qty": -1}},
        {"find": "archive", "filter": {"status": "open"}, "sort": {"sku": 1, "qty": -1}},
        {
            "find": "orders",
            "filter": {"status": "open"},
            "sort": {"qty": -1, "sku": 1},
        },  # nested order is meaning
        {"find": "orders", "filter": {"status": "open"}, "sort": {"sku": 1, "qty": -1}, "limit": 1},
    ]
    assert all(_view(changed).key != base.key for changed in changes)
    assert (
        _view(
            {"find": "orders", "filter": {"status": "open"}, "sort": {"sku": 1, "qty": -1}},
            database="other",
        ).key
        != base.key
    )
    assert (
        _view({"find": "orders", "filter": {"at": dt.datetime(2026, 1, 1)}}).key
        != _view({"find": "orders", "filter": {"at": "2026-01-01T00:00:00"}}).key
    )


def test_the_operands_of_in_nin_and_all_match_in_any_order() -> None:
    """A set of strings passed to ``$in`` is in its process's hash order; an array value, a
    ``$push`` and a pipeline's stages keep theirs."""

    def key(command: dict[str, Any]) -> Any:
        return _view(command).key

    assert key({"find": "t", "filter": {"tag": {"$in": ["a", "b"]}, "x": {"$nin": [1, 2]}}}) == key(
        {"find": "t", "filter": {"tag": {"$in": ["b", "a"]}, "x": {"$nin": [2, 1]}}}
    )
    assert key({"find": "t", "filter": {"$or": [{"tags": {"$all": ["x", "y"]}}]}}) == key(
        {"find": "t", "filter": {"$or": [{"tags": {"$all": ["y", "x"]}}]}}
    )
    assert key({"find": "t", "filter": {"tags": ["a", "b"]}}) != key(
        {"find": "t", "filter": {"tags": ["b", "a"]}}
    )
    assert key({"update": "t", "updates": [{"u": {"$push": {"l": {"$each": [1, 2]}}}}]}) != key(
        {"update": "t", "updates": [{"u": {"$push": {"l": {"$each": [2, 1]}}}}]}
    )


def test_generated_insert_ids_do_not_count_but_chosen_ids_do() -> None:
    def insert(*ids: Any) -> Any:
        return _view(
            {
                "insert": "orders",
                "ordered": True,
                "documents": [{"sku": "A", "_id": i} for i in ids],
            }
        )

    assert insert(ObjectId(), ObjectId()).key == insert(ObjectId(), ObjectId()).key
    assert insert(ObjectId()).key != insert(ObjectId(), ObjectId()).key
    assert insert("order-1").key != insert("order-2").key
    update = {"update": "orders", "updates": [{"q": {"_id": ObjectId()}, "u": {"$set": {"n": 1}}}]}
    assert (
        _view(update).key
        != _view({**update, "updates": [{"q": {"_id": ObjectId()}, "u": {"$set": {"n": 1}}}]}).key
    )


def test_recorded_call_has_the_view_of_the_same_live_command() -> None:
    command = {"aggregate": "orders", "pipeline": [{"$match": {"qty": {"$gte": 1}}}], "cursor": {}}
    call = {
        "protocol": "mongo",
        "request": {
            "database": "shop",
            "command_name": "aggregate",
            "command": encode_value({**command, **_session(3)}),
        },
    }
    assert recorded_view(CassetteCall(call)).key == _view({**command, **_session(4)}).key
    assert recorded_view(CassetteCall(call)).label == "aggregate shop.orders"
