"""Recording the outgoing calls of code that is not an ASGI request (pytest tests and fixtures).

A :class:`BlockRecording` gets a root span of its own; the calls made while it is active,
and the clock, UUID and random values drawn then, become a cassette written at exactly the
given path, ready for replay. It may be activated several times before it is finished: a
pytest fixture's set-up and, much later, its teardown go to one cassette.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace

from . import plugins
from ._pool_context import install as carry_context_into_pools
from ._recording import TraceRecording, activate, deactivate
from ._tracing import cassette_processor, service_name, tracer_provider
from .cassette.document import BLOCK_METHOD
from .config import TraceConfig
from .determinism import DrawRecorder
from .determinism import activate as activate_draws
from .determinism import deactivate as deactivate_draws
from .determinism import install as install_draw_sources


def block_span(provider: trace.TracerProvider, label: str) -> trace.Span:
    """The root span a block's code runs under, recorded or replayed: calls' spans are its
    children, and code that hands the trace context on (``propagate.inject``) finds one."""
    return provider.get_tracer("timetracer_otel.pytest").start_span(
        label, kind=trace.SpanKind.INTERNAL
    )


class BlockRecording:
    """The cassette of a stretch of code, recorded while it is active; :meth:`finish` writes it."""

    def __init__(
        self,
        path: Path,
        label: str,
        keep_empty: bool = True,
        seed: str | None = None,
        parts: dict[str, Any] | None = None,
        clock_from: int | None = None,
    ) -> None:
        """``parts``: request fields of the cassette beyond the label (the pytest-xdist worker that
        ran it); ``seed`` and ``clock_from``: see :class:`DrawRecorder`."""
        config = TraceConfig(mode="record", cassette_dir=str(path.parent))
        plugins.enable_installed()
        provider = tracer_provider(config.service_name)
        self._processor = cassette_processor(provider)
        self._span = block_span(provider, label)
        span_context = self._span.get_span_context()
        self.recording = TraceRecording(
            config,
            trace_id=span_context.trace_id,
            root_span_id=span_context.span_id,
            method=BLOCK_METHOD,
            path=label,
            query="",
            headers=[],
            service=service_name(provider, config.service_name),
            server_parts=parts,
        )
        # randomness reproducible from the seed (see DrawRecorder)
        if seed is not None and config.draws:
            self.recording.draws = DrawRecorder(config.draws, seed, clock_from)
        # absolute: the writer process may run in another directory
        self.recording.fixed_path = os.path.abspath(path)
        self.recording.status = 200
        self._keep_empty = keep_empty
        self._processor.begin(self.recording)
        install_draw_sources(config.draws)
        carry_context_into_pools()
        self._tokens: list[tuple[object, ...]] = []

    def activate(self) -> None:
        """Make the calls and draws that follow (in this context and those copied from it) part of this cassette."""
        self._tokens.append(self.enter())

    def deactivate(self) -> None:
        self.exit(self._tokens.pop())

    def enter(self) -> tuple[object, ...]:
        """:meth:`activate` for one context only (another thread's): give the tokens back to :meth:`exit`."""
        span_token = otel_context.attach(trace.set_span_in_context(self._span))
        return span_token, activate(self.recording), activate_draws(self.recording.draws)

    def exit(self, tokens: tuple[object, ...]) -> None:
        span_token, token, draws_token = tokens
        deactivate_draws(draws_token)  # type: ignore[arg-type]
        deactivate(token)  # type: ignore[arg-type]
        otel_context.detach(span_token)  # type: ignore[arg-type]

    @property
    def empty(self) -> bool:
        """No call was made and nothing was drawn."""
        draws = self.recording.draws
        return not self.recording.calls and (draws is None or not draws.draws)

    def finish(self, error: BaseException | None = None, discard: bool = False) -> bool:
        """End the recording and wait until its cassette is written; False when it was not
        kept: ``discard``, or empty and not to be kept empty."""
        if error is not None:
            self.recording.status = 500
        kept = not discard and (self._keep_empty or not self.empty)
        self.recording.discarded = not kept
        self._span.end()
        # other blocks (a fixture's) may still be open
        self._processor.flush_recording(self.recording)
        return kept


@contextlib.contextmanager
def record_block(path: Path, label: str) -> Iterator[TraceRecording]:
    """Record the calls of every installed client library made in the block to ``path``."""
    block = BlockRecording(path, label)
    block.activate()
    try:
        yield block.recording
    finally:
        block.deactivate()
        block.finish()
