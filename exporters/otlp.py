"""What goes to an OpenTelemetry collector: the same spans, redacted as cassettes are.

Attributes in the ``timetracer.`` namespace carry payloads (bodies, query results); they
leave only with ``export_payloads``. Spans are sent by a ``BatchSpanProcessor``: a bounded
queue (``OTEL_BSP_MAX_QUEUE_SIZE``) drained by one background thread, so a slow or
unreachable collector never delays a request. When the queue is full the SDK drops the
oldest spans; failed exports are counted (``otlp.failed``) and logged, rate-limited.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Status

from timetracer_otel import _span_secrets
from timetracer_otel._diagnostics import counters, errors, report_failure
from timetracer_otel._own_io import own_io
from timetracer_otel._recording import TraceRecording
from timetracer_otel.config import TraceConfig
from timetracer_otel.redaction import Redactor, redactor_for
from timetracer_otel.secret_values import ValueScrubber, shaped_secrets, usable

from .builder import attribute_value, build_document
from .files import given_secrets
from .frozen import freeze, thaw

__all__ = [
    "PAYLOAD_PREFIX",
    "RedactingSpanExporter",
    "redacting_processor",
    "otlp_span_processor",
    "secret_values",
]

PAYLOAD_PREFIX = "timetracer."
_HOLD_SECONDS = 60.0  # a request running longer has its spans sent with the values known so far
_MAX_HELD_SPANS = 20_000  # beyond this, held spans are sent with the values known so far
_REMEMBERED_TRACES = 4096  # the values of traces released lately: a late span of theirs gets them


class _Trace:
    """The spans of one trace held until its recordings' requests are over."""

    def __init__(self, since: float) -> None:
        self.since = since
        self.spans: list[ReadableSpan] = []
        self.roots_seen: set[int] = set()


def secret_values(recording: TraceRecording, redactor: Redactor) -> frozenset[str]:
    """What redaction takes out of ``recording``'s cassette, wherever it stands (see
    :meth:`Redactor.secret_values`), and the secrets it was given."""
    frozen = thaw(freeze(recording))
    doc = build_document(frozen, recording.config.max_body_bytes)
    given = given_secrets(frozen, doc)  # before redaction hides what they are found beside
    return redactor.secret_values(doc) | usable(given)


class RedactingSpanExporter(SpanExporter):
    """Hands ``exporter`` copies of the spans with secrets redacted and payload attributes removed.

    Redacted by name, by shape, and by value: each value redaction takes out of a recorded
    request's cassette (its credentials, a password hash in an SQL row, a Redis password) is
    hidden in every span of its trace. Those spans are held here until the request's server
    span arrives (the request is over: every call it made is known), at most
    ``_HOLD_SECONDS``; then the values are found in the recording, in this thread.
    """

    def __init__(self, exporter: SpanExporter, config: TraceConfig) -> None:
        self._exporter = exporter
        self._keep_payloads = config.export_payloads
        self._redactor = redactor_for(config)
        self._lock = threading.Lock()
        self._held: OrderedDict[int, _Trace] = OrderedDict()
        self._held_spans = 0
        # of released traces, for their late spans
        self._values: OrderedDict[int, frozenset[str]] = OrderedDict()
        self._watched = _span_secrets.start_watching() if self._redactor is not None else None
        # The OTLP exporters keep their URL in `_endpoint`; any other exporter is named by its class.
        self._target = getattr(exporter, "_endpoint", None) or type(exporter).__name__

    def _attributes(self, attributes: Any, values: ValueScrubber) -> dict[str, Any]:
        kept = {
            k: v
            for k, v in (attributes or {}).items()
            if self._keep_payloads or not k.startswith(PAYLOAD_PREFIX)
        }
        if self._redactor is not None:
            # bytes (psycopg2's statements) as the text redaction reads
            kept = {k: attribute_value(v) for k, v in kept.items()}
            self._redactor.attributes(kept)
            kept = values.value(kept)
        return kept

    def _clean(self, span: ReadableSpan, values: ValueScrubber) -> ReadableSpan:
        description = span.status.description
        if self._redactor is not None and description:
            description = values.text(self._redactor.free_text(description))
        return ReadableSpan(
            name=span.name,
            context=span.context,
            parent=span.parent,
            resource=span.resource,
            attributes=self._attributes(span.attributes, values),
            events=[
                Event(e.name, self._attributes(e.attributes, values), e.timestamp)
                for e in span.events
            ],
            links=span.links,
            kind=span.kind,
            status=Status(span.status.status_code, description),
            start_time=span.start_time,
            end_time=span.end_time,
            instrumentation_scope=span.instrumentation_scope,
        )

    def _ready(
        self, spans: Sequence[ReadableSpan], everything: bool = False
    ) -> list[tuple[ReadableSpan, frozenset[str]]]:
        """The spans that may leave now, each with the secret values of its trace; the others are held."""
        ready: list[tuple[ReadableSpan, frozenset[str]]] = []
        now = time.monotonic()
        with self._lock:
            for span in spans:
                trace_id = span.context.trace_id
                recordings = self._watched.of(trace_id) if self._watched is not None else ()
                if not recordings and trace_id not in self._held:
                    ready.append((span, self._values.get(trace_id, frozenset())))
                    continue
                held = self._held.get(trace_id) or self._held.setdefault(trace_id, _Trace(now))
                held.spans.append(span)
                held.roots_seen.update(
                    r.root_span_id for r in recordings if r.root_span_id == span.context.span_id
                )
                self._held_spans += 1
            for trace_id, held in list(self._held.items()):
                recordings = self._watched.of(trace_id) if self._watched is not None else ()
                over = held.roots_seen >= {r.root_span_id for r in recordings}
                if (
                    over
                    or everything
                    or now - held.since > _HOLD_SECONDS
                    or self._held_spans > _MAX_HELD_SPANS
                ):
                    ready += self._release(trace_id, held, recordings)
        return ready

    def _release(
        self, trace_id: int, held: _Trace, recordings: Sequence[TraceRecording]
    ) -> list[tuple[ReadableSpan, frozenset[str]]]:
        """The held spans of ``trace_id`` with its secret values; none when its recordings were
        evicted (too many pending traces): what they must hide is unknown, so they are dropped."""
        del self._held[trace_id]
        self._held_spans -= len(held.spans)
        if not recordings or self._redactor is None or self._watched is None:
            counters.add("otlp.dropped_unknown", len(held.spans))
            errors.error(
                "otlp_unknown",
                "too many requests pending export; spans whose secrets are unknown are dropped",
            )
            return []
        values = frozenset().union(*(secret_values(r, self._redactor) for r in recordings))
        self._values[trace_id] = values
        while len(self._values) > _REMEMBERED_TRACES:
            self._values.popitem(last=False)
        self._watched.forget(trace_id)
        return [(span, values) for span in held.spans]

    def _export(self, spans: Sequence[ReadableSpan], everything: bool = False) -> SpanExportResult:
        try:
            ready = self._ready(spans, everything)
            # Never sealed here: a collector has no key; bearer tokens and JWTs in the text go too.
            cleaned = [
                self._clean(
                    span,
                    ValueScrubber(
                        values, shapes=shaped_secrets if self._redactor is not None else None
                    ),
                )
                for span, values in ready
            ]
        except Exception as exc:  # noqa: BLE001 - a span we cannot redact is never sent as it is
            report_failure("otlp.redact", exc)
            return SpanExportResult.FAILURE
        if not cleaned:
            return SpanExportResult.SUCCESS
        with own_io():  # a replaying process must still let its own export out
            result = self._exporter.export(cleaned)
        if result is SpanExportResult.SUCCESS:
            counters.add("otlp.exported", len(cleaned))
        else:
            counters.add("otlp.failed", len(cleaned))
            errors.error(
                "otlp",
                f"OTLP export of {len(cleaned)} span(s) to {self._target} failed; they are dropped",
            )
        return result

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self._export(spans)

    def shutdown(self) -> None:
        self._export((), everything=True)
        if self._watched is not None:
            _span_secrets.stop_watching(self._watched)
        self._exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Send the spans still held too (a request still running: with the values known so far)."""
        self._export((), everything=True)
        return self._exporter.force_flush(timeout_millis)


def redacting_processor(exporter: SpanExporter, config: TraceConfig) -> BatchSpanProcessor:
    """A batch processor sending spans to ``exporter`` through :class:`RedactingSpanExporter`."""
    return BatchSpanProcessor(RedactingSpanExporter(exporter, config))


def otlp_span_processor(config: TraceConfig) -> BatchSpanProcessor:
    """The processor exporting to ``config.otlp_endpoint`` over OTLP/HTTP (the ``otlp`` extra).

    Headers, timeout, compression and certificates come from the standard
    ``OTEL_EXPORTER_OTLP_*`` variables, as for any OTLP exporter.
    """
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError as exc:
        raise ImportError(
            f"OTLP export needs {exc.name}: pip install 'timetracer-otel[otlp]'"
        ) from exc
    return redacting_processor(OTLPSpanExporter(endpoint=config.otlp_endpoint), config)
