"""ASGI capture: tee the inbound request and the response onto the current recording.

The layer passes every message through untouched (the same objects, in the same
order); it only reads them. It runs inside OpenTelemetry's ASGI middleware, so the
current span is the request's server span.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from opentelemetry import trace

from timetracer_otel import _gc_hold, _process_recording, _span_secrets
from timetracer_otel._diagnostics import counters, guarded
from timetracer_otel._recording import (
    TraceRecording,
    activate,
    deactivate,
    exception_info,
    request_recording,
)
from timetracer_otel.config import TraceConfig
from timetracer_otel.determinism import activate as activate_draws
from timetracer_otel.determinism import deactivate as deactivate_draws
from timetracer_otel.determinism import own_task
from timetracer_otel.inbound import (
    ASGIApp,
    Message,
    Receive,
    Scope,
    Send,
    latin1_headers,
    route_template,
)

__all__ = ["RecordingLayer"]


def _server_parts(scope: Scope) -> dict[str, Any]:
    """What the server, not the client's request, put in the scope and the app may read: the peer
    (``request.client``: rate limits, audit rows), a scheme other than ``http`` and a root path
    (``request.url``, redirects and links behind a proxy). Odd values are left out."""
    parts: dict[str, Any] = {}
    client = scope.get("client")
    if isinstance(client, (tuple, list)) and len(client) == 2:
        host, port = client
        if isinstance(host, str) and type(port) is int:
            parts["client"] = [host, port]
    scheme, root_path = scope.get("scheme"), scope.get("root_path")
    if isinstance(scheme, str) and scheme != "http":
        parts["scheme"] = scheme
    if isinstance(root_path, str) and root_path:
        parts["root_path"] = root_path
    return parts


class RecordingLayer:
    """Record each sampled HTTP request that passes through, with its response."""

    def __init__(
        self,
        app: ASGIApp,
        config: TraceConfig,
        begin: Callable[[TraceRecording], None],
        service: str,
        rewrite: Callable[[TraceRecording], None],
    ) -> None:
        self.app = app
        self.config = config
        self._begin = begin
        self._service = service
        self._rewrite = rewrite  # a recording already handed over that changed since

    def _start(self, scope: Scope) -> TraceRecording | None:
        if request_recording() is not None:
            # served inside another recording (a pytest test's, through TestClient): the
            # request and its calls are that recording's, whose span would otherwise be taken
            # for this request's root and its cassette lost
            return None
        if self.config.sample_rate < 1.0 and random.random() >= self.config.sample_rate:
            counters.add("skipped.sample_rate")
            return None
        span = trace.get_current_span()
        context = span.get_span_context()
        if not context.is_valid or not span.is_recording():
            return None
        recording = TraceRecording(
            self.config,
            trace_id=context.trace_id,
            root_span_id=context.span_id,
            method=scope.get("method", "GET"),
            path=scope.get("path", ""),
            query=bytes(scope.get("query_string", b"")).decode("latin-1"),
            headers=latin1_headers(scope.get("headers")),
            service=self._service,
            server_parts=_server_parts(scope),
        )
        recording.process = _process_recording.process_id()
        _span_secrets.watch(recording)
        self._begin(recording)
        return recording

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        recording: TraceRecording | None = None
        with guarded("asgi.start"):
            recording = self._start(scope)
        if recording is None:
            await self.app(scope, receive, send)
            return

        original_scope = dict(scope)
        # draws made once the response went out: its server span ended and the recording was
        # handed over, so a draw after that (a background task's, a metrics middleware's) makes
        # it be written again
        drawn_by_response = -1

        async def receive_tee() -> Message:
            message = await receive()
            with guarded("asgi.request"):
                if message["type"] == "http.request":
                    recording.request_body.feed(message.get("body", b""))
                    if not message.get("more_body", False):
                        recording.request_body.finish()
            return message

        async def send_tee(message: Message) -> None:
            nonlocal drawn_by_response
            with guarded("asgi.response"):
                _gc_hold.collect_if_overdue()
                kind = message["type"]
                if kind == "http.response.start":
                    # Routing is done; an outer OpenTelemetry middleware may end the root span, and
                    # so freeze the recording, as soon as the body is sent: before this layer returns.
                    recording.route = route_template(scope, original_scope)
                    recording.status = int(message["status"])
                    recording.response_headers = latin1_headers(message.get("headers"))
                elif kind == "http.response.body":
                    recording.response_body.feed(message.get("body", b""))
                    if not message.get("more_body", False):
                        recording.response_body.finish()
                        drawn_by_response = _draws_made(recording)
            await send(message)

        token, draws_token = activate(recording), activate_draws(recording.draws)
        own_task(recording.draws)
        _gc_hold.hold()
        try:
            await self.app(scope, receive_tee, send_tee)
        except BaseException as exc:
            with guarded("asgi.error"):
                if recording.status is None:
                    recording.status = 500
                recording.error = exception_info(exc)
                # raised after the response went out (a background task): its cassette, written
                # then, is written again with the error, as replay will raise it
                self._rewrite(recording)
            raise
        finally:
            _gc_hold.release()
            deactivate_draws(draws_token)
            deactivate(token)
            if recording.route is None:
                with guarded("asgi.route"):
                    recording.route = route_template(scope, original_scope)
            if 0 <= drawn_by_response < _draws_made(recording):
                with guarded("asgi.late_draws"):
                    self._rewrite(recording)


def _draws_made(recording: TraceRecording) -> int:
    return len(recording.draws.draws) if recording.draws is not None else 0
