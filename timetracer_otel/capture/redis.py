"""redis-py capture: commands, pipelines, MULTI/EXEC transactions and pub/sub, sync and asyncio.

The wrappers sit under OpenTelemetry's redis wrappers (``Redis.execute_command``,
``Pipeline.execute``, ``Pipeline.immediate_execute_command`` and their asyncio twins),
so the instrumentor's span is current. The instrumentor's hooks never see a pipeline's
commands; the wrapper reads them from the pipeline's command stack. On a pub/sub
connection (which the instrumentor leaves alone), each command sent
(``PubSub.execute_command``: ``SUBSCRIBE``, ``PING``, ...) and each message read
(``PubSub.parse_response``; a read that found none is not a call) is a call, in order.

A call's request and response have the shape :mod:`timetracer_otel.protocols.redis`
gives them; the replies are the values exactly as redis-py returned them to the
application, after its response callbacks (a copy, so the application may change what
it got). A Redis error becomes the call's ``error``.
Passwords (``AUTH`` and the like) and hash fields named like secrets are hidden by the
cassette writer, off the request path, sealed with the key; the values are hidden wherever
else the cassette or the OTLP export quotes them (a pipeline error names its commands).
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable
from typing import Any, Optional

import redis.asyncio.client
import redis.client

from timetracer_otel import wrapper_layers
from timetracer_otel._diagnostics import guarded
from timetracer_otel._recording import (
    ProtocolCall,
    TraceRecording,
    current_recording,
    exception_info,
)
from timetracer_otel.protocols.redis import (
    command_request,
    pipeline_request,
    pubsub_read_request,
    pubsub_request,
    raise_on_error,
    sends,
)

__all__ = ["install", "uninstall"]

_Begin = Callable[[Any, tuple, dict], Optional["_Capture"]]


def _snapshot(value: Any) -> Any:
    try:
        return copy.deepcopy(value)
    except Exception:  # noqa: BLE001 - a value that cannot be copied is kept as it is
        return value


class _Capture:
    """One call in flight: fills the call's response or error when redis-py returns."""

    def __init__(self, call: ProtocolCall, response: Callable[[Any], dict]) -> None:
        self.call = call
        self.response = response

    def failed(self, exc: BaseException) -> None:
        with guarded("redis.error"):
            self.call.error = exception_info(exc)

    def returned(self, value: Any) -> None:
        with guarded("redis.response"):
            self.call.response = self.response(value)


def _pipeline_response(replies: Any) -> dict[str, Any]:
    """The replies, with the errors redis-py put among them (``raise_on_error=False``) taken out."""
    errors = [
        {"index": index, **exception_info(reply)}
        for index, reply in enumerate(replies)
        if isinstance(reply, Exception)
    ]
    kept = [None if isinstance(reply, Exception) else _snapshot(reply) for reply in replies]
    return {"replies": kept, "errors": errors} if errors else {"replies": kept}


def _start(
    recording: TraceRecording, request: dict[str, Any], response: Callable[[Any], dict]
) -> _Capture:
    call = ProtocolCall("redis", "redis", request)
    recording.add_call(call)
    return _Capture(call, response)


def _begin_command(client: Any, args: tuple, kwargs: dict) -> _Capture | None:
    recording = current_recording()
    if recording is None or not args:
        return None
    with guarded("redis.command"):
        return _start(
            recording, command_request(client, args), lambda reply: {"reply": _snapshot(reply)}
        )
    return None


def _begin_pubsub_command(pubsub: Any, args: tuple, kwargs: dict) -> _Capture | None:
    recording = current_recording()
    if recording is None or not args:
        return None
    with guarded("redis.pubsub"):
        return _start(recording, pubsub_request(pubsub, args), lambda _sent: {"reply": None})
    return None


def _read(pubsub: Any, message: Any) -> None:
    """Keep a message read from ``pubsub``: a read that found none is no call (how often an
    application polls is its own business)."""
    recording = current_recording()
    if recording is None or message is None:
        return
    with guarded("redis.pubsub"):
        _start(recording, pubsub_read_request(pubsub), lambda m: {"reply": _snapshot(m)}).returned(
            message
        )


def _sync_read(wrapped: Callable[..., Any], pubsub: Any, args: tuple, kwargs: dict) -> Any:
    message = wrapped(*args, **kwargs)
    _read(pubsub, message)
    return message


async def _async_read(wrapped: Callable[..., Any], pubsub: Any, args: tuple, kwargs: dict) -> Any:
    message = await wrapped(*args, **kwargs)
    _read(pubsub, message)
    return message


def _begin_pipeline(pipe: Any, args: tuple, kwargs: dict) -> _Capture | None:
    recording = current_recording()
    if recording is None or not sends(pipe):
        return None
    with guarded("redis.pipeline"):
        return _start(
            recording, pipeline_request(pipe, raise_on_error(args, kwargs)), _pipeline_response
        )
    return None


def _sync(begin: _Begin) -> Callable[..., Any]:
    def capture(wrapped: Callable[..., Any], instance: Any, args: tuple, kwargs: dict) -> Any:
        call = begin(instance, args, kwargs)
        if call is None:
            return wrapped(*args, **kwargs)
        try:
            result = wrapped(*args, **kwargs)
        except Exception as exc:
            call.failed(exc)
            raise
        call.returned(result)
        return result

    return capture


def _async(begin: _Begin) -> Callable[..., Awaitable[Any]]:
    async def capture(wrapped: Callable[..., Any], instance: Any, args: tuple, kwargs: dict) -> Any:
        call = begin(instance, args, kwargs)
        if call is None:
            return await wrapped(*args, **kwargs)
        try:
            result = await wrapped(*args, **kwargs)
        except Exception as exc:
            call.failed(exc)
            raise
        call.returned(result)
        return result

    return capture


# (class, method, wrapper): the seams OpenTelemetry's redis instrumentor wraps, and pub/sub's
_SEAMS = (
    (redis.client.Redis, "execute_command", _sync(_begin_command)),
    (redis.client.Pipeline, "immediate_execute_command", _sync(_begin_command)),
    (redis.client.Pipeline, "execute", _sync(_begin_pipeline)),
    (redis.client.PubSub, "execute_command", _sync(_begin_pubsub_command)),
    (redis.client.PubSub, "parse_response", _sync_read),
    (redis.asyncio.client.Redis, "execute_command", _async(_begin_command)),
    (redis.asyncio.client.Pipeline, "immediate_execute_command", _async(_begin_command)),
    (redis.asyncio.client.Pipeline, "execute", _async(_begin_pipeline)),
    (redis.asyncio.client.PubSub, "execute_command", _async(_begin_pubsub_command)),
    (redis.asyncio.client.PubSub, "parse_response", _async_read),
)


def install() -> None:
    wrapper_layers.install_all(_SEAMS)


def uninstall() -> None:
    wrapper_layers.uninstall_all(_SEAMS)
