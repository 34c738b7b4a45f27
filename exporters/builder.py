"""Turn a finished :class:`TraceRecording` into a cassette document (format version 1)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from timetracer_otel import _time_zone as time_zone
from timetracer_otel.cassette.body import encode_body, header_value
from timetracer_otel.cassette.calls import call_document
from timetracer_otel.cassette.document import (
    InboundRequest,
    InboundResponse,
    process_document,
    request_document,
)
from timetracer_otel.cassette.values import Encoded, encode_value
from timetracer_otel.determinism.state import encode_draws

from .frozen import FrozenBody, FrozenHttpCall, FrozenProtocolCall, FrozenRecording, FrozenSpan

__all__ = ["attribute_value", "build_document", "cassette_id"]


def cassette_id(root_span_id: int) -> str:
    """The short id shown on the console and in the file name: the request's server span id, last 8 hex digits.

    Not the trace id: requests that share one incoming ``traceparent`` are distinct cassettes.
    """
    return f"{root_span_id & 0xFFFFFFFF:08x}"


def _ms(nanoseconds: int) -> float:
    return round(nanoseconds / 1e6, 3)


def _headers(pairs: list[tuple[str, str]] | None) -> list[list[str]] | None:
    return None if pairs is None else [[k, v] for k, v in pairs]


def _declares_body(headers: list | None) -> bool:
    length = header_value(headers or [], "content-length")
    return bool(header_value(headers or [], "transfer-encoding")) or (
        length is not None and length.strip() != "0"
    )


def _body(
    sink: FrozenBody | None, headers: list | None, limit: int, decoded: bool = False
) -> dict | None:
    """The cassette body; ``complete: false`` when the body was not read to its end."""
    if sink is None:
        return None
    body = encode_body(
        sink.data,
        size=sink.size,
        truncated=sink.truncated,
        content_encoding=header_value(headers or [], "content-encoding"),
        decoded=decoded,
        limit=limit,
    )
    if not sink.complete and (sink.size or _declares_body(headers)):
        body["complete"] = False
    return body


def _http_call(call: FrozenHttpCall, origin_ns: int, limit: int) -> dict[str, Any]:
    request = {
        "method": call.method,
        "url": call.url,
        "headers": _headers(call.request_headers),
        "body": _body(call.request_body, call.request_headers, limit),
    }
    response = None
    if call.status is not None:
        response = {
            "status": call.status,
            "headers": _headers(call.response_headers),
            "body": _body(
                call.response_body, call.response_headers, limit, decoded=call.response_decoded
            ),
        }
    return call_document(
        "http",
        request,
        response,
        call.error,
        library=call.library,
        span_id=call.span_id,
        start_offset_ms=_ms(call.started_ns - origin_ns),
    )


def _protocol_call(call: FrozenProtocolCall, origin_ns: int) -> dict[str, Any]:
    return call_document(
        call.protocol,
        encode_value(call.request),
        encode_value(call.response),
        call.error,
        library=call.library,
        span_id=call.span_id,
        start_offset_ms=_ms(call.started_ns - origin_ns),
    )


def _call(call: Any, origin_ns: int, limit: int) -> dict[str, Any]:
    return (
        _http_call(call, origin_ns, limit)
        if isinstance(call, FrozenHttpCall)
        else _protocol_call(call, origin_ns)
    )


def _attributes(attributes: dict[str, Any]) -> dict[str, Any]:
    return {k: attribute_value(v) for k, v in attributes.items()}


def attribute_value(value: Any) -> Any:
    """A span or event attribute as the cassette holds it: a sequence (a tuple in the SDK) as a
    list, a value of the app's own type that OpenTelemetry takes (a ``str`` enum: Prefect's state
    type) as the plain value it stands for, bytes as text (OpenTelemetry's psycopg2 statement
    of ``execute_values``), which redaction reads."""
    if type(value) is tuple or type(value) is list:
        return [attribute_value(item) for item in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value.value if isinstance(value, Encoded) else value


def _span(span: FrozenSpan, origin_ns: int) -> dict[str, Any]:
    start = span.start_ns or origin_ns
    end = span.end_ns or start
    return {
        "span_id": f"{span.span_id:016x}",
        "parent_id": f"{span.parent_id:016x}" if span.parent_id is not None else None,
        "name": span.name,
        "kind": span.kind,
        "start_offset_ms": _ms(start - origin_ns),
        "duration_ms": _ms(end - start),
        "start_time_unix_nano": start,
        "end_time_unix_nano": end,
        "status": {"code": span.status_code, "description": span.status_description},
        "attributes": _attributes(span.attributes),
        "events": [
            {
                "name": name,
                "offset_ms": _ms(timestamp - origin_ns),
                "attributes": _attributes(attributes),
            }
            for name, timestamp, attributes in span.events
        ],
    }


def _recorded_at(nanoseconds: int) -> str:
    return (
        datetime.fromtimestamp(nanoseconds / 1e9, tz=timezone.utc)
        .isoformat()
        .replace("+00:00", "Z")
    )


def _call_order(recording: FrozenRecording) -> list[int]:
    """The recording's numbers of its calls (their order of arrival) in the order they started:
    the cassette's order."""
    calls = recording.calls
    return sorted(range(len(calls)), key=lambda number: calls[number].started_ns)


def _process_document(recording: FrozenRecording, limit: int) -> dict[str, Any]:
    """The process cassette: the calls made outside every request, offsets from the recording's start."""
    order = _call_order(recording)
    return process_document(
        cassette_id=cassette_id(recording.root_span_id),
        recorded_at=_recorded_at(recording.started_ns),
        service=recording.service,
        calls=[_call(recording.calls[n], recording.started_ns, limit) for n in order],
        dropped_calls=recording.dropped_calls,
        draws=encode_draws(recording.draws, order),
        time_zone=time_zone.current(),  # the app's: this process holds its environment
    )


def build_document(recording: FrozenRecording, limit: int) -> dict[str, Any]:
    """The cassette document for ``recording`` (not yet redacted); ``limit``: the config's ``max_body_bytes``."""
    if recording.scope == "process":
        return _process_document(recording, limit)
    spans = sorted(recording.spans, key=lambda s: s.start_ns or 0)
    order = _call_order(recording)
    root = next((s for s in spans if s.span_id == recording.root_span_id), None)
    origin = root.start_ns if root is not None and root.start_ns else recording.started_ns
    end = (
        root.end_ns
        if root is not None and root.end_ns
        else max((s.end_ns or 0 for s in spans), default=origin)
    )
    return request_document(
        cassette_id=cassette_id(recording.root_span_id),
        trace_id=f"{recording.trace_id:032x}",
        recorded_at=_recorded_at(origin),
        service=recording.service,
        duration_ms=_ms(max(end - origin, 0)),
        request=InboundRequest(
            method=recording.method,
            path=recording.path,
            route=recording.route,
            query=recording.query,
            headers=_headers(recording.headers) or [],
            body=_body(recording.request_body, recording.headers, limit),
            fingerprint=None,  # set once redaction knows the secrets
            server_parts=recording.server_parts,
        ),
        response=InboundResponse(
            status=recording.status if recording.status is not None else 500,
            headers=_headers(recording.response_headers) or [],
            body=_body(recording.response_body, recording.response_headers, limit),
        ),
        error=recording.error,
        calls=[_call(recording.calls[n], origin, limit) for n in order],
        draws=encode_draws(recording.draws, order),
        spans=[_span(s, origin) for s in spans],
        process=recording.process,
        time_zone=time_zone.current(),  # the app's: this process holds its environment
    )
