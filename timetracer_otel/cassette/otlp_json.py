"""Cassettes as OTLP JSON, the format of the OpenTelemetry Collector's ``file`` exporter and
``otlpjsonfile`` receiver: one ``ExportTraceServiceRequest`` per line, in the protobuf JSON
mapping with hex trace and span ids and integer enums.

A cassette becomes its spans, as real OTLP spans, plus payload attributes in the
``timetracer.cassette.`` namespace, so that a file holding many traces, in any order and
split across lines, turns back into the same cassettes:

- every span: ``timetracer.cassette.root`` (the cassette's server span id) and
  ``timetracer.cassette.index`` (its place in ``spans``), which say which cassette it is of;
- the server span: ``timetracer.cassette.document`` (the document without ``calls`` and
  ``spans``, as JSON), ``timetracer.cassette.span_count`` and ``timetracer.cassette.call_count``;
- the span a call ran under (the server span for calls with none): ``timetracer.cassette.calls``,
  a JSON list of ``[position, call]``.

Needs ``opentelemetry-proto`` (the ``otlp`` extra).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    InstrumentationScope,
    KeyValue,
    KeyValueList,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from timetracer_otel import __version__
from timetracer_otel.config import ReadLimits

from .safe_json import JSONProblem, loads

__all__ = ["PREFIX", "to_request", "to_line", "Imported", "from_lines"]

PREFIX = "timetracer.cassette."
_ROOT = PREFIX + "root"
_INDEX = PREFIX + "index"
_DOCUMENT = PREFIX + "document"
_SPAN_COUNT = PREFIX + "span_count"
_CALL_COUNT = PREFIX + "call_count"
_CALLS = PREFIX + "calls"
_ID_FIELDS = ("traceId", "spanId", "parentSpanId")  # bytes in protobuf, hex strings in OTLP JSON


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _ms(nanoseconds: int) -> float:
    return round(nanoseconds / 1e6, 3)  # as the cassette builder computes offsets and durations


# --------------------------------------------------------------------------- attribute values
def _any_value(value: Any) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, str):
        return AnyValue(string_value=value)
    if isinstance(value, (list, tuple)):
        return AnyValue(array_value=ArrayValue(values=[_any_value(v) for v in value]))
    if isinstance(value, dict):
        return AnyValue(kvlist_value=KeyValueList(values=_key_values(value)))
    if value is None:
        return AnyValue()
    raise TypeError(f"cannot carry a {type(value).__name__} as an OTLP attribute value")


def _key_values(attributes: dict[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=key, value=_any_value(value)) for key, value in attributes.items()]


def _python(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_python(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    return None if kind is None else getattr(value, kind)


def _attributes(pairs: Iterable[KeyValue]) -> dict[str, Any]:
    return {pair.key: _python(pair.value) for pair in pairs}


# --------------------------------------------------------------------------- cassette -> OTLP
def _root_index(doc: dict[str, Any]) -> int:
    """The server span of the cassette: the one whose id ends with the cassette id."""
    for index, span in enumerate(doc["spans"]):
        if span["span_id"].endswith(doc["id"]):
            return index
    raise ValueError(f"cassette {doc['id']} has no span {doc['id']} (its server span) to carry it")


def _span(trace_id: bytes, span: dict[str, Any], origin: int, extra: dict[str, Any]) -> Span:
    return Span(
        trace_id=trace_id,
        span_id=bytes.fromhex(span["span_id"]),
        parent_span_id=bytes.fromhex(span["parent_id"]) if span["parent_id"] else b"",
        name=span["name"],
        kind=Span.SpanKind.Value(f"SPAN_KIND_{span['kind']}"),
        start_time_unix_nano=span["start_time_unix_nano"],
        end_time_unix_nano=span["end_time_unix_nano"],
        attributes=_key_values({**span["attributes"], **extra}),
        events=[
            Span.Event(
                time_unix_nano=origin + round(event["offset_ms"] * 1_000_000),
                name=event["name"],
                attributes=_key_values(event["attributes"]),
            )
            for event in span["events"]
        ],
        status=Status(
            code=Status.StatusCode.Value(f"STATUS_CODE_{span['status']['code']}"),
            message=span["status"]["description"] or "",
        ),
    )


def _scope() -> InstrumentationScope:
    return InstrumentationScope(name="timetracer_otel", version=__version__)


def to_request(doc: dict[str, Any]) -> ExportTraceServiceRequest:
    """The cassette ``doc`` as one OTLP request: its spans, carrying its payloads as attributes."""
    spans = doc["spans"]
    root_index = _root_index(doc)
    root = spans[root_index]
    ids = {span["span_id"] for span in spans}
    calls: dict[str, list] = {}
    for position, call in enumerate(doc["calls"]):
        owner = call.get("span_id") if call.get("span_id") in ids else root["span_id"]
        calls.setdefault(owner, []).append([position, call])
    header = {key: value for key, value in doc.items() if key not in ("calls", "spans")}
    trace_id = bytes.fromhex(doc["trace_id"])
    out = []
    for index, span in enumerate(spans):
        extra: dict[str, Any] = {_ROOT: root["span_id"], _INDEX: index}
        if span["span_id"] in calls:
            extra[_CALLS] = _json(calls.pop(span["span_id"]))
        if index == root_index:
            extra.update(
                {_DOCUMENT: _json(header), _SPAN_COUNT: len(spans), _CALL_COUNT: len(doc["calls"])}
            )
        out.append(_span(trace_id, span, root["start_time_unix_nano"], extra))
    resource = Resource(attributes=_key_values({"service.name": doc["service"]}))
    return ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(resource=resource, scope_spans=[ScopeSpans(scope=_scope(), spans=out)])
        ]
    )


def _convert_ids(node: Any, convert: Callable[[str], str]) -> Any:
    """``node`` (a JSON value) with every trace/span id field passed through ``convert``."""
    if isinstance(node, dict):
        return {
            k: convert(v) if k in _ID_FIELDS and isinstance(v, str) else _convert_ids(v, convert)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_convert_ids(item, convert) for item in node]
    return node


def to_line(doc: dict[str, Any]) -> str:
    """The cassette as one line of OTLP JSON (without the newline)."""
    mapped = json_format.MessageToDict(to_request(doc), use_integers_for_enums=True)
    return _json(_convert_ids(mapped, _base64_to_hex))


# --------------------------------------------------------------------------- OTLP -> cassettes
@dataclass
class _Parts:
    """What was found of one cassette so far: its spans by index, and its calls by position."""

    spans: dict[int, tuple[Span, dict[str, Any]]] = field(default_factory=dict)
    calls: dict[int, Any] = field(default_factory=dict)
    header: dict[str, Any] | None = None
    counts: tuple[int, int] = (0, 0)
    origin: int = 0  # the server span's start: offsets count from it


@dataclass
class Imported:
    """The cassettes rebuilt from OTLP JSON lines, and what could not be used (one message each)."""

    cassettes: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    spans_seen: int = 0


def _hex_to_base64(text: str) -> str:
    return base64.b64encode(bytes.fromhex(text)).decode("ascii")


def _base64_to_hex(text: str) -> str:
    return base64.b64decode(text).hex()


def _requests(
    lines: Iterable[tuple[str, bytes]], imported: Imported, limits: ReadLimits
) -> Iterable[ExportTraceServiceRequest]:
    for where, line in lines:
        if not line.strip():
            continue
        try:
            data = loads(line, limits)
            if not isinstance(data, dict) or "resourceSpans" not in data:
                continue  # a metrics or logs line of the same file
            yield json_format.ParseDict(
                _convert_ids(data, _hex_to_base64),
                ExportTraceServiceRequest(),
                ignore_unknown_fields=True,
            )
        except JSONProblem as exc:
            imported.problems.append(f"{where} {exc}")
        except (
            ValueError,
            TypeError,
            AttributeError,
            RecursionError,
            json_format.ParseError,
        ) as exc:
            imported.problems.append(f"{where}: not OTLP JSON traces ({type(exc).__name__}: {exc})")


def _span_dict(span: Span, attributes: dict[str, Any], origin: int) -> dict[str, Any]:
    start, end = span.start_time_unix_nano, span.end_time_unix_nano
    return {
        "span_id": span.span_id.hex(),
        "parent_id": span.parent_span_id.hex() or None,
        "name": span.name,
        "kind": Span.SpanKind.Name(span.kind)
        .removeprefix("SPAN_KIND_")
        .replace("UNSPECIFIED", "INTERNAL"),
        "start_offset_ms": _ms(start - origin),
        "duration_ms": _ms(end - start),
        "start_time_unix_nano": start,
        "end_time_unix_nano": end,
        "status": {
            "code": Status.StatusCode.Name(span.status.code).removeprefix("STATUS_CODE_"),
            "description": span.status.message or None,
        },
        "attributes": {k: v for k, v in attributes.items() if not k.startswith(PREFIX)},
        "events": [
            {
                "name": event.name,
                "offset_ms": _ms(event.time_unix_nano - origin),
                "attributes": _attributes(event.attributes),
            }
            for event in span.events
        ],
    }


def _collect(parts: _Parts, span: Span, attributes: dict[str, Any], limits: ReadLimits) -> None:
    parts.spans.setdefault(int(attributes[_INDEX]), (span, attributes))
    for position, call in loads(str(attributes.get(_CALLS, "[]")).encode("utf-8"), limits):
        parts.calls.setdefault(int(position), call)
    if _DOCUMENT in attributes:
        header = loads(str(attributes[_DOCUMENT]).encode("utf-8"), limits)
        if not isinstance(header, dict):
            raise ValueError("the cassette document is not a JSON object")
        parts.header = header
        parts.counts = (int(attributes[_SPAN_COUNT]), int(attributes[_CALL_COUNT]))
        parts.origin = span.start_time_unix_nano


def _assemble(name: str, parts: _Parts) -> dict[str, Any]:
    """The cassette, or ``ValueError`` saying what is missing."""
    if parts.header is None:
        raise ValueError(
            f"{name}: the server span, which carries the cassette document, is missing"
        )
    span_count, call_count = parts.counts
    if sorted(parts.spans) != list(range(span_count)) or sorted(parts.calls) != list(
        range(call_count)
    ):
        raise ValueError(
            f"{name}: incomplete cassette, {len(parts.spans)} of {span_count} spans "
            f"and {len(parts.calls)} of {call_count} calls found"
        )
    spans = [
        _span_dict(span, attributes, parts.origin)
        for span, attributes in (parts.spans[i] for i in range(span_count))
    ]
    return {**parts.header, "calls": [parts.calls[i] for i in range(call_count)], "spans": spans}


def from_lines(lines: Iterable[tuple[str, bytes]], limits: ReadLimits) -> Imported:
    """The cassettes in OTLP JSON ``lines`` (each ``(where, line)``, ``where`` naming it in problems),
    each line and the JSON in its attributes read within ``limits``.

    Spans of one cassette may come in any order, on any lines; spans that carry no
    cassette are ignored; a span seen twice (a file imported twice) counts once.
    """
    imported = Imported()
    found: dict[tuple[bytes, str], _Parts] = {}
    for request in _requests(lines, imported, limits):
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    imported.spans_seen += 1
                    attributes = _attributes(span.attributes)
                    if _ROOT not in attributes or _INDEX not in attributes:
                        continue  # not a span of a cassette
                    try:
                        _collect(
                            found.setdefault((span.trace_id, attributes[_ROOT]), _Parts()),
                            span,
                            attributes,
                            limits,
                        )
                    except (ValueError, TypeError, KeyError) as exc:
                        imported.problems.append(
                            f"span {span.span_id.hex()}: unusable {PREFIX}* attributes ({exc})"
                        )
    for (trace_id, root), parts in found.items():
        try:
            imported.cassettes.append(
                _assemble(f"trace {trace_id.hex()} server span {root}", parts)
            )
        except ValueError as exc:
            imported.problems.append(str(exc))
    return imported
