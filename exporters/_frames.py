"""Length-prefixed pickle frames: the messages between the application and its writer process.

A recording's protocol values are the Python values the application's libraries gave
(:mod:`.frozen`). Those of the standard library's plain types travel as they are; any
other (a driver's or the application's own type, which the writer process may not be
able to import, or may not unpickle alike) travels in its typed-JSON form, encoded on the way.
"""

from __future__ import annotations

import datetime as dt
import io
import pickle
import types
import uuid
import zoneinfo
from decimal import Decimal
from typing import Any

from timetracer_otel.cassette.values import Encoded, encode_value

_HEADER = 4
_PROTOCOL = pickle.HIGHEST_PROTOCOL
_AS_IS = frozenset({dt.date, dt.timedelta, dt.timezone, zoneinfo.ZoneInfo, Decimal, uuid.UUID})
_ZONES = (dt.timezone, zoneinfo.ZoneInfo)


class _EncodingPickler(pickle.Pickler):
    """Pickles values of the standard library's plain types as they are, any other in its typed-JSON form."""

    def reducer_override(self, obj: Any) -> Any:
        # Called for every object but those pickle handles itself (None, bool, int, float, str,
        # bytes, bytearray, exact list/tuple/dict/set/frozenset).
        cls = type(obj)
        if (
            cls in _AS_IS
            or isinstance(obj, (type, types.FunctionType, types.BuiltinFunctionType))
            or cls.__module__.startswith("timetracer_otel.")  # the message itself, Encoded
            or (
                cls in (dt.datetime, dt.time) and (obj.tzinfo is None or type(obj.tzinfo) in _ZONES)
            )
        ):
            return NotImplemented
        return Encoded, (encode_value(obj),)


def frame(message: Any, *, encode_foreign: bool = False) -> bytes:
    """``message`` pickled, after its length (4 bytes, big-endian).

    ``encode_foreign``: values of other types than the standard library's plain ones (a
    recording's protocol values) travel as :class:`~timetracer_otel.cassette.values.Encoded`.
    """
    if encode_foreign:
        buffer = io.BytesIO()
        _EncodingPickler(buffer, protocol=_PROTOCOL).dump(message)
        payload = buffer.getvalue()
    else:
        payload = pickle.dumps(message, protocol=_PROTOCOL)
    return len(payload).to_bytes(_HEADER, "big") + payload


def unframe(data: bytes | bytearray) -> Any:
    """The message of one whole frame."""
    return pickle.loads(data[_HEADER:])


class FrameReader:
    """Collects bytes as they arrive and gives back each whole message once."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        """The messages completed by ``data``, in order."""
        self._buffer += data
        messages = []
        start = 0
        while len(self._buffer) - start >= _HEADER:
            size = int.from_bytes(self._buffer[start : start + _HEADER], "big")
            end = start + _HEADER + size
            if len(self._buffer) < end:
                break
            messages.append(unframe(self._buffer[start:end]))
            start = end
        del self._buffer[:start]
        return messages
