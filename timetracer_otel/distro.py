"""``opentelemetry-instrument`` support: record and replay an app that has no timetracer code.

``TIMETRACER_MODE=record opentelemetry-instrument uvicorn app:app`` loads, through entry points:

- the distro ``timetracer`` (:class:`TimeTracerDistro`): OTLP over HTTP by default, our
  configurator, and timetracer set up before each auto-loaded instrumentor runs;
- the configurator ``timetracer`` (:class:`TimeTracerConfigurator`): the SDK as OpenTelemetry's
  own configurator builds it (``OTEL_SERVICE_NAME``, ``OTEL_TRACES_EXPORTER``...), with every
  trace exporter behind timetracer's redaction;
- the trace exporter ``timetracer`` (:class:`TimeTracerExporter`): ``OTEL_TRACES_EXPORTER=timetracer``
  turns timetracer on when another distribution's configurator is in charge.

Setting up means: the cassette processor on the SDK provider (record), the replay patches
(replay), the capture layers of every client library, and a :class:`TimeTracerMiddleware`
inside the server span of every Starlette or FastAPI application.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import logging
import os
import threading
from collections.abc import Sequence
from importlib.metadata import EntryPoint, entry_points
from typing import Any, NoReturn

from opentelemetry.instrumentation.distro import BaseDistro
from opentelemetry.instrumentation.environment_variables import (
    OTEL_PYTHON_CONFIGURATOR,
    OTEL_PYTHON_DISABLED_INSTRUMENTATIONS,
)
from opentelemetry.sdk._configuration import _OTelSDKConfigurator
from opentelemetry.sdk.environment_variables import OTEL_EXPORTER_OTLP_PROTOCOL
from opentelemetry.sdk.resources import SERVICE_NAME
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from timetracer_otel import plugins
from timetracer_otel._diagnostics import guarded, logger
from timetracer_otel._tracing import cassette_processor, record_process, tracer_provider
from timetracer_otel.config import TraceConfig
from timetracer_otel.exporters.otlp import redacting_processor

__all__ = ["TimeTracerDistro", "TimeTracerConfigurator", "TimeTracerExporter", "setup"]

_lock = threading.Lock()
_set_up = False


def _stop(exc: Exception) -> NoReturn:
    """A bad setting stops the process at start, as ``auto_setup`` does: a replay must never go live."""
    text = str(exc)
    raise SystemExit(text if text.startswith("timetracer:") else f"timetracer: {text}") from exc


@functools.cache
def _config() -> TraceConfig:
    """The environment's config. OTLP export is ``OTEL_TRACES_EXPORTER``'s business here, not the middleware's."""
    try:
        return TraceConfig.from_env(otlp_endpoint=None)
    except ValueError as exc:
        _stop(exc)


def setup() -> None:
    """Set timetracer up for this process, once, before any instrumentor wraps a library."""
    global _set_up
    with _lock:
        if _set_up:
            return
        _set_up = True
        config = _config()
        if config.mode == "off":
            return
        try:
            _prepare(config)
        except Exception as exc:
            if config.mode == "replay":  # half set up, a replay could reach the network
                _stop(exc)
            raise


def _prepare(config: TraceConfig) -> None:
    if config.mode == "replay":
        from timetracer_otel.replayers import install_replayers
        from timetracer_otel.replayers.asgi import library_for

        library_for(config)  # unusable cassettes stop the app now, not at the first request
        install_replayers()
    else:
        cassette_processor(tracer_provider(config.service_name))
        record_process(config)  # calls the app makes outside requests from now on (import time too)
    _install_capture(config)
    _patch_starlette(config)


def _disabled() -> set[str]:
    return {
        name.strip()
        for name in os.environ.get(OTEL_PYTHON_DISABLED_INSTRUMENTATIONS, "").split(",")
    }


def _install_capture(config: TraceConfig) -> None:
    """Capture under each instrumentor that auto-instrumentation will load (not the disabled ones).

    A plugin whose instrumentor declares a library range older than the library
    (``skip_dep_check``) is instrumented here: auto-instrumentation would skip it.
    """
    disabled = _disabled()
    if "*" in disabled:
        return
    for entry_point in entry_points(group="opentelemetry_instrumentor"):
        if entry_point.name in disabled:
            continue
        for name, plugin in plugins.PLUGINS.items():
            if (
                entry_point.value not in plugin.instrumentors
                or importlib.util.find_spec(name) is None
            ):
                continue
            with guarded(f"distro.{name}"):
                if plugin.skip_dep_check:
                    plugins.enable(name)
                    _quiet_conflict(entry_point.name)
                elif config.mode == "record":
                    importlib.import_module(plugin.capture).install()


class _InstrumentedHere(logging.Filter):
    """Drops auto-instrumentation's error that an instrumentor's declared range excludes the
    installed library (SQLAlchemy 2.1), for those timetracer instruments itself: the error
    says nothing was instrumented, and the library's calls are recorded all the same."""

    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        return not any(message.startswith(f"{name} only instruments ") for name in self.names)


_instrumented_here = _InstrumentedHere()


def _quiet_conflict(entry_point: str) -> None:
    loader = logging.getLogger("opentelemetry.instrumentation.auto_instrumentation._load")
    if _instrumented_here not in loader.filters:
        loader.addFilter(_instrumented_here)
    _instrumented_here.names.add(entry_point)


def _patch_starlette(config: TraceConfig) -> None:
    """Every Starlette (and FastAPI) application gets a TimeTracerMiddleware when its stack is built.

    It goes right inside the OpenTelemetry middleware that the Starlette instrumentation
    adds, so the server span is current and is reused; FastAPI's instrumentation wraps the
    whole stack, which works the same. Mounted sub-applications (``scope["app"]`` already
    set) and applications that call ``auto_setup`` themselves are left alone.
    """
    try:
        from starlette.applications import Starlette
    except ImportError:
        return
    original = Starlette.__call__

    @functools.wraps(original)
    async def __call__(self: Any, scope: Any, receive: Any, send: Any) -> None:
        if self.middleware_stack is None and "app" not in scope:
            _add_unless_present(self, config)
        await original(self, scope, receive, send)

    Starlette.__call__ = __call__  # type: ignore[method-assign]  # on the class: every app it makes


def _add_unless_present(app: Any, config: TraceConfig) -> None:
    """The middleware, as ``auto_setup`` adds it, unless the application called ``auto_setup`` itself."""
    from timetracer_otel.integrations import starlette

    if not any(entry.cls is starlette.TimeTracerMiddleware for entry in app.user_middleware):
        starlette._add_middleware(app, config)


class TimeTracerDistro(BaseDistro):
    """The ``opentelemetry_distro`` entry point ``timetracer``."""

    def _configure(self, **kwargs: Any) -> None:
        # The `otlp` extra brings OTLP over HTTP: with the protocol unset, the SDK would pick gRPC and fail.
        os.environ.setdefault(OTEL_EXPORTER_OTLP_PROTOCOL, "http/protobuf")
        # Ours even when another distribution's configurator is listed first.
        os.environ.setdefault(OTEL_PYTHON_CONFIGURATOR, "timetracer")

    def load_instrumentor(self, entry_point: EntryPoint, **kwargs: Any) -> None:
        """Instrument with timetracer's layers already in place, so they sit under the instrumentor's wrappers."""
        setup()
        instrumentor = entry_point.load()()
        if not instrumentor.is_instrumented_by_opentelemetry:  # setup() may have instrumented it
            instrumentor.instrument(**kwargs)


class TimeTracerExporter(SpanExporter):
    """The ``opentelemetry_traces_exporter`` entry point ``timetracer``.

    Cassettes are made by a span processor that must see spans start, not by an
    exporter: the SDK creating this exporter is only the moment to set timetracer up.
    """

    def __init__(self) -> None:
        setup()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def _export_processor(config: TraceConfig, exporter: SpanExporter) -> SpanProcessor:
    if isinstance(exporter, TimeTracerExporter):
        return SpanProcessor()  # exports nothing: no batch thread for it
    return redacting_processor(exporter, config)


class TimeTracerConfigurator(_OTelSDKConfigurator):
    """The ``opentelemetry_configurator`` entry point ``timetracer``."""

    def _configure(self, **kwargs: Any) -> None:
        config = _config()
        options: dict[str, Any] = {
            "export_span_processor": functools.partial(_export_processor, config)
        }
        if config.service_name:
            options["resource_attributes"] = {SERVICE_NAME: config.service_name}
        try:
            super()._configure(**options, **kwargs)
        except (
            RuntimeError
        ) as exc:  # e.g. OTEL_TRACES_EXPORTER names an exporter that is not installed
            logger.error(
                "timetracer: OpenTelemetry SDK setup failed (%s); recording goes on without it", exc
            )
        setup()
