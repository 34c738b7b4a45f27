"""What goes to an OpenTelemetry collector: the same spans, redacted as cassettes are.

Attributes in the ``timetracer.`` namespace carry payloads (bodies, query results); they
leave only with ``export_payloads``. Spans are sent by a ``BatchSpanProcessor``: a bounded
queue (``OTEL_BSP_MAX_QUEUE_SIZE``) drained by one background thread, so a slow or
unreachable collector never delays a request. When the queue is full the SDK drops the
oldest spans; failed exports are counted (``otlp.failed``) and logged, rate-limited.
"""

from __future__ import annotations

from typing import Any, Sequence

from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Status

from timetracer_otel import _span_secrets
from timetracer_otel._diagnostics import counters, errors, report_failure
from timetracer_otel._own_io import own_io
from timetracer_otel.config import TraceConfig
from timetracer_otel.redaction import redactor_for
from timetracer_otel.secret_values import ValueScrubber

__all__ = ["PAYLOAD_PREFIX", "RedactingSpanExporter", "redacting_processor", "otlp_span_processor"]

PAYLOAD_PREFIX = "timetracer."


class RedactingSpanExporter(SpanExporter):
    """Hands ``exporter`` copies of the spans with secrets redacted and payload attributes removed."""

    def __init__(self, exporter: SpanExporter, config: TraceConfig) -> None:
        self._exporter = exporter
        self._keep_payloads = config.export_payloads
        self._redactor = redactor_for(config)
        _span_secrets.start_exporting()
        # The OTLP exporters keep their URL in `_endpoint`; any other exporter is named by its class.
        self._target = getattr(exporter, "_endpoint", None) or type(exporter).__name__

    def _attributes(self, attributes: Any, values: ValueScrubber) -> dict[str, Any]:
        kept = {k: v for k, v in (attributes or {}).items() if self._keep_payloads or not k.startswith(PAYLOAD_PREFIX)}
        if self._redactor is not None:
            self._redactor.attributes(kept)
            kept = values.value(kept)
        return kept

    def _clean(self, span: ReadableSpan) -> ReadableSpan:
        description = span.status.description
        # The values the request's spans may quote (its credentials, what capture took out), and any
        # bearer token or JWT in the text itself: never sealed here, a collector has no key.
        secrets = _span_secrets.secrets_of(span.context.span_id, span.context.trace_id) if self._redactor is not None else ()
        values = ValueScrubber(secrets, shapes=self._redactor is not None)
        if self._redactor is not None and description:
            description = values.text(self._redactor.free_text(description))
        return ReadableSpan(
            name=span.name,
            context=span.context,
            parent=span.parent,
            resource=span.resource,
            attributes=self._attributes(span.attributes, values),
            events=[Event(e.name, self._attributes(e.attributes, values), e.timestamp) for e in span.events],
            links=span.links,
            kind=span.kind,
            status=Status(span.status.status_code, description),
            start_time=span.start_time,
            end_time=span.end_time,
            instrumentation_scope=span.instrumentation_scope,
        )

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            cleaned = [self._clean(span) for span in spans]
        except Exception as exc:  # noqa: BLE001 - a span we cannot redact is never sent as it is
            report_failure("otlp.redact", exc)
            return SpanExportResult.FAILURE
        with own_io():  # a replaying process must still let its own export out
            result = self._exporter.export(cleaned)
        if result is SpanExportResult.SUCCESS:
            counters.add("otlp.exported", len(spans))
        else:
            counters.add("otlp.failed", len(spans))
            errors.error("otlp", f"OTLP export of {len(spans)} span(s) to {self._target} failed; they are dropped")
        return result

    def shutdown(self) -> None:
        self._exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
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
        raise ImportError(f"OTLP export needs {exc.name}: pip install 'timetracer-otel[otlp]'") from exc
    return redacting_processor(OTLPSpanExporter(endpoint=config.otlp_endpoint), config)
