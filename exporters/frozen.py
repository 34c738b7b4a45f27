"""A finished recording as plain data: what the cassette builder reads, cheap to copy to another process.

:func:`freeze` runs where the recording finishes (usually on the request path), so it only
copies, into nested plain tuples (the *wire form*): spans and calls become tuples, bodies
bytes; protocol values and draws stay the Python values captured (already copies). Plain
tuples pickle several times faster than named ones, and the pickler of
:mod:`._frames` turns any value of an application's own type into its typed-JSON form on
the way, as the writer process cannot import it. :func:`thaw` gives the wire form its
field names again; building the document (where protocol values are encoded), redaction,
serialising and writing happen there, wherever the writer runs.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from opentelemetry.sdk.trace import ReadableSpan

from timetracer_otel._recording import Headers, HttpCall, TraceRecording
from timetracer_otel.cassette.body import BodySink

__all__ = [
    "FrozenBody",
    "FrozenHttpCall",
    "FrozenProtocolCall",
    "FrozenSpan",
    "FrozenRecording",
    "Wire",
    "freeze",
    "thaw",
]

Wire = tuple  # a FrozenRecording's fields, nested records as plain tuples too


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
    request: Any  # as captured; the builder encodes it (cassette.values.encode_value)
    started_ns: int
    span_id: int
    response: Any  # as captured, or None
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
    server_parts: dict[str, Any]
    headers: Headers
    request_body: FrozenBody | None
    status: int | None
    response_headers: Headers | None
    response_body: FrozenBody | None
    error: dict[str, str] | None
    calls: tuple[Any, ...]  # FrozenHttpCall | FrozenProtocolCall
    spans: tuple[FrozenSpan, ...]
    # the clock, UUID and random values drawn: (source, kind, caller, value, the number of the
    # call its task made last)
    draws: tuple[tuple[str, str, str, Any, int | None], ...]
    scope: str  # "request", or "process": the calls made outside every request
    dropped_calls: int  # calls not kept (a process recording is bounded)
    process: str | None  # a request's: the id of its process's process cassette
    given_secrets: frozenset[str]  # see TraceRecording.given_secrets
    chosen: str  # the characters secrets.choice picked, in order (see DrawRecorder.chosen)


def _body(sink: BodySink | None) -> tuple | None:
    return None if sink is None else (sink.data, sink.size, sink.truncated, sink.complete)


def _call(call: Any) -> tuple:
    if isinstance(call, HttpCall):
        return (
            call.library, call.method, call.url, call.request_headers, _body(call.request_body), call.started_ns,
            call.span_id, call.status, call.response_headers, _body(call.response_body), call.response_decoded, call.error,
        )  # fmt: skip
    return (
        call.protocol,
        call.library,
        call.request,
        call.started_ns,
        call.span_id,
        call.response,
        call.error,
    )


def _attributes(attributes: Any) -> dict[str, Any]:
    """A plain copy. The SDK's ``BoundedAttributes`` keeps a dict, copied in one step; copying the
    mapping itself calls its Python ``__iter__`` and ``__getitem__`` for every key."""
    if not attributes:
        return {}
    inner = getattr(attributes, "_dict", None)
    return dict(inner if type(inner) is dict else attributes)


def _span(span: ReadableSpan) -> tuple:
    parent = span.parent
    status = span.status
    events = span.events
    return (  # the enums' names: their ``_name_``, not the slower ``name`` descriptor
        span.context.span_id,
        parent.span_id if parent is not None else None,
        span.name,
        span.kind._name_,
        span.start_time,
        span.end_time,
        status.status_code._name_,
        status.description,
        # the SDK's own attributes, not the read-only view ``span.attributes`` wraps them in
        _attributes(getattr(span, "_attributes", None) or span.attributes),
        tuple((event.name, event.timestamp, _attributes(event.attributes)) for event in events)
        if events
        else (),
    )


def freeze(recording: TraceRecording) -> Wire:
    """A copy of ``recording`` as it is now (its bodies are sealed: nothing changes them any more), in wire form."""
    calls, spans = recording.snapshot()
    return (
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
        recording.server_parts,
        recording.headers,
        _body(recording.request_body),
        recording.status,
        recording.response_headers,
        _body(recording.response_body),
        recording.error,
        tuple([_call(c) for c in calls]),
        tuple([_span(s) for s in spans]),
        tuple(recording.draws.draws) if recording.draws is not None else (),
        recording.scope,
        recording.dropped_calls,
        recording.process,
        recording.given_secrets,
        "".join(recording.draws.chosen) if recording.draws is not None else "",
    )


def _thawed_body(body: tuple | None) -> FrozenBody | None:
    return None if body is None else FrozenBody._make(body)


def _thawed_call(call: tuple) -> FrozenHttpCall | FrozenProtocolCall:
    if len(call) == len(FrozenProtocolCall._fields):  # an HTTP call has more fields
        return FrozenProtocolCall._make(call)
    thawed = FrozenHttpCall._make(call)
    return thawed._replace(
        request_body=_thawed_body(thawed.request_body),
        response_body=_thawed_body(thawed.response_body),
    )


def thaw(wire: Wire) -> FrozenRecording:
    """The recording :func:`freeze` copied, with its field names."""
    recording = FrozenRecording._make(wire)
    return recording._replace(
        request_body=_thawed_body(recording.request_body),
        response_body=_thawed_body(recording.response_body),
        calls=tuple(_thawed_call(c) for c in recording.calls),
        spans=tuple(FrozenSpan._make(s) for s in recording.spans),
    )
