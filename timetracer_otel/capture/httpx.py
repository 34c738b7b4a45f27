"""httpx capture at the transport seam (``HTTPTransport.handle_request`` and its async twin).

The wrapper sits under OpenTelemetry's httpx wrapper, so the client span is current.
It reads the request, and replaces the response's byte stream with a tee that yields
the very same chunks, when the application reads them, while keeping a bounded copy.
Bytes at this level are as on the wire (still gzip-encoded); the cassette stores them
decoded.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx

from timetracer_otel._apps_under_test import is_app_under_test
from timetracer_otel._diagnostics import guarded
from timetracer_otel._recording import HttpCall, current_recording, exception_info
from timetracer_otel.cassette.body import BodySink

from . import _patch

__all__ = ["install", "uninstall"]


class _SyncTee(httpx.SyncByteStream):
    def __init__(self, stream: Any, sink: BodySink) -> None:
        self._stream = stream
        self._sink = sink

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._stream:
            with guarded("httpx.response_body"):
                self._sink.feed(chunk)
            yield chunk
        self._sink.finish()

    def close(self) -> None:
        close = getattr(self._stream, "close", None)
        if close is not None:
            close()


class _AsyncTee(httpx.AsyncByteStream):
    def __init__(self, stream: Any, sink: BodySink) -> None:
        self._stream = stream
        self._sink = sink

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            with guarded("httpx.response_body"):
                self._sink.feed(chunk)
            yield chunk
        self._sink.finish()

    async def aclose(self) -> None:
        aclose = getattr(self._stream, "aclose", None)
        if aclose is not None:
            await aclose()


def _headers(headers: httpx.Headers) -> list[tuple[str, str]]:
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers.raw]


def _begin(args: tuple, kwargs: dict, is_async: bool) -> HttpCall | None:
    """Start recording this call if its request is being recorded; None otherwise."""
    recording = current_recording()
    if recording is None:
        return None
    with guarded("httpx.request"):
        request: httpx.Request = args[0] if args else kwargs["request"]
        if is_app_under_test(str(request.url)):
            return None
        body = BodySink(recording.config.max_body_bytes)
        try:
            body.feed(request.content)
            body.finish()
        except httpx.RequestNotRead:  # a streaming upload: keep what is sent as it is sent
            request.stream = (
                _AsyncTee(request.stream, body) if is_async else _SyncTee(request.stream, body)
            )
        call = HttpCall("httpx", request.method, str(request.url), _headers(request.headers), body)
        recording.add_call(call)
        return call
    return None


def _failed(call: HttpCall, exc: Exception) -> None:
    with guarded("httpx.error"):
        call.error = exception_info(exc)


def _responded(call: HttpCall, response: httpx.Response, is_async: bool) -> None:
    with guarded("httpx.response"):
        call.status = response.status_code
        call.response_headers = _headers(response.headers)
        sink = call.response_body = BodySink(call.request_body.limit)
        response.stream = (
            _AsyncTee(response.stream, sink) if is_async else _SyncTee(response.stream, sink)
        )


def _handle_request(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    call = _begin(args, kwargs, is_async=False)
    if call is None:
        return wrapped(*args, **kwargs)
    try:
        response = wrapped(*args, **kwargs)
    except Exception as exc:
        _failed(call, exc)
        raise
    _responded(call, response, is_async=False)
    return response


async def _handle_async_request(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    call = _begin(args, kwargs, is_async=True)
    if call is None:
        return await wrapped(*args, **kwargs)
    try:
        response = await wrapped(*args, **kwargs)
    except Exception as exc:
        _failed(call, exc)
        raise
    _responded(call, response, is_async=True)
    return response


def install() -> None:
    _patch.install(httpx.HTTPTransport, "handle_request", _handle_request)
    _patch.install(httpx.AsyncHTTPTransport, "handle_async_request", _handle_async_request)


def uninstall() -> None:
    _patch.uninstall(httpx.HTTPTransport, "handle_request")
    _patch.uninstall(httpx.AsyncHTTPTransport, "handle_async_request")
