"""Cassette exporter throughput (spans per second) on a normal and on a slow disk, and what is dropped.

    .venv/bin/python bench/exporter.py [--seconds 5] [--disk-delays-ms 0,2,20]

Each configuration runs in a fresh process: a real ``TracerProvider`` with timetracer's
``CassetteSpanProcessor`` and writer, fed by requests built the way the ASGI layer
builds them (a server span, an httpx client span and a SQL span, with their payloads:
three spans per cassette). A slow disk is simulated by making every cassette file
written wait the given delay first, like a slow network volume (``bench/sitecustomize.py``,
which the writer process imports too). Three loads:

- ``capacity``: 3,000 finished recordings queued at once; the writer alone writes them;
- ``1000``: requests made at 1,000 per second in the same process, default queue;
- ``max``: requests made back to back by one thread, as fast as it can hand them over.

Reported: spans written per second, cassettes dropped because the queue was full, the
writer thread's CPU per cassette, and the time each request spent in the producer (the
request path: it must not grow with the disk's slowness).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from _proc import children_cpu, thread_cpu

SPANS_PER_CASSETTE = 3
_ITEM = json.dumps({"id": 42, "name": "widget", "tags": ["a", "b"], "price": 9.5}).encode()


def _writer_cpu_seconds() -> float:
    """CPU time of the writer: this process's child processes, and its threads other than the main one."""
    threads = sum(sum(cpu) for tid, cpu in thread_cpu(os.getpid()).items() if tid != os.getpid())
    return threads + sum(sum(cpu) for cpu in children_cpu(os.getpid()).values())


def _producer(processor: Any) -> Callable[[], None]:
    """A function that makes one request's spans and payloads, as the ASGI layer would, through ``processor``."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import SpanKind

    from timetracer_otel._recording import (
        HttpCall,
        ProtocolCall,
        TraceRecording,
        activate,
        deactivate,
    )
    from timetracer_otel.cassette.body import BodySink
    from timetracer_otel.config import TraceConfig

    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("bench")
    config = TraceConfig(
        mode="record", cassette_dir=tempfile.mkdtemp(prefix="timetracer-bench-exporter-")
    )
    limit = config.max_body_bytes

    def one_request() -> None:
        with tracer.start_as_current_span("GET /dep", kind=SpanKind.SERVER) as root:
            context = root.get_span_context()
            recording = TraceRecording(config, trace_id=context.trace_id, root_span_id=context.span_id, method="GET",
                                       path="/dep", query="", headers=[("host", "bench"), ("accept", "*/*")], service="bench")  # fmt: skip
            recording.route = "/dep"
            processor.begin(recording)
            token = activate(recording)
            try:
                with tracer.start_as_current_span("GET", kind=SpanKind.CLIENT) as span:
                    span.set_attributes(
                        {
                            "http.request.method": "GET",
                            "url.full": "http://upstream/item?id=42",
                            "http.response.status_code": 200,
                        }
                    )
                    call = HttpCall(
                        "httpx",
                        "GET",
                        "http://upstream/item?id=42",
                        [("accept", "*/*")],
                        BodySink(limit, complete=True),
                    )
                    recording.add_call(call)
                    call.status, call.response_headers = 200, [("content-type", "application/json")]
                    call.response_body = BodySink(limit, _ITEM, complete=True)
                with tracer.start_as_current_span("SELECT", kind=SpanKind.CLIENT) as span:
                    span.set_attributes(
                        {
                            "db.system": "sqlite",
                            "db.statement": "SELECT name, price FROM items WHERE id = ?",
                        }
                    )
                    request = {
                        "operation": "execute",
                        "dialect": "sqlite+pysqlite",
                        "statement": "SELECT name, price FROM items WHERE id = ?",
                        "parameters": (42,),
                    }
                    response = {
                        "description": [["name", None, None, None, None, None, None]],
                        "rowcount": -1,
                        "lastrowid": 0,
                        "rows": [["item-42", 52.5]],
                    }
                    recording.add_call(
                        ProtocolCall("sql", "sqlalchemy", request, response=response)
                    )
                recording.status, recording.response_headers = (
                    200,
                    [("content-type", "application/json")],
                )
                recording.response_body.feed(_ITEM)
                recording.response_body.finish()
            finally:
                deactivate(token)

    return one_request


class _Collector:
    """Stands in for the writer while the recordings of the capacity run are made: keeps them."""

    def __init__(self) -> None:
        self.recordings: list[Any] = []

    def submit(self, recording: Any) -> bool:
        self.recordings.append(recording)
        return True

    def flush(self, timeout: float | None = None) -> bool:
        return True


def _counted(name: str) -> int:
    import timetracer_otel

    return timetracer_otel.stats().get(name, 0)


def _capacity(seconds: float, count: int = 3000) -> dict[str, Any]:
    """The writer alone: ``count`` finished recordings queued at once, written while nothing else runs."""
    from timetracer_otel.exporters import CassetteSpanProcessor, ProcessWriter

    collector = _Collector()
    one_request = _producer(CassetteSpanProcessor(writer=collector))  # type: ignore[arg-type]
    for _ in range(count):
        one_request()
    writer = ProcessWriter(max_pending_bytes=1 << 30)
    before = _counted("recorded")
    started = time.perf_counter()
    for recording in collector.recordings:
        writer.submit(recording)
    writer.flush(seconds)
    elapsed = time.perf_counter() - started
    written = _counted("recorded") - before
    return {
        "requests": count,
        "cassettes_written": written,
        "dropped_queue_full": 0,
        "spans_per_second": written * SPANS_PER_CASSETTE / elapsed,
    }


def _under_load(seconds: float, rate: float | None) -> dict[str, Any]:
    """Requests made for ``seconds`` at ``rate`` per second (None: back to back) with the default writer."""
    from timetracer_otel.exporters import CassetteSpanProcessor

    processor = CassetteSpanProcessor()
    one_request = _producer(processor)
    one_request()  # starts the writer process
    assert processor.force_flush(30_000)
    before = {name: _counted(name) for name in ("recorded", "dropped.queue_full")}
    cpu_before = _writer_cpu_seconds()
    durations: list[float] = []
    started = time.perf_counter()
    deadline = started + seconds
    while (now := time.perf_counter()) < deadline:
        if rate is not None and now < started + len(durations) / rate:
            time.sleep(started + len(durations) / rate - now)
            continue
        one_request()
        durations.append((time.perf_counter() - now) * 1e6)
    written = _counted("recorded") - before["recorded"]
    return {
        "requests": len(durations),
        "cassettes_written": written,
        "dropped_queue_full": _counted("dropped.queue_full") - before["dropped.queue_full"],
        "spans_per_second": written * SPANS_PER_CASSETTE / seconds,
        "writer_cpu_ms_per_cassette": (_writer_cpu_seconds() - cpu_before) * 1000 / max(written, 1),
        "request_median_us": statistics.median(durations),
        "request_p99_us": sorted(durations)[int(len(durations) * 0.99)],
        "request_max_us": max(durations),
    }


def _run(delay_ms: float, load: str, seconds: float) -> dict[str, Any]:
    """One configuration, in this (fresh) process: ``load`` is ``capacity``, ``max`` or a rate per second."""
    if load == "capacity":
        result = _capacity(seconds)
    else:
        result = _under_load(seconds, None if load == "max" else float(load))
    return {"disk_delay_ms": delay_ms, "load": load, **result}


LOADS = ("capacity", "1000", "max")


def measure(seconds: float, delays_ms: list[float]) -> list[dict[str, Any]]:
    """One fresh process per (disk delay, load); their results."""
    results = []
    for delay in delays_ms:
        for load in LOADS:
            command = [
                sys.executable,
                __file__,
                "--child",
                str(delay),
                load,
                "--seconds",
                str(seconds),
            ]
            # read by bench/sitecustomize.py, also in the writer process
            env = {
                **os.environ,
                "BENCH_DISK_DELAY_MS": str(delay),
            }
            result = subprocess.run(
                command,
                check=True,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                env=env,
            )
            results.append(json.loads(result.stdout))  # the cassette log lines went to stderr
    return results


def report(results: list[dict[str, Any]]) -> list[str]:
    lines = [
        "disk delay   load (req/s)  requests  written  dropped  spans/s  writer CPU ms/cassette  request µs: median   p99    max"
    ]
    for r in results:
        line = (
            f"{r['disk_delay_ms']:>8.0f} ms  {r['load']:>12} {r['requests']:>9,} {r['cassettes_written']:>8,} {r['dropped_queue_full']:>8,}"
            f" {r['spans_per_second']:>8,.0f}"
        )
        if "request_median_us" in r:
            line += (
                f"  {r['writer_cpu_ms_per_cassette']:>22.2f}  {r['request_median_us']:>17.0f}"
                f" {r['request_p99_us']:>5.0f} {r['request_max_us']:>6.0f}"
            )
        lines.append(line)
    return lines


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument(
        "--disk-delays-ms", default="0,2,20", help="comma-separated; 0 is the disk as it is"
    )
    p.add_argument("--child", nargs=2, metavar=("DELAY_MS", "LOAD"), help=argparse.SUPPRESS)
    return p


def main() -> None:
    args = parser().parse_args()
    if args.child is not None:
        print(json.dumps(_run(float(args.child[0]), args.child[1], args.seconds)))
        return
    print(
        "\n".join(report(measure(args.seconds, [float(d) for d in args.disk_delays_ms.split(",")])))
    )


if __name__ == "__main__":
    main()
