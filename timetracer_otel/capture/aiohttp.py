"""aiohttp client capture: a TraceConfig of our own, after OpenTelemetry's, on every session.

aiohttp signals give the request (start, body chunks as sent) and the response head.
The response body is read later from ``response.content``; every read of a
``StreamReader`` goes through ``_read_nowait_chunk``, which is wrapped to copy the
chunks of the streams we follow (a small table, swept of finished entries).
"""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

import aiohttp
from aiohttp.streams import StreamReader

from timetracer_otel._diagnostics import guarded
from timetracer_otel._recording import HttpCall, current_recording, exception_info
from timetracer_otel.cassette.body import BodySink

from . import _patch

__all__ = ["install", "uninstall"]

# id(stream) -> (stream, call). The stream is held so its id cannot be reused while listed.
_followed: dict[int, tuple[StreamReader, HttpCall]] = {}
_followed_lock = threading.Lock()


def _follow(stream: StreamReader, call: HttpCall) -> None:
    with _followed_lock:
        for key in [k for k, (_, c) in _followed.items() if c.response_body is None or c.response_body.sealed]:
            del _followed[key]
        _followed[id(stream)] = (stream, call)


def _read_nowait_chunk(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> bytes:
    data = wrapped(*args, **kwargs)
    if _followed:
        entry = _followed.get(id(instance))
        if entry is not None and entry[0] is instance:
            with guarded("aiohttp.response_body"):
                sink = entry[1].response_body
                sink.feed(data)
                if instance.is_eof():
                    sink.finish()
                    with _followed_lock:
                        _followed.pop(id(instance), None)
    return data


def _headers(raw: Any) -> list[tuple[str, str]]:
    return [(bytes(k).decode("latin-1"), bytes(v).decode("latin-1")) for k, v in raw]


async def _on_request_start(session: Any, context: SimpleNamespace, params: Any) -> None:
    context.timetracer_call = None
    recording = current_recording()
    if recording is None:
        return
    with guarded("aiohttp.request"):
        headers = [(str(k), str(v)) for k, v in params.headers.items()]
        call = HttpCall("aiohttp", params.method, str(params.url), headers, BodySink(recording.config.max_body_bytes))
        recording.add_call(call)
        context.timetracer_call = call


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
        _follow(response.content, call)


async def _on_request_exception(session: Any, context: SimpleNamespace, params: Any) -> None:
    call = getattr(context, "timetracer_call", None)
    if call is not None:
        with guarded("aiohttp.error"):
            call.error = exception_info(params.exception)


def _trace_config() -> aiohttp.TraceConfig:
    config = aiohttp.TraceConfig()
    config.on_request_start.append(_on_request_start)
    config.on_request_chunk_sent.append(_on_request_chunk_sent)
    config.on_request_end.append(_on_request_end)
    config.on_request_exception.append(_on_request_exception)
    config.freeze()
    return config


_TRACE_CONFIG = _trace_config()


def _session_init(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    configs = list(kwargs.get("trace_configs") or [])
    configs.append(_TRACE_CONFIG)  # last, so OpenTelemetry's span is current in our callbacks
    kwargs["trace_configs"] = configs
    return wrapped(*args, **kwargs)


def install() -> None:
    _patch.install(aiohttp.ClientSession, "__init__", _session_init)
    _patch.install(StreamReader, "_read_nowait_chunk", _read_nowait_chunk)


def uninstall() -> None:
    _patch.uninstall(aiohttp.ClientSession, "__init__")
    _patch.uninstall(StreamReader, "_read_nowait_chunk")
