"""Recording the outgoing calls of a block of code that is not an ASGI request (pytest).

The block gets a root span of its own; the calls made inside it, and the clock, UUID and
random values drawn in it, become a cassette written at exactly the given path, ready for
``timetracer_replay``.
"""

from __future__ import annotations

import contextlib
import importlib.util
from pathlib import Path
from typing import Iterator

from opentelemetry import trace

from . import plugins
from ._recording import TraceRecording, activate, deactivate
from ._tracing import cassette_processor, service_name, tracer_provider
from .config import TraceConfig
from .determinism import activate as activate_draws
from .determinism import deactivate as deactivate_draws
from .determinism import install as install_draw_sources


@contextlib.contextmanager
def record_block(path: Path, label: str) -> Iterator[TraceRecording]:
    """Record the calls of every installed client library made in the block to ``path``."""
    config = TraceConfig(mode="record", cassette_dir=str(path.parent))
    for name in plugins.PLUGINS:
        if importlib.util.find_spec(name) is not None:
            with contextlib.suppress(ImportError):  # the library is here, its instrumentor is not
                plugins.enable(name)
    provider = tracer_provider(config.service_name)
    processor = cassette_processor(provider)
    tracer = provider.get_tracer("timetracer_otel.pytest")
    with tracer.start_as_current_span(label, kind=trace.SpanKind.INTERNAL) as span:
        context = span.get_span_context()
        recording = TraceRecording(
            config,
            trace_id=context.trace_id,
            root_span_id=context.span_id,
            method="PYTEST",
            path=label,
            query="",
            headers=[],
            service=service_name(provider, config.service_name),
        )
        recording.fixed_path = str(path)
        recording.status = 200
        processor.begin(recording)
        install_draw_sources(config.draws)
        token, draws_token = activate(recording), activate_draws(recording.draws)
        try:
            yield recording
        finally:
            deactivate_draws(draws_token)
            deactivate(token)
    processor.force_flush()
