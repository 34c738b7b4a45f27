"""OpenTelemetry instrumentors for the client libraries OpenTelemetry has none for.

Each is a standard :class:`~opentelemetry.instrumentation.instrumentor.BaseInstrumentor`
(registered as an ``opentelemetry_instrumentor`` entry point, so ``opentelemetry-instrument``
loads it too) that makes the library's client spans; timetracer's capture and replay sit
under it, as under any contrib instrumentor.
"""
