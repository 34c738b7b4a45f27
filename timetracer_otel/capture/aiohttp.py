"""aiohttp client capture: a TraceConfig of our own, after OpenTelemetry's, on every session.

The TraceConfig joins a session at its first request (``ClientSession._request``), so
sessions created before ``enable_aiohttp()`` are covered too; such a session also gets
OpenTelemetry's TraceConfig when the library is instrumented, so its calls have client
spans like everyone else's. aiohttp signals give the request (start, headers and body
chunks as sent) and the response head. The response body is read later from
``response.content``; every read of a ``StreamReader`` goes through
``_read_nowait_chunk``, which is wrapped to copy the chunks of the streams we follow
(a small table, swept of finished entries).
"""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

import aiohttp
from aiohttp.streams import StreamReader

from timetracer_otel import wrapper_layers
from timetracer_otel._apps_under_test import is_app_under_test
from timetracer_otel._diagnostics import guarded
from timetracer_otel._recording import HttpCall, current_recording, exception_info
from timetracer_otel.cassette.body import BodySink

__all__ = ["install", "uninstall"]

# id(stream) -> (stream, call). The stream is held so its id cannot be reused while listed.
_followed: dict[int, tuple[StreamReader, HttpCall]] = {}
_followed_lock = threading.Lock()


def _follow(stream: StreamReader, call: HttpCall) -> None:
    with _followed_lock:
        for key in [
            k
            for k, (_, c) in _followed.items()
            if c.response_body is None or c.response_body.sealed
        ]:
            del _followed[key]
        _followed[id(stream)] = (stream, call)
    # EOF can arrive after the app read the last byte (a chunked body's terminator comes on
    # its own): no further read reaches ``_read_nowait_chunk`` then, so EOF itself checks.
    stream.on_eof(lambda: _finish_if_drained(stream, call))


def _finish_if_drained(stream: StreamReader, call: HttpCall) -> None:
    """Mark the body complete once EOF was seen *and* the app read everything buffered."""
    with guarded("aiohttp.response_eof"):
        if stream.at_eof() and call.response_body is not None:
            call.response_body.finish()
            with _followed_lock:
                _followed.pop(id(stream), None)


def _read_nowait_chunk(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> bytes:
    data = wrapped(*args, **kwargs)
    if _followed:
        entry = _followed.get(id(instance))
        if entry is not None and entry[0] is instance:
            sink = entry[1].response_body
            with guarded("aiohttp.response_body"):
                if sink is not None:  # as _follow, which drops such a call
                    sink.feed(data)
            _finish_if_drained(instance, entry[1])
    return data


def _headers(raw: Any) -> list[tuple[str, str]]:
    return [(bytes(k).decode("latin-1"), bytes(v).decode("latin-1")) for k, v in raw]


async def _on_request_start(session: Any, context: SimpleNamespace, params: Any) -> None:
    context.timetracer_call = None
    recording = current_recording()
    if (
        recording is None
        or not wrapper_layers.is_installed(
            aiohttp.ClientSession, "_request"
        )  # sessions keep our config
        or is_app_under_test(str(params.url))
    ):
        return
    with guarded("aiohttp.request"):
        headers = [(str(k), str(v)) for k, v in params.headers.items()]
        call = HttpCall(
            "aiohttp",
            params.method,
            str(params.url),
            headers,
            BodySink(recording.config.max_body_bytes),
        )
        recording.add_call(call)
        context.timetracer_call = call


async def _on_request_headers_sent(session: Any, context: SimpleNamespace, params: Any) -> None:
    call = getattr(context, "timetracer_call", None)
    if call is not None:
        with guarded("aiohttp.request_headers"):
            # as sent, not as given
            call.request_headers = [(str(k), str(v)) for k, v in params.headers.items()]


async def _on_request_chunk_sent(session: Any, context: SimpleNamespace, params: Any) -> None:
    call = getattr(context, "timetracer_call", None)
    if call is not None:
        with guarded("aiohttp.request_body"):
            call.request_body.feed(bytes(params.chunk))


async def _on_request_end(session: Any, context: SimpleNamespace, params: Any) -> None:
    call = getattr(context, "timetracer_call", None)
    if call is None:
        return
    with guarded("aiohttp.response"):
        response = params.response
        call.request_body.finish()
        call.status = response.status
        call.response_headers = _headers(response.raw_headers)
        call.response_body = BodySink(call.request_body.limit)
        call.response_decoded = bool(getattr(session, "auto_decompress", True))
        if response.content.at_eof():  # no body at all (HEAD, 204, 304): nothing will be read
            call.response_body.finish()
        else:
            _follow(response.content, call)


async def _on_request_exception(session: Any, context: SimpleNamespace, params: Any) -> None:
    call = getattr(context, "timetracer_call", None)
    if call is not None:
        with guarded("aiohttp.error"):
            error = params.exception
            call.error = exception_info(error)
            if type(error) is aiohttp.ClientResponseError and error.status and call.status is None:
                # raise_for_status rejected a response that did arrive: keep its head; its body went unread
                call.request_body.finish()
                call.status = error.status
                call.response_headers = [(str(k), str(v)) for k, v in (error.headers or {}).items()]
                call.response_body = BodySink(call.request_body.limit)


def _trace_config() -> aiohttp.TraceConfig:
    config = aiohttp.TraceConfig()
    config.on_request_start.append(_on_request_start)
    config.on_request_headers_sent.append(_on_request_headers_sent)
    config.on_request_chunk_sent.append(_on_request_chunk_sent)
    config.on_request_end.append(_on_request_end)
    config.on_request_exception.append(_on_request_exception)
    config.freeze()
    return config


_TRACE_CONFIG = _trace_config()


_otel_config: aiohttp.TraceConfig | None = None


def _opentelemetry_config() -> aiohttp.TraceConfig | None:
    """OpenTelemetry's TraceConfig for a session made before instrumentation, if aiohttp is instrumented."""
    global _otel_config
    from opentelemetry.instrumentation.aiohttp_client import (
        AioHttpClientInstrumentor,
        create_trace_config,
    )

    if not AioHttpClientInstrumentor().is_instrumented_by_opentelemetry:
        return None
    if _otel_config is None:
        config = create_trace_config()
        config._is_instrumented_by_opentelemetry = True  # type: ignore[attr-defined]  # as OpenTelemetry marks it
        config.freeze()
        _otel_config = config
    return _otel_config


def _join(session: aiohttp.ClientSession) -> None:
    configs = list(session.trace_configs)
    if _TRACE_CONFIG in configs:
        return
    if not any(getattr(c, "_is_instrumented_by_opentelemetry", False) for c in configs):
        configs.extend(filter(None, [_opentelemetry_config()]))
    configs.append(_TRACE_CONFIG)  # last, so OpenTelemetry's span is current in our callbacks
    session._trace_configs = configs


def _request(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    with guarded("aiohttp.session"):
        _join(instance)
    return wrapped(*args, **kwargs)


def install() -> None:
    wrapper_layers.install(aiohttp.ClientSession, "_request", _request)
    wrapper_layers.install(StreamReader, "_read_nowait_chunk", _read_nowait_chunk)


def uninstall() -> None:
    wrapper_layers.uninstall(aiohttp.ClientSession, "_request")
    wrapper_layers.uninstall(StreamReader, "_read_nowait_chunk")
