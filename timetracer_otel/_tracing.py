"""Finding or creating the SDK TracerProvider, and attaching the cassette (and OTLP) processors once."""

from __future__ import annotations

import threading
import weakref

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

from timetracer_otel import _process_recording
from timetracer_otel.config import TraceConfig
from timetracer_otel.exporters import CassetteSpanProcessor

_lock = threading.Lock()
_processors: weakref.WeakKeyDictionary[TracerProvider, CassetteSpanProcessor] = (
    weakref.WeakKeyDictionary()
)
_exporting: weakref.WeakKeyDictionary[TracerProvider, dict[str | None, SpanProcessor]] = (
    weakref.WeakKeyDictionary()
)
_private_provider: TracerProvider | None = None


def tracer_provider(service_name: str | None = None) -> TracerProvider:
    """The application's SDK provider if it has one; otherwise one we create and make global.

    A provider the user set is never replaced. If the global provider is not an SDK
    provider (set by someone else and unusable for processors), timetracer keeps a
    private one for its own spans.
    """
    global _private_provider
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        return current
    with _lock:
        current = trace.get_tracer_provider()
        if isinstance(current, TracerProvider):
            return current
        if _private_provider is None:
            # Without TIMETRACER_SERVICE, the SDK's own rules name the service:
            # OTEL_SERVICE_NAME, then service.name in OTEL_RESOURCE_ATTRIBUTES, then "unknown_service".
            provider = TracerProvider(
                resource=Resource.create({SERVICE_NAME: service_name} if service_name else {})
            )
            trace.set_tracer_provider(provider)
            current = trace.get_tracer_provider()
            _private_provider = current if isinstance(current, TracerProvider) else provider
        return _private_provider


def cassette_processor(provider: TracerProvider) -> CassetteSpanProcessor:
    """The cassette processor of ``provider``, added to it on first use."""
    with _lock:
        processor = _processors.get(provider)
        if processor is None:
            processor = CassetteSpanProcessor()
            provider.add_span_processor(processor)
            _processors[provider] = processor
        return processor


def record_process(config: TraceConfig) -> None:
    """Record calls outside requests from now on, written by the cassette processor (only in a process started to record)."""
    if not _process_recording.wanted(config):
        return
    provider = tracer_provider(config.service_name)
    _process_recording.start(
        config, service_name(provider, config.service_name), cassette_processor(provider).writer
    )


def otlp_processor(provider: TracerProvider, config: TraceConfig) -> SpanProcessor:
    """The processor sending ``provider``'s spans to ``config.otlp_endpoint``, added on first use.

    One per endpoint: apps and middlewares sharing a provider never export a span twice.
    """
    from timetracer_otel.exporters.otlp import otlp_span_processor

    with _lock:
        per_endpoint = _exporting.setdefault(provider, {})
        processor = per_endpoint.get(config.otlp_endpoint)
        if processor is None:
            processor = per_endpoint[config.otlp_endpoint] = otlp_span_processor(config)
            provider.add_span_processor(processor)
        return processor


def service_name(provider: TracerProvider, configured: str | None) -> str:
    if configured:
        return configured
    return str(provider.resource.attributes.get(SERVICE_NAME, "unknown_service"))


def flush_processors(timeout: float | None) -> bool:
    """Flush every cassette processor; True if all finished within ``timeout`` seconds each."""
    with _lock:
        processors = list(_processors.values())
    millis = int((30.0 if timeout is None else timeout) * 1000)
    return all([p.force_flush(millis) for p in processors])
