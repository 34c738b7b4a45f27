"""Starlette integration: ``auto_setup(app)`` or ``app.add_middleware(TimeTracerMiddleware)``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import anyio.to_thread
from opentelemetry import trace
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from starlette.middleware import Middleware

from timetracer_otel import _early_start, _process_recording
from timetracer_otel._diagnostics import guarded
from timetracer_otel._pool_context import install as carry_context_into_pools
from timetracer_otel._recording import enter_request, leave_request
from timetracer_otel._request_scope import outside_request
from timetracer_otel._tracing import (
    cassette_processor,
    otlp_processor,
    record_process,
    service_name,
    tracer_provider,
)
from timetracer_otel.capture.asgi import RecordingLayer
from timetracer_otel.config import TraceConfig
from timetracer_otel.determinism import activate as activate_draws
from timetracer_otel.determinism import deactivate as deactivate_draws
from timetracer_otel.determinism import end_startup, startup_draws
from timetracer_otel.determinism import install as install_draw_sources
from timetracer_otel.exporters.processor import CassetteSpanProcessor
from timetracer_otel.inbound import ASGIApp, Message, Receive, Scope, Send
from timetracer_otel.plugins import (
    check_plugin_names,
    enable,
    enable_installed,
    end_early_capture,
)

__all__ = ["TimeTracerMiddleware", "auto_setup"]

# in a process started to record or replay: what the app's own modules, imported next, draw
_early_start.start()

_SHUTDOWN_FLUSH_MILLIS = 10_000
_STARTUP_WRITE_SECONDS = 10.0


class TimeTracerMiddleware:
    """ASGI middleware that records (or replays) each request, per its :class:`TraceConfig`.

    Built on OpenTelemetry's ASGI middleware: each request gets a server span, and the
    spans of the whole request become one cassette. If the application already creates
    server spans (its own OpenTelemetry instrumentation), that span is used instead of
    a second one. In mode ``off`` requests go straight to the application.
    """

    def __init__(self, app: ASGIApp, config: TraceConfig | None = None) -> None:
        self.app = app
        self.config = config if config is not None else TraceConfig()
        self._traced: ASGIApp = app
        self._inner: ASGIApp = app
        self._processor: CassetteSpanProcessor | None = None  # recording's
        end_early_capture()  # the app enabled the plugins it wants by now
        if self.config.mode == "off":
            return
        install_draw_sources(self.config.draws)
        carry_context_into_pools()
        provider = self._provider = tracer_provider(self.config.service_name)
        if self.config.otlp_endpoint:
            otlp_processor(provider, self.config)
        if self.config.mode == "replay":
            self._inner = _replay_layer(app, self.config)
        else:
            processor = self._processor = cassette_processor(provider)
            record_process(self.config)
            _process_recording.app_set_up()
            self._inner = RecordingLayer(
                app,
                self.config,
                processor.begin,
                service_name(provider, self.config.service_name),
                processor.rewrite,
            )
        self._traced = OpenTelemetryMiddleware(
            self._inner, tracer_provider=provider, exclude_spans=["receive", "send"]
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            # the lifespan, and the tasks it starts (a heartbeat, a scheduler), draw as the
            # process starts, before and after it has: a background loop's stamps replay too
            draws = startup_draws()
            token = activate_draws(draws) if draws is not None else None
            try:
                await self.app(
                    scope,
                    receive,
                    send if self._inner is self.app else self._writing_at_lifespan_ends(send),
                )
            finally:
                if token is not None:
                    deactivate_draws(token)
            return
        _started()  # a server without lifespan events: started once it serves
        if self._inner is not self.app:  # mode off: the server's own callables, untouched
            # the server's callbacks never carry this request's recording on to the next one
            receive, send = outside_request(receive), outside_request(send)
        # recorded or not, replayed or not: no call made here belongs to the process
        token = enter_request()
        try:
            if (
                scope["type"] != "http"
                or self._inner is self.app
                or self.config.is_excluded(scope.get("path", ""))
            ):
                await self.app(scope, receive, send)
            elif _ends_through(self._provider, trace.get_current_span()):
                # an outer instrumentation already made the server span
                await self._inner(scope, receive, send)
            else:
                await self._traced(scope, receive, send)
        finally:
            leave_request(token)

    def _writing_at_lifespan_ends(self, send: Send) -> Send:
        """Write the process cassette once startup completed, before the server takes requests (a process
        killed later still has it), or failed (replay shows the failure). At shutdown, complete or failed, write it again and flush cassettes and exports: uvicorn
        then ends the process by re-raising the stop signal, so no ``atexit`` handler (the SDK's flush) runs."""

        async def send_written(message: Message) -> None:
            if message["type"] in ("lifespan.startup.complete", "lifespan.startup.failed"):
                _started()  # draws outside requests are no longer recorded from now on
                # failed: the calls that led there are what replay needs to show the failure
                await anyio.to_thread.run_sync(_process_recording.save, _STARTUP_WRITE_SECONDS)
            elif message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                with guarded("shutdown.flush"):
                    _process_recording.save()
                    if self._processor is not None:  # as long as the writer keeps writing
                        await anyio.to_thread.run_sync(
                            self._processor.flush_before_exit, _SHUTDOWN_FLUSH_MILLIS / 1000
                        )
                    await anyio.to_thread.run_sync(
                        self._provider.force_flush, _SHUTDOWN_FLUSH_MILLIS
                    )
            await send(message)

        return send_written


def _started() -> None:
    """The app has started: draws outside requests are no longer recorded (see end_startup), and the process
    recording keeps fewer calls."""
    end_startup()
    _process_recording.app_started()


def _ends_through(provider: Any, span: trace.Span) -> bool:
    """Whether ``span`` is recording and its end reaches ``provider``'s processors (ours among them).

    An outer span from another provider would never tell the cassette processor that the
    request ended: then timetracer makes its own span below it. (SDK internals; if they
    change, any recording span is taken, as before.)
    """
    return span.is_recording() and getattr(span, "_span_processor", None) is getattr(
        provider, "_active_span_processor", None
    )


def _replay_layer(app: ASGIApp, config: TraceConfig) -> ASGIApp:
    """The replay layer over ``app``; loading the cassettes here makes a bad path fail at start."""
    from timetracer_otel.replayers import install_replayers
    from timetracer_otel.replayers.asgi import ReplayLayer, library_for

    library = library_for(config)
    install_replayers()
    return ReplayLayer(app, config, library)


def auto_setup(
    app: Any, config: TraceConfig | None = None, plugins: Iterable[str] | None = None
) -> TraceConfig:
    """Add :class:`TimeTracerMiddleware` to ``app`` and enable the client plugins: those named,
    or without ``plugins`` every one whose library is installed (as replay answers every
    installed library, so that what replay answers was recorded).

    ``config`` defaults to :meth:`TraceConfig.from_env`. Unknown plugin names raise
    ``ValueError`` listing the known ones. In mode ``off`` nothing is installed.
    Returns the config in force.
    """
    config = config if config is not None else TraceConfig.from_env()
    names = check_plugin_names(plugins) if plugins is not None else None
    if config.mode == "off":
        end_early_capture()
        return config
    # fail at start, not at the first request, if the cassettes are unusable
    if config.mode == "replay":
        from timetracer_otel.replayers.asgi import library_for

        library_for(config)
    if config.otlp_endpoint:  # at start too: a missing exporter package fails here, not per request
        otlp_processor(tracer_provider(config.service_name), config)
    record_process(config)  # now: calls the app makes after this, outside requests, are recorded
    if names is None:
        enable_installed()
    for name in names or ():
        enable(name)
    end_early_capture()  # the libraries the app did not name, recorded while it was imported
    # now, not when the stack is built: clients the app makes next are covered too
    if config.mode == "replay":
        from timetracer_otel.replayers import install_replayers

        install_replayers()
    _add_middleware(app, config)
    return config


def _add_middleware(app: Any, config: TraceConfig) -> None:
    """Add :class:`TimeTracerMiddleware` to a Starlette app, just inside its own OpenTelemetry ASGI
    middleware if it has one (the innermost), else outermost.

    Outside it, the request would get two spans (ours, then the app's as an internal
    child that ends after ours); inside, the app's server span is the recording's root.
    """
    if app.middleware_stack is not None:
        raise RuntimeError("Cannot add middleware after an application has started")
    entries = app.user_middleware
    position = max(
        (
            i + 1
            for i, entry in enumerate(entries)
            if isinstance(entry.cls, type) and issubclass(entry.cls, OpenTelemetryMiddleware)
        ),
        default=0,
    )
    entries.insert(position, Middleware(TimeTracerMiddleware, config=config))
