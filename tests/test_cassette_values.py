"""Typed values survive a JSON round trip with their exact types."""

from __future__ import annotations

import datetime as dt
import enum
import ipaddress
import json
import math
import uuid
from collections import OrderedDict
from decimal import Decimal
from typing import Any

import asyncpg
import orjson
import psycopg.types.range
import pytest

from timetracer_otel.cassette.values import ValueDecodeError, decode_value, encode_value
from timetracer_otel.cli.call_views import _cell
from timetracer_otel.protocols import typed


def _round_trip(value):
    return decode_value(json.loads(json.dumps(encode_value(value), allow_nan=False)))


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        0,
        -(2**70),
        1.5,
        1.0,
        "text",
        b"\x00\xffbytes",
        bytearray(b"ba"),
        (1, "a", b"b"),
        [1, [2, (3,)]],
        {"a": 1, "b": [b"x"]},
        {1: "int key", (1, 2): "tuple key"},
        {"$type": "looks typed", "other": 1},
        {1, 2, 3},
        frozenset({"a"}),
        dt.datetime(2026, 1, 22, 10, 30, 1, 123456),
        dt.datetime(2026, 1, 22, 10, 30, tzinfo=dt.timezone(dt.timedelta(hours=2))),
        dt.date(2026, 1, 22),
        dt.time(23, 59, 59, 5),
        dt.timedelta(days=-1, seconds=5, microseconds=7),
        Decimal("12.3400"),
        uuid.UUID("12345678-1234-5678-1234-567812345678"),
        ipaddress.ip_address("10.0.0.1"),
        ipaddress.ip_address("2001:db8::1"),
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("2001:db8::/32"),
        ipaddress.ip_interface("10.0.0.1/24"),
        ipaddress.ip_interface("2001:db8::1/64"),
        asyncpg.Range(1, 5, upper_inc=True),
        asyncpg.Range(dt.date(2026, 1, 1), None),
        asyncpg.Range(empty=True),
        asyncpg.BitString("10100"),
        asyncpg.Point(1.5, -2.0),
        asyncpg.Box((3, 4), (1, 2)),
        asyncpg.Line(1, 2, 3),
        asyncpg.LineSegment((1, 2), (3, 4)),
        asyncpg.Circle((1, 2), 3.5),
        psycopg.types.range.Range(Decimal("1.5"), Decimal("2"), "(]"),
        psycopg.types.range.Range(empty=True),
    ],
)
def test_value_round_trips_with_its_exact_type(value):
    result = _round_trip(value)
    assert result == value
    assert type(result) is type(value)


def test_driver_paths_and_polygons_keep_their_points_and_type():
    """asyncpg's Path and Polygon compare by identity: their points and closedness are what must survive."""
    for value in (
        asyncpg.Path((1, 2), (3, 4), is_closed=True),
        asyncpg.Path((1, 2), (3, 4)),
        asyncpg.Polygon((0, 0), (1, 0), (1, 1)),
    ):
        result = _round_trip(value)
        assert type(result) is type(value)
        assert (result.points, result.is_closed) == (value.points, value.is_closed)


def test_a_driver_type_out_of_the_list_is_refused_not_imported():
    """A cassette names the class of a driver value: only the listed ones are ever imported."""
    with pytest.raises(ValueDecodeError, match="no driver type 'os.system'"):
        decode_value({"$type": "driver", "class": "os.system"})
    with pytest.raises(ValueDecodeError, match="bad 'ip' value"):
        decode_value({"$type": "ip", "class": "Path", "value": "/"})


def test_non_finite_floats_round_trip():
    assert math.isnan(_round_trip(float("nan")))
    assert _round_trip(float("inf")) == float("inf")
    assert _round_trip(float("-inf")) == float("-inf")


@pytest.mark.parametrize(
    "value",
    [2**64 - 1, -(2**63), 2**64, -(2**63) - 1, 2**70_000, -(3**9_000), {"n": [2**100]}],
    ids=["2**64-1", "-2**63", "2**64", "-2**63-1", "2**70000", "-3**9000", "nested"],
)
def test_ints_beyond_64_bits_round_trip_through_a_json_writer(value):
    """orjson refuses an int beyond 64 bits (and Python's str() one of more than 4,300 digits)."""
    assert decode_value(orjson.loads(orjson.dumps(encode_value(value)))) == value


def test_nested_types_keep_their_types():
    result = _round_trip({"rows": [(1, Decimal("2.5"), b"\x00")]})
    assert type(result["rows"][0]) is tuple
    assert type(result["rows"][0][1]) is Decimal
    assert type(result["rows"][0][2]) is bytes


def test_memoryview_round_trips_as_memoryview():
    result = _round_trip(memoryview(b"abc"))
    assert isinstance(result, memoryview) and result.tobytes() == b"abc"


def test_subclasses_keep_their_plain_content():
    class Colour(enum.IntEnum):
        RED = 1

    assert _round_trip(OrderedDict(a=1)) == {"a": 1}
    assert _round_trip(Colour.RED) == 1 and type(_round_trip(Colour.RED)) is int


def test_a_bson_subclass_is_kept_as_its_bson_type():
    """Beanie's ``PydanticObjectId`` is an ObjectId: kept as one (as an insert's generated ``_id``
    replay matches it by type), not as its repr."""
    from bson import ObjectId

    class PydanticObjectId(ObjectId):
        pass

    value = PydanticObjectId()
    assert encode_value(value) == {"$type": "objectid", "value": str(value)}
    assert _round_trip(value) == ObjectId(str(value))


def test_a_str_enum_is_kept_as_the_text_drivers_send_not_its_name():
    """``str()`` of a ``(str, Enum)`` member is ``Status.QUEUED``; redis-py, asyncpg and psycopg
    send its content, ``queued`` (rq's job status, a model's status column)."""

    class Status(str, enum.Enum):
        QUEUED = "queued"

    class Ratio(float, enum.Enum):
        HALF = 0.5

    assert encode_value(Status.QUEUED) == "queued"
    assert _round_trip(Ratio.HALF) == 0.5 and type(_round_trip(Ratio.HALF)) is float


def test_unknown_objects_are_kept_as_their_repr():
    class Opaque:
        def __repr__(self) -> str:
            return "<opaque>"

    assert encode_value(Opaque())["$type"] == "repr"
    assert _round_trip(Opaque()) == "<opaque>"


def test_unknown_type_tag_is_a_clear_error():
    with pytest.raises(ValueDecodeError, match="unknown typed value 'martian'"):
        decode_value({"$type": "martian"})
    with pytest.raises(ValueDecodeError, match="bad 'decimal' value"):
        decode_value({"$type": "decimal"})


@pytest.mark.parametrize(
    "stored",
    [
        {"$type": "decimal", "value": "zz"},
        {"$type": "timedelta", "days": 10**12, "seconds": 0, "microseconds": 0},
    ],
)
def test_a_value_no_type_can_hold_is_a_decode_error(stored: dict[str, Any]) -> None:
    """A hostile file's value: the one error readers expect, not the type's own."""
    with pytest.raises(ValueDecodeError):
        decode_value(stored)


def test_typed_values_of_the_wrong_shape_are_no_text_and_no_items() -> None:
    assert typed.text({"$type": "bytes", "base64": 5}) is None
    assert typed.items({"$type": "tuple", "items": 5}) is None


def test_an_int_beyond_4300_digits_is_shown_by_its_size() -> None:
    assert _cell(1 << 20_000).text == "<int of 20001 bits>"
    assert _cell([1 << 20_000]).text == "<not shown>"
