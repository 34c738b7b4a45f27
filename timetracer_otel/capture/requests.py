"""requests capture at the transport seam (``HTTPAdapter.send``), under OpenTelemetry's wrapper.

The response's ``raw`` (urllib3) stream is wrapped in a transparent proxy that keeps a
bounded copy of what the application reads; ``isinstance`` and every attribute still
behave as the urllib3 response's.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import wrapt
from requests.adapters import HTTPAdapter

from timetracer_otel import wrapper_layers
from timetracer_otel._apps_under_test import is_app_under_test
from timetracer_otel._diagnostics import guarded
from timetracer_otel._recording import HttpCall, current_recording, exception_info, outer_call
from timetracer_otel.cassette.body import BodySink

from . import header_text, tee_request_body

__all__ = ["install", "uninstall"]


class _RawTee(wrapt.ObjectProxy):
    """urllib3 response proxy: what is read through ``stream``/``read`` is also kept."""

    def __init__(self, raw: Any, call: HttpCall, sink: BodySink) -> None:
        super().__init__(raw)
        self._self_call = call
        self._self_sink = sink  # the call's response body

    def _self_keep(self, data: bytes, decode_content: bool | None, done: bool) -> None:
        with guarded("requests.response_body"):
            sink = self._self_sink
            if data:
                decoded = (
                    self.__wrapped__.decode_content if decode_content is None else decode_content
                )
                self._self_call.response_decoded = bool(decoded)
                sink.feed(data)
            if done:
                sink.finish()

    def stream(
        self, amt: int | None = 2**16, decode_content: bool | None = None
    ) -> Iterator[bytes]:
        for chunk in self.__wrapped__.stream(amt, decode_content=decode_content):
            self._self_keep(chunk, decode_content, done=False)
            yield chunk
        self._self_keep(b"", decode_content, done=True)

    def read(
        self, amt: int | None = None, decode_content: bool | None = None, **kwargs: Any
    ) -> bytes:
        data = self.__wrapped__.read(amt=amt, decode_content=decode_content, **kwargs)
        self._self_keep(data, decode_content, done=amt is None or not data)
        return data


def _send(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    recording = current_recording()
    request: Any = args[0] if args else kwargs.get("request")
    if recording is None or is_app_under_test(str(getattr(request, "url", ""))):
        return wrapped(*args, **kwargs)
    call: HttpCall | None = None
    with guarded("requests.request"):
        sink = BodySink(recording.config.max_body_bytes)
        request.body = tee_request_body(request.body, sink, "requests.request_body")
        headers = [(header_text(k), header_text(v)) for k, v in request.headers.items()]
        call = HttpCall("requests", request.method, request.url, headers, sink)
        recording.add_call(call)
    if call is None:
        return wrapped(*args, **kwargs)
    try:
        with outer_call():  # urllib3, which requests sends through, records nothing of it
            response = wrapped(*args, **kwargs)
    except Exception as exc:
        with guarded("requests.error"):
            call.error = exception_info(exc)
        raise
    with guarded("requests.response"):
        call.status = response.status_code
        call.response_headers = _raw_headers(response.raw)
        call.response_body = sink = BodySink(call.request_body.limit)
        response.raw = _RawTee(response.raw, call, sink)
    return response


def _raw_headers(raw: Any) -> list[tuple[str, str]]:
    headers = getattr(raw, "headers", None)
    if headers is None:
        return []
    items = headers.iteritems() if hasattr(headers, "iteritems") else headers.items()
    return [(str(k), str(v)) for k, v in items]


def install() -> None:
    wrapper_layers.install(HTTPAdapter, "send", _send)


def uninstall() -> None:
    wrapper_layers.uninstall(HTTPAdapter, "send")
