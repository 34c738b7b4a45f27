"""The cassette writer's cost per cassette with 0, 10 and 100 sealed values.

    .venv/bin/python bench/sealing.py [--cassettes 300]

One request is built the way the ASGI layer records it (a server span, a SQL span per
secret pair, their payloads) and frozen once; then, per cassette, the writer's work is
timed: building the document, redacting and sealing it (by name, then by value), and
serialising it. Also timed: what the OTLP exporter does per recorded request, in its own
thread of the application's process, to find the values its spans must not carry (freezing
the recording, building its document, collecting the values). Half of the sealed values are secret headers of the inbound request
(found by name), the other half the same tokens as SQL parameters (found by value). A key
is made for the run, so every secret is sealed (AES-256-GCM), as when recording with one.
"""

from __future__ import annotations

import argparse
import os
import pickle
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from timetracer_otel._keys import key_for
from timetracer_otel._recording import ProtocolCall, TraceRecording
from timetracer_otel.config import TraceConfig
from timetracer_otel.exporters.builder import build_document
from timetracer_otel.exporters.files import prepare_document, serialise
from timetracer_otel.exporters.frozen import FrozenRecording, freeze, thaw
from timetracer_otel.exporters.otlp import secret_values
from timetracer_otel.redaction import redactor_for

_TOKEN = "tok-{:04d}-4f1c9a2be07d"


def _recording(pairs: int, config: TraceConfig) -> TraceRecording:
    """A request with ``pairs`` secret headers, each token also looked up by one SQL call."""
    finished = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(finished))
    tracer = provider.get_tracer("bench")
    headers = [("host", "bench"), *((f"x-secret-{i}", _TOKEN.format(i)) for i in range(pairs))]
    with tracer.start_as_current_span("GET /me", kind=SpanKind.SERVER) as root:
        context = root.get_span_context()
        recording = TraceRecording(config, trace_id=context.trace_id, root_span_id=context.span_id, method="GET",
                                   path="/me", query="", headers=headers, service="bench")  # fmt: skip
        recording.route = "/me"
        for i in range(pairs):
            with tracer.start_as_current_span("SELECT", kind=SpanKind.CLIENT) as span:
                statement = "SELECT login FROM sessions WHERE token = ?"
                span.set_attributes({"db.system": "sqlite", "db.statement": statement})
                request = {
                    "operation": "execute",
                    "dialect": "sqlite+pysqlite",
                    "statement": statement,
                    "parameters": (_TOKEN.format(i),),
                }
                response = {
                    "description": [["login", None, None, None, None, None, None]],
                    "rowcount": -1,
                    "rows": [[f"user-{i}"]],
                }
                recording.add_call(ProtocolCall("sql", "sqlalchemy", request, response=response))
        recording.status, recording.response_headers = 200, [("content-type", "application/json")]
    for span in finished.get_finished_spans():
        recording.add_span(span)
    return recording


def _per_cassette_ms(work: Callable[[Any], Any], inputs: list[Any]) -> float:
    """The median time of ``work`` on each of ``inputs`` (redaction changes the document it is given in place)."""
    times = []
    for item in inputs:
        start = time.perf_counter()
        work(item)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def _copies(frozen: FrozenRecording, count: int) -> list[FrozenRecording]:
    """What the writer process gets for each cassette: the frozen recording, unpickled."""
    data = pickle.dumps(frozen)
    return [pickle.loads(data) for _ in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cassettes", type=int, default=300)
    args = parser.parse_args()
    key_dir = tempfile.mkdtemp(prefix="timetracer-bench-sealing-")
    config = TraceConfig(mode="record", cassette_dir=key_dir, key_file=os.path.join(key_dir, "key"),
                         redact_headers=tuple(f"x-secret-{i}" for i in range(50)))  # fmt: skip
    key_for(config, create=True)  # made now: its announcement comes before the table
    print(f"median per cassette over {args.cassettes} cassettes (ms)")
    print(
        f"{'sealed':>6}  {'build':>7}  {'redact+seal':>11}  {'serialise':>9}  {'total':>7}  {'bytes':>7}  {'export scan':>11}"
    )
    redactor = redactor_for(config)
    assert redactor is not None
    for sealed in (0, 10, 100):
        recording = _recording(sealed // 2, config)
        frozen = thaw(freeze(recording))
        doc = prepare_document(_copies(frozen, 1)[0], config)
        assert str(doc).count("[SEALED:") == sealed, "every secret sealed, once"
        build = _per_cassette_ms(
            lambda item: build_document(item, config.max_body_bytes),
            _copies(frozen, args.cassettes),
        )
        prepare = _per_cassette_ms(
            lambda item: prepare_document(item, config), _copies(frozen, args.cassettes)
        )
        write = _per_cassette_ms(serialise, [doc] * args.cassettes)
        size = len(serialise(doc))
        scan = _per_cassette_ms(
            lambda item: secret_values(item, redactor), [recording] * args.cassettes
        )
        print(
            f"{sealed:>6}  {build:>7.3f}  {prepare - build:>11.3f}  {write:>9.3f}  {prepare + write:>7.3f}  {size:>7}  {scan:>11.3f}"
        )


if __name__ == "__main__":
    main()
