"""What the application sends its writer process: a recording's protocol values, whatever their types.

The writer process may not import the application's modules (nor a driver's), so a value
of such a type must reach it already in its cassette form, and the cassette must be the
one the application's process would have written itself.
"""

from __future__ import annotations

import datetime as dt
import enum
import io
import pickle
import uuid
import zoneinfo
from decimal import Decimal
from typing import Any

import bson
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind

from timetracer_otel._recording import ProtocolCall, TraceRecording, activate, deactivate
from timetracer_otel.config import TraceConfig
from timetracer_otel.exporters._frames import frame
from timetracer_otel.exporters._messages import RecordMessage
from timetracer_otel.exporters.builder import build_document
from timetracer_otel.exporters.frozen import freeze, thaw


class Colour(enum.IntEnum):
    RED = 1


class Money:
    """An application's own value type."""

    def __init__(self, cents: int) -> None:
        self.cents = cents

    def __repr__(self) -> str:
        return f"Money({self.cents})"


class Plus2(dt.tzinfo):
    """A time zone of the application's own (pytz's are like it): not the standard library's."""

    def utcoffset(self, when: Any) -> dt.timedelta:
        return dt.timedelta(hours=2)

    def dst(self, when: Any) -> dt.timedelta:
        return dt.timedelta(0)

    def tzname(self, when: Any) -> str:
        return "+02"


_VALUES: dict[str, Any] = {
    "enum": Colour.RED,
    "own": Money(250),
    "own_key": {Money(1): "one"},
    "own_set": {Money(2)},
    "own_tz": dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=Plus2()),
    "own_tz_time": dt.time(3, 4, tzinfo=Plus2()),
    "zone": dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=zoneinfo.ZoneInfo("Europe/Paris")),
    "utc": dt.datetime(2026, 1, 2, tzinfo=dt.timezone.utc),
    "naive": dt.datetime(2026, 1, 2),
    "date": dt.date(2026, 1, 2),
    "delta": dt.timedelta(seconds=3),
    "decimal": Decimal("1.10"),
    "uuid": uuid.UUID(int=7),
    "view": memoryview(b"abc"),
    "bytes": b"\x00\xff",
    "tuple": (1, (2.5, None)),
    "nan": float("nan"),
    "object_id": bson.ObjectId("65a1b2c3d4e5f60718293a4b"),
    "int64": bson.Int64(9),
    "decimal128": bson.Decimal128("1.5"),
    "binary": bson.Binary(b"\x01", 4),
}


def _recording() -> TraceRecording:
    tracer = TracerProvider().get_tracer("test_frames")
    config = TraceConfig(mode="record", cassette_dir="unused")
    with tracer.start_as_current_span("GET /values", kind=SpanKind.SERVER) as root:
        context = root.get_span_context()
        recording = TraceRecording(
            config,
            trace_id=context.trace_id,
            root_span_id=context.span_id,
            method="GET",
            path="/values",
            query="",
            headers=[],
            service="shop",
        )
        token = activate(recording)
        call = ProtocolCall("mongo", "pymongo", {"operation": "find", "filter": _VALUES})
        recording.add_call(call)
        call.response = {"documents": [_VALUES, list(_VALUES.values())]}
        deactivate(token)
    recording.add_span(root)
    return recording


def test_the_writer_process_gets_foreign_values_in_their_cassette_form() -> None:
    recording = _recording()
    data = frame(RecordMessage(0, freeze(recording)), encode_foreign=True)

    needed: set[str] = set()

    class Unpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            needed.add(module.partition(".")[0])
            return super().find_class(module, name)

    sent = Unpickler(io.BytesIO(data[4:])).load()
    # only the standard library's modules and timetracer's: not this one, not bson, not enum
    assert needed <= {
        "timetracer_otel",
        "builtins",
        "copyreg",
        "datetime",
        "decimal",
        "uuid",
        "zoneinfo",
    }
    assert build_document(thaw(sent.recording), 1024) == build_document(
        thaw(freeze(recording)), 1024
    )
