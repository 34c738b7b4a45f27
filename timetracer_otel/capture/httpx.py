"""httpx capture at the transport seam (``HTTPTransport.handle_request`` and its async twin).

The wrapper sits under OpenTelemetry's httpx wrapper, so the client span is current.
It reads the request, and replaces the response's byte stream with a tee that yields
the very same chunks, when the application reads them, while keeping a bounded copy.
Bytes at this level are as on the wire (still gzip-encoded); the cassette stores them
decoded.

httpx2 has httpx's transport API in a module of its own: :class:`TransportCapture` serves
both (``capture/httpx2.py``). The library is imported when the capture is installed, so
either runs without the other installed.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

from timetracer_otel import wrapper_layers
from timetracer_otel._apps_under_test import is_app_under_test
from timetracer_otel._diagnostics import guarded
from timetracer_otel._recording import HttpCall, current_recording, exception_info
from timetracer_otel._test_mocks import mocked_by_test
from timetracer_otel.cassette.body import BodySink

__all__ = ["TransportCapture", "install", "uninstall"]


class _SyncTee:
    """Yields the stream's chunks as they are read, keeping a copy (mixed into the library's ``SyncByteStream``)."""

    def __init__(self, stream: Any, sink: BodySink, where: str) -> None:
        self._stream = stream
        self._sink = sink
        self._where = where

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._stream:
            with guarded(self._where):
                self._sink.feed(chunk)
            yield chunk
        self._sink.finish()

    def close(self) -> None:
        close = getattr(self._stream, "close", None)
        if close is not None:
            close()


class _AsyncTee:
    """:class:`_SyncTee` for the library's ``AsyncByteStream``."""

    def __init__(self, stream: Any, sink: BodySink, where: str) -> None:
        self._stream = stream
        self._sink = sink
        self._where = where

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            with guarded(self._where):
                self._sink.feed(chunk)
            yield chunk
        self._sink.finish()

    async def aclose(self) -> None:
        aclose = getattr(self._stream, "aclose", None)
        if aclose is not None:
            await aclose()


def _headers(headers: Any) -> list[tuple[str, str]]:
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers.raw]


class TransportCapture:
    """Records the calls sent through the default transports of ``library`` (``httpx``, ``httpx2``)."""

    def __init__(self, library: str) -> None:
        self._library = library
        self._module: Any = None
        self._tees: tuple[type, type] = (_SyncTee, _AsyncTee)

    def _tee(self, stream: Any, sink: BodySink, is_async: bool, where: str) -> Any:
        sync_tee, async_tee = self._tees
        return (async_tee if is_async else sync_tee)(stream, sink, f"{self._library}.{where}")

    def _begin(self, args: tuple, kwargs: dict, is_async: bool) -> HttpCall | None:
        """Start recording this call if its request is being recorded; None otherwise."""
        recording = current_recording()
        if recording is None:
            return None
        with guarded(f"{self._library}.request"):
            request = args[0] if args else kwargs["request"]
            if is_app_under_test(str(request.url)) or mocked_by_test(self._library):
                return None
            body = BodySink(recording.config.max_body_bytes)
            try:
                body.feed(request.content)
                body.finish()
            except self._module.RequestNotRead:  # a streaming upload: keep it as it is sent
                request.stream = self._tee(request.stream, body, is_async, "request_body")
            call = HttpCall(
                self._library, request.method, str(request.url), _headers(request.headers), body
            )
            recording.add_call(call)
            return call
        return None

    def _failed(self, call: HttpCall, exc: Exception) -> None:
        with guarded(f"{self._library}.error"):
            call.error = exception_info(exc)

    def _responded(self, call: HttpCall, response: Any, is_async: bool) -> None:
        with guarded(f"{self._library}.response"):
            call.status = response.status_code
            call.response_headers = _headers(response.headers)
            sink = call.response_body = BodySink(call.request_body.limit)
            response.stream = self._tee(response.stream, sink, is_async, "response_body")

    def _handle_request(self, wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        call = self._begin(args, kwargs, is_async=False)
        if call is None:
            return wrapped(*args, **kwargs)
        try:
            response = wrapped(*args, **kwargs)
        except Exception as exc:
            self._failed(call, exc)
            raise
        self._responded(call, response, is_async=False)
        return response

    async def _handle_async_request(
        self, wrapped: Any, instance: Any, args: tuple, kwargs: dict
    ) -> Any:
        call = self._begin(args, kwargs, is_async=True)
        if call is None:
            return await wrapped(*args, **kwargs)
        try:
            response = await wrapped(*args, **kwargs)
        except Exception as exc:
            self._failed(call, exc)
            raise
        self._responded(call, response, is_async=True)
        return response

    def install(self) -> None:
        module = self._module = importlib.import_module(self._library)
        self._tees = (
            type("_SyncTee", (_SyncTee, module.SyncByteStream), {}),
            type("_AsyncTee", (_AsyncTee, module.AsyncByteStream), {}),
        )
        wrapper_layers.install(module.HTTPTransport, "handle_request", self._handle_request)
        wrapper_layers.install(
            module.AsyncHTTPTransport, "handle_async_request", self._handle_async_request
        )

    def uninstall(self) -> None:
        module = self._module
        if module is None:  # never installed
            return
        wrapper_layers.uninstall(module.HTTPTransport, "handle_request")
        wrapper_layers.uninstall(module.AsyncHTTPTransport, "handle_async_request")


_httpx = TransportCapture("httpx")
install, uninstall = _httpx.install, _httpx.uninstall
