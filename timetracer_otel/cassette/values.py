"""Typed values: Python values in a cassette, so replay gives back the exact types.

JSON keeps ``None``, ``bool``, ``int``, finite ``float``, ``str``, lists and string-keyed
objects. Everything else is an object with a ``"$type"`` key: bytes, tuples, sets,
datetimes, Decimal, UUID, BSON types, IP addresses and networks, database drivers' ranges,
bit strings and geometric types, dicts with other keys. A dict that itself has a
``"$type"`` key is wrapped too, so no recorded value can be mistaken for an encoding.
"""

from __future__ import annotations

import base64
import datetime as dt
import importlib
import ipaddress
import math
import re
import uuid
import zoneinfo
from collections.abc import Callable
from decimal import Decimal
from typing import Any, TypeVar

from timetracer_otel.sealing import REDACTED, SEALED_TOKEN

__all__ = ["encode_value", "decode_value", "Encoded", "ValueDecodeError"]

TYPE_KEY = "$type"


class ValueDecodeError(ValueError):
    """A typed value in a cassette that this version cannot decode."""


class Encoded:
    """A value already turned into its typed-JSON form, standing in for it: where a value of the
    application's own type crosses to a process that cannot import it (the writer process)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _encode_float(value: float) -> Any:
    if math.isfinite(value):
        return value
    return {
        TYPE_KEY: "float",
        "value": "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf"),
    }


# JSON's own scalars: a value of exactly one of these types is its own encoding (an int only
# within 64 bits, see _encode_int: it is encoded through encode_value)
_SCALARS = frozenset((str, bool, type(None)))
# the ints a JSON writer keeps as numbers (orjson: signed and unsigned 64-bit)
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1


def _encode_int(value: int) -> Any:
    """An int as itself; beyond 64 bits (``getrandbits(256)``, a factory's huge number) as its
    hexadecimal digits, which no reader rounds and Python's digit limit for decimal text spares."""
    return value if _INT_MIN <= value <= _INT_MAX else {TYPE_KEY: "int", "hex": format(value, "x")}


def _encode_dict(value: dict) -> Any:
    if TYPE_KEY not in value:
        encoded = {}
        for k, v in value.items():
            if type(k) is not str:
                break
            kind = type(v)  # inline: a row of ints costs a call per value otherwise
            encoded[k] = (
                v
                if kind in _SCALARS or (kind is int and _INT_MIN <= v <= _INT_MAX)
                else encode_value(v)
            )
        else:
            return encoded
    return {
        TYPE_KEY: "dict",
        "items": [[encode_value(k), encode_value(v)] for k, v in value.items()],
    }


def _sorted_items(values: Any) -> list[Any]:
    items = [encode_value(v) for v in values]
    try:
        return sorted(items, key=repr)
    except TypeError:
        return items


# exact type -> encoder; looked up with type(value), so subclasses (bool, Int64) stay distinct
def _encode_datetime(value: dt.datetime) -> dict[str, Any]:
    """Its ISO text, and the name of its time zone when it has one (psycopg's ``ZoneInfo('Etc/UTC')``
    is not the ``timezone.utc`` the offset alone gives back)."""
    encoded = {TYPE_KEY: "datetime", "value": value.isoformat()}
    if isinstance(value.tzinfo, zoneinfo.ZoneInfo) and value.tzinfo.key:
        encoded["zone"] = value.tzinfo.key
    return encoded


def _decode_datetime(encoded: dict[str, Any]) -> dt.datetime:
    parsed = _offset_kept(dt.datetime.fromisoformat(encoded["value"]), encoded["value"])
    zone = encoded.get("zone")
    return parsed.astimezone(zoneinfo.ZoneInfo(zone)) if zone else parsed


_ENCODERS: dict[type, Callable[[Any], Any]] = {
    type(None): lambda v: v,
    bool: lambda v: v,
    int: _encode_int,
    str: lambda v: v,
    float: _encode_float,
    list: lambda v: [
        item
        if (kind := type(item)) in _SCALARS or (kind is int and _INT_MIN <= item <= _INT_MAX)
        else encode_value(item)
        for item in v
    ],
    dict: _encode_dict,
    tuple: lambda v: {TYPE_KEY: "tuple", "items": _ENCODERS[list](v)},
    set: lambda v: {TYPE_KEY: "set", "items": _sorted_items(v)},
    frozenset: lambda v: {TYPE_KEY: "frozenset", "items": _sorted_items(v)},
    bytes: lambda v: {TYPE_KEY: "bytes", "base64": _b64(v)},
    bytearray: lambda v: {TYPE_KEY: "bytearray", "base64": _b64(bytes(v))},
    memoryview: lambda v: {TYPE_KEY: "memoryview", "base64": _b64(v.tobytes())},
    dt.datetime: lambda v: _encode_datetime(v),
    dt.date: lambda v: {TYPE_KEY: "date", "value": v.isoformat()},
    dt.time: lambda v: {TYPE_KEY: "time", "value": v.isoformat()},
    dt.timedelta: lambda v: {
        TYPE_KEY: "timedelta",
        "days": v.days,
        "seconds": v.seconds,
        "microseconds": v.microseconds,
    },
    Decimal: lambda v: {TYPE_KEY: "decimal", "value": str(v)},
    uuid.UUID: lambda v: {TYPE_KEY: "uuid", "value": str(v)},
    Encoded: lambda v: v.value,
}

_T = TypeVar("_T", dt.datetime, dt.time)
_FRACTIONAL_OFFSET = re.compile(r"([+-])(\d\d):(\d\d):(\d\d)\.(\d{6})$")


def _offset_kept(parsed: _T, text: str) -> _T:
    """``fromisoformat`` drops the microseconds of a UTC offset that has some (CPython): put the
    offset ``isoformat`` wrote back, so the value replays equal."""
    match = _FRACTIONAL_OFFSET.search(text)
    if match is None:
        return parsed
    sign, hours, minutes, seconds, micros = match.groups()
    offset = dt.timedelta(
        hours=int(hours), minutes=int(minutes), seconds=int(seconds), microseconds=int(micros)
    )
    return parsed.replace(tzinfo=dt.timezone(-offset if sign == "-" else offset))


_DECODERS: dict[str, Callable[[dict], Any]] = {
    "float": lambda d: float(d["value"]),
    "int": lambda d: int(d["hex"], 16),
    "dict": lambda d: {decode_value(k): decode_value(v) for k, v in d["items"]},
    "tuple": lambda d: tuple(decode_value(v) for v in d["items"]),
    "set": lambda d: {decode_value(v) for v in d["items"]},
    "frozenset": lambda d: frozenset(decode_value(v) for v in d["items"]),
    "bytes": lambda d: _bytes_of(d),
    "bytearray": lambda d: bytearray(_bytes_of(d)),
    "memoryview": lambda d: memoryview(_bytes_of(d)),
    "datetime": _decode_datetime,
    "date": lambda d: dt.date.fromisoformat(d["value"]),
    "time": lambda d: _offset_kept(dt.time.fromisoformat(d["value"]), d["value"]),
    "timedelta": lambda d: dt.timedelta(
        days=d["days"], seconds=d["seconds"], microseconds=d["microseconds"]
    ),
    "decimal": lambda d: Decimal(d["value"]),
    "uuid": lambda d: uuid.UUID(d["value"]),
    "repr": lambda d: d["value"],
}


# A subclass of one of these (asyncpg's UUID, an IntEnum, Beanie's PydanticObjectId) is encoded as
# its base; BSON's classes are put first when pymongo is installed.
_BASES: list[tuple[type[Any], Callable[[Any], Any]]] = [
    (dict, _encode_dict),
    (list, _ENCODERS[list]),
    (tuple, _ENCODERS[tuple]),
    (str, _ENCODERS[str]),
    (int, _encode_int),
    (float, _encode_float),
    (uuid.UUID, _ENCODERS[uuid.UUID]),
    (dt.datetime, _ENCODERS[dt.datetime]),  # before date: a datetime is a date
    (dt.date, _ENCODERS[dt.date]),
    (Decimal, _ENCODERS[Decimal]),
]


def _register_bson() -> None:
    """BSON types, when pymongo is installed: their encoders and decoders."""
    try:
        import bson
        from bson.binary import Binary
        from bson.decimal128 import Decimal128
        from bson.int64 import Int64
        from bson.objectid import ObjectId
        from bson.regex import Regex
        from bson.timestamp import Timestamp
    except ImportError:
        return
    _ENCODERS.update(
        {
            ObjectId: lambda v: {TYPE_KEY: "objectid", "value": str(v)},
            Decimal128: lambda v: {TYPE_KEY: "decimal128", "value": str(v)},
            Int64: lambda v: {TYPE_KEY: "int64", "value": int(v)},
            Binary: lambda v: {TYPE_KEY: "binary", "subtype": v.subtype, "base64": _b64(bytes(v))},
            Timestamp: lambda v: {TYPE_KEY: "bson_timestamp", "time": v.time, "inc": v.inc},
            Regex: lambda v: {
                TYPE_KEY: "regex",
                "pattern": encode_value(v.pattern),
                "flags": v.flags,
            },
            bson.MinKey: lambda v: {TYPE_KEY: "minkey"},
            bson.MaxKey: lambda v: {TYPE_KEY: "maxkey"},
        }
    )
    _BASES[:0] = [(cls, _ENCODERS[cls]) for cls in (ObjectId, Decimal128, Binary, Timestamp, Regex)]
    _DECODERS.update(
        {
            "objectid": lambda d: ObjectId(d["value"]),
            "decimal128": lambda d: Decimal128(d["value"]),
            "int64": lambda d: Int64(d["value"]),
            "binary": lambda d: Binary(base64.b64decode(d["base64"]), d["subtype"]),
            "bson_timestamp": lambda d: Timestamp(d["time"], d["inc"]),
            "regex": lambda d: Regex(decode_value(d["pattern"]), d["flags"]),
            "minkey": lambda d: bson.MinKey(),
            "maxkey": lambda d: bson.MaxKey(),
        }
    )


_register_bson()


_IP_CLASSES = {
    cls.__name__: cls
    for cls in (
        ipaddress.IPv4Address,
        ipaddress.IPv6Address,
        ipaddress.IPv4Network,
        ipaddress.IPv6Network,
        ipaddress.IPv4Interface,
        ipaddress.IPv6Interface,
    )
}
_ENCODERS.update(
    {
        cls: lambda v: {TYPE_KEY: "ip", "class": type(v).__name__, "value": str(v)}
        for cls in _IP_CLASSES.values()
    }
)
_DECODERS["ip"] = lambda d: _IP_CLASSES[d["class"]](d["value"])


def _points(points: Any) -> list[list[Any]]:
    return [[encode_value(p[0]), encode_value(p[1])] for p in points]


def _decoded_points(data: dict) -> list[tuple[Any, Any]]:
    """The ``points`` of a driver value (see :func:`_points`) as (x, y) tuples."""
    return [(decode_value(x), decode_value(y)) for x, y in data["points"]]


def _bytes_of(data: dict) -> bytes:
    """Typed bytes' content; ``b"[REDACTED]"`` for hidden bytes (see ``sealing.hidden_whole``)
    not opened with the key: base64 would read the marker's letters as data."""
    text = data["base64"]
    if text == REDACTED or SEALED_TOKEN.fullmatch(text):
        return REDACTED.encode("ascii")
    return base64.b64decode(text)


def _driver_class(path: str) -> Any:
    """A driver's class named by its path, imported when a value of it is decoded (in replay, where
    the application's driver is installed); only the paths of :data:`_DRIVER_TYPES`."""
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"{path} cannot be imported here ({exc})") from None


# Database drivers' own value types (ranges, bit strings, geometry), found by their class path so
# that encoding imports no driver: each as its parts, made again from them by the same class.
_DRIVER_TYPES: dict[str, tuple[Callable[[Any], dict], Callable[[type, dict], Any]]] = {
    "asyncpg.types.Range": (
        lambda v: {"lower": encode_value(v.lower), "upper": encode_value(v.upper),
                   "lower_inc": v.lower_inc, "upper_inc": v.upper_inc, "empty": v.isempty},
        lambda cls, d: cls(decode_value(d["lower"]), decode_value(d["upper"]),
                           lower_inc=d["lower_inc"], upper_inc=d["upper_inc"], empty=d["empty"]),
    ),
    "psycopg.types.range.Range": (
        lambda v: {"lower": encode_value(v.lower), "upper": encode_value(v.upper),
                   "bounds": v.bounds, "empty": v.isempty},
        lambda cls, d: cls(decode_value(d["lower"]), decode_value(d["upper"]), d["bounds"], d["empty"]),
    ),
    "asyncpg.pgproto.types.BitString": (
        lambda v: {"bits": v.as_string()},
        lambda cls, d: cls(d["bits"]),
    ),
    "asyncpg.pgproto.types.Point": (
        lambda v: {"points": _points([v])},
        lambda cls, d: cls(*_decoded_points(d)[0]),
    ),
    "asyncpg.pgproto.types.Line": (
        lambda v: {"items": [encode_value(c) for c in v]},
        lambda cls, d: cls(*map(decode_value, d["items"])),
    ),
    "asyncpg.pgproto.types.Box": (
        lambda v: {"points": _points(v)},
        lambda cls, d: cls(*_decoded_points(d)),
    ),
    "asyncpg.pgproto.types.LineSegment": (
        lambda v: {"points": _points(v)},
        lambda cls, d: cls(*_decoded_points(d)),
    ),
    "asyncpg.pgproto.types.Path": (
        lambda v: {"points": _points(v.points), "closed": v.is_closed},
        lambda cls, d: cls(*_decoded_points(d), is_closed=d["closed"]),
    ),
    "asyncpg.pgproto.types.Polygon": (
        lambda v: {"points": _points(v.points)},
        lambda cls, d: cls(*_decoded_points(d)),
    ),
    "asyncpg.pgproto.types.Circle": (
        lambda v: {"points": _points([v[0]]), "radius": encode_value(v[1])},
        lambda cls, d: cls(_decoded_points(d)[0], decode_value(d["radius"])),
    ),
}  # fmt: skip


def _decode_driver_value(data: dict) -> Any:
    path = data["class"]
    if path not in _DRIVER_TYPES:
        raise ValueError(f"no driver type {path!r}")
    return _DRIVER_TYPES[path][1](_driver_class(path), data)


_DECODERS["driver"] = _decode_driver_value


# The content of a subclass of a plain type, as a driver sends it: ``str()`` of a ``(str, Enum)``
# member is its name (``Status.QUEUED``), its content is its value.
_PLAIN_CONTENT: dict[type[Any], Callable[[Any], Any]] = {
    int: int.__int__,
    float: float.__float__,
    str: str.__str__,
}


def encode_value(value: Any) -> Any:
    """``value`` as JSON-compatible data that :func:`decode_value` turns back into an equal value of the same type."""
    encoder = _ENCODERS.get(type(value))
    if encoder is not None:
        return encoder(value)
    cls = type(value)
    path = f"{cls.__module__}.{cls.__qualname__}"
    driver = _DRIVER_TYPES.get(path)
    if driver is not None:  # before the bases: a driver's point is a tuple, but not only one
        return {TYPE_KEY: "driver", "class": path, **driver[0](value)}
    for base, base_encoder in _BASES:
        if isinstance(value, base):  # a subclass (OrderedDict, an IntEnum): keep its plain content
            plain = _PLAIN_CONTENT.get(base)
            return base_encoder(plain(value) if plain is not None else value)
    return {TYPE_KEY: "repr", "type": path, "value": repr(value)}


def decode_value(data: Any) -> Any:
    """The Python value ``data`` (from :func:`encode_value`) stands for."""
    if isinstance(data, list):
        return [decode_value(item) for item in data]
    if isinstance(data, dict):
        kind = data.get(TYPE_KEY)
        if kind is None:
            return {k: decode_value(v) for k, v in data.items()}
        decoder = _DECODERS.get(kind)
        if decoder is None:
            raise ValueDecodeError(f"unknown typed value {kind!r}")
        try:
            return decoder(data)
        # ArithmeticError: a decimal that is none, a timedelta beyond its range
        except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
            raise ValueDecodeError(f"bad {kind!r} value: {exc}") from None
    return data
