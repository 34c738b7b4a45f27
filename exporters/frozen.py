"""A finished recording as plain data: what the cassette builder reads, cheap to copy to another process.

:func:`freeze` runs where the recording finishes (usually on the request path), so it only
copies: spans become tuples, bodies bytes, protocol values their typed-JSON form (the
writer process cannot import the application's types). Building the document, redaction,
serialising and writing happen later, wherever the writer runs.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from opentelemetry.sdk.trace import ReadableSpan

from timetracer_otel._recording import Headers, HttpCall, TraceRecording
from timetracer_otel.cassette.body import BodySink
from timetracer_otel.cassette.values import encode_value

__all__ = [
    "FrozenBody",
    "FrozenHttpCall",
    "FrozenProtocolCall",
    "FrozenSpan",
    "FrozenRecording",
    "freeze",
]


class FrozenBody(NamedTuple):
    data: bytes
    size: int
    truncated: bool
    complete: bool


class FrozenHttpCall(NamedTuple):
    library: str
    method: str
    url: str
    request_headers: Headers
    request_body: FrozenBody | None
    started_ns: int
    span_id: int
    status: int | None
    response_headers: Headers | None
    response_body: FrozenBody | None
    response_decoded: bool
    error: dict[str, str] | None


class FrozenProtocolCall(NamedTuple):
    protocol: str
    library: str
    request: Any  # encoded with cassette.values.encode_value
    started_ns: int
    span_id: int
    response: Any  # encoded, or None
    error: dict[str, str] | None


class FrozenSpan(NamedTuple):
    span_id: int
    parent_id: int | None
    name: str
    kind: str
    start_ns: int | None
    end_ns: int | None
    status_code: str
    status_description: str | None
    attributes: dict[str, Any]
    events: tuple[tuple[str, int, dict[str, Any]], ...]


class FrozenRecording(NamedTuple):
    serial: int  # a rewrite for late spans has the serial of the first write
    trace_id: int
    root_span_id: int
    fixed_path: str | None
    service: str
    started_ns: int
    method: str
    path: str
    route: str | None
    query: str
    headers: Headers
    request_body: FrozenBody | None
    status: int | None
    response_headers: Headers | None
    response_body: FrozenBody | None
    error: dict[str, str] | None
    calls: tuple[Any, ...]  # FrozenHttpCall | FrozenProtocolCall
    spans: tuple[FrozenSpan, ...]
    # the clock, UUID and random values drawn, as the cassette stores them
    draws: tuple[dict[str, Any], ...]
    scope: str  # "request", or "process": the calls made outside every request
    dropped_calls: int  # calls not kept (a process recording is bounded)


def _body(sink: BodySink | None) -> FrozenBody | None:
    return None if sink is None else FrozenBody(sink.data, sink.size, sink.truncated, sink.complete)


def _call(call: Any) -> Any:
    if isinstance(call, HttpCall):
        return FrozenHttpCall(
            call.library, call.method, call.url, call.request_headers, _body(call.request_body), call.started_ns,
            call.span_id, call.status, call.response_headers, _body(call.response_body), call.response_decoded, call.error,
        )  # fmt: skip
    return FrozenProtocolCall(
        call.protocol, call.library, encode_value(call.request), call.started_ns, call.span_id,
        None if call.response is None else encode_value(call.response), call.error,
    )  # fmt: skip


def _span(span: ReadableSpan) -> FrozenSpan:
    parent = span.parent
    return FrozenSpan(
        span.context.span_id,
        parent.span_id if parent is not None else None,
        span.name,
        span.kind.name,
        span.start_time,
        span.end_time,
        span.status.status_code.name,
        span.status.description,
        dict(span.attributes or {}),
        tuple((event.name, event.timestamp, dict(event.attributes or {})) for event in span.events),
    )


def freeze(recording: TraceRecording) -> FrozenRecording:
    """A copy of ``recording`` as it is now (its bodies are sealed: nothing changes them any more)."""
    calls, spans = recording.snapshot()
    return FrozenRecording(
        recording.serial,
        recording.trace_id,
        recording.root_span_id,
        recording.fixed_path,
        recording.service,
        recording.started_ns,
        recording.method,
        recording.path,
        recording.route,
        recording.query,
        recording.headers,
        _body(recording.request_body),
        recording.status,
        recording.response_headers,
        _body(recording.response_body),
        recording.error,
        tuple(_call(c) for c in calls),
        tuple(_span(s) for s in spans),
        tuple(recording.draws.encoded()) if recording.draws is not None else (),
        recording.scope,
        recording.dropped_calls,
    )
