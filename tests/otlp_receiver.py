"""A loopback OTLP/HTTP collector for tests: decodes each ``ExportTraceServiceRequest`` with opentelemetry-proto.

It keeps the raw request bodies (to search for secrets) and the decoded spans. ``hold``
makes it keep each export waiting until the test sets the event; ``entered`` is set when
an export has arrived.
"""

from __future__ import annotations

import contextlib
import gzip
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.sdk.trace import SpanProcessor

from timetracer_otel import _tracing
from timetracer_otel._tracing import otlp_processor, tracer_provider
from timetracer_otel.config import TraceConfig


@dataclass
class ReceivedSpan:
    trace_id: str
    span_id: str
    name: str
    service: str
    attributes: dict[str, Any]


@dataclass
class Receiver:
    url: str = ""
    bodies: list[bytes] = field(default_factory=list)
    spans: list[ReceivedSpan] = field(default_factory=list)
    hold: threading.Event | None = None
    entered: threading.Event = field(default_factory=threading.Event)

    def trace(self, trace_id: str) -> list[ReceivedSpan]:
        return [span for span in self.spans if span.trace_id == trace_id]


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return {item.key: _value(item.value) for item in value.kvlist_value.values}
    return getattr(value, kind) if kind else None


def _spans(request: ExportTraceServiceRequest) -> list[ReceivedSpan]:
    found = []
    for resource_spans in request.resource_spans:
        resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                found.append(
                    ReceivedSpan(
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        name=span.name,
                        service=resource.get("service.name", ""),
                        attributes={a.key: _value(a.value) for a in span.attributes},
                    )
                )
    return found


def _handler(state: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            state.entered.set()
            if state.hold is not None:
                state.hold.wait(10)
            spans = _spans(ExportTraceServiceRequest.FromString(body))
            state.bodies.append(body)
            state.spans.extend(spans)
            reply = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

    return Handler


@contextlib.contextmanager
def running_receiver(hold: threading.Event | None = None) -> Iterator[Receiver]:
    """A collector on 127.0.0.1 for the block; ``url`` is its base address (``/v1/traces`` is the path)."""
    state = Receiver(hold=hold)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        if hold is not None:
            hold.set()
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def exporting_to_receiver() -> Iterator[tuple[Receiver, SpanProcessor]]:
    """A collector on loopback and the process's processor exporting to it (the one
    ``auto_setup`` finds for that endpoint), shut down after the block and forgotten: a later
    collector given the same port gets a processor of its own, not this one, which sends nothing."""
    provider = tracer_provider()
    with running_receiver() as receiver:
        processor = otlp_processor(provider, TraceConfig(mode="record", otlp_endpoint=receiver.url))
        try:
            yield receiver, processor
        finally:
            processor.shutdown()
            _tracing._exporting[provider].pop(receiver.url, None)
