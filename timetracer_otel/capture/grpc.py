"""gRPC client capture (grpcio, sync and grpc.aio channels): the four call shapes, their metadata and status.

OpenTelemetry's ``GrpcInstrumentorClient`` wraps ``grpc.insecure_channel`` and
``grpc.secure_channel`` so that every channel they make calls through its interceptor,
which opens the client span and then calls the channel's own multi-callable
(``grpc._channel._UnaryUnaryMultiCallable.__call__`` and the like). The capture wraps
those methods, so the interceptor's span is current when a call is recorded, and calls of
channels made before the instrumentor ran are recorded too (under the request's span).

A call's request and response have the shape :mod:`timetracer_otel.protocols.grpc`
gives them. Streamed request messages are recorded as gRPC takes them from the
application's iterator, response messages as the application reads them; the status
(code, details, trailing metadata) when the call ends, whether it returned or raised; a
stream the application stops reading is recorded as cancelled after the messages it read,
which is what gRPC ends it with. A unary call made with ``__call__`` is made with
``with_call`` underneath, which returns the same response and also the call's metadata.
grpc.aio calls are captured at their call objects (see below); their client spans come
from ``GrpcAioInstrumentorClient``, which the plugin enables. Secrets in metadata and messages are hidden by
the cassette writer, off the request path.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import grpc._channel
import grpc._common
import grpc.aio._call
import wrapt

from timetracer_otel import wrapper_layers
from timetracer_otel._diagnostics import guarded
from timetracer_otel._grpc_messages import message_entry, metadata_pairs
from timetracer_otel._recording import ProtocolCall, current_recording, exception_info
from timetracer_otel.protocols.grpc import call_request, call_response

__all__ = ["install", "uninstall"]

_METADATA_ARG = 2  # (request, timeout, metadata, ...): the position of ``metadata``
# A stream's status until it ends: the application may stop reading it (gRPC then cancels it).
_UNREAD = "Locally cancelled by application!"


def _metadata(args: tuple, kwargs: dict) -> Any:
    return args[_METADATA_ARG] if len(args) > _METADATA_ARG else kwargs.get("metadata")


class _Capture:
    """One call in flight: its request messages as they are sent, then its outcome."""

    def __init__(self, call: ProtocolCall, serializing: Any) -> None:
        self.call = call
        self.serializing = serializing  # the multi-callable or call holding the serializers
        self.received: list[dict[str, Any]] = []

    def entry(self, message: Any, serializer: Any) -> dict[str, Any] | None:
        with guarded("grpc.message"):
            return message_entry(message, serializer)
        return None

    def sent(self, message: Any) -> None:
        entry = self.entry(message, self.serializing._request_serializer)
        if entry is not None:
            self.call.request["messages"].append(entry)

    def got(self, message: Any) -> None:
        entry = self.entry(message, None)
        if entry is not None:
            self.received.append(entry)

    def ended(self, outcome: Any) -> None:
        """``outcome``: the ``grpc.Call`` that ended (an ``RpcError`` is one too)."""
        with guarded("grpc.status"):
            self.ended_with(
                outcome.code(),
                outcome.details(),
                outcome.initial_metadata(),
                outcome.trailing_metadata(),
            )

    def ended_with(self, code: grpc.StatusCode, details: Any, initial: Any, trailing: Any) -> None:
        self.call.response = call_response(
            code.name,
            details or "",
            metadata_pairs(initial),
            metadata_pairs(trailing),
            self.received,
        )
        if code is not grpc.StatusCode.OK:
            self.call.error = {"type": "grpc.RpcError", "message": details or ""}

    def failed(self, exc: BaseException) -> None:
        if isinstance(exc, grpc.RpcError) and isinstance(exc, grpc.Call):
            self.ended(exc)
            return
        with guarded("grpc.error"):
            self.call.error = exception_info(exc)


def _begin(multicallable: Any, args: tuple, kwargs: dict) -> _Capture | None:
    recording = current_recording()
    if recording is None:
        return None
    with guarded("grpc.request"):
        method = grpc._common.decode(multicallable._method)
        request = call_request(method, metadata_pairs(_metadata(args, kwargs)), [])
        call = ProtocolCall("grpc", "grpc", request)
        recording.add_call(call)
        return _Capture(call, multicallable)
    return None


def _sending(capture: _Capture, messages: Iterator[Any]) -> Iterator[Any]:
    """The application's request messages, each recorded as gRPC takes it."""
    for message in messages:
        capture.sent(message)
        yield message


def _with_sent(capture: _Capture, args: tuple, kwargs: dict, streaming: bool) -> tuple:
    """The call's arguments with its request messages recorded (a stream's as they are sent)."""
    name = "request_iterator" if streaming else "request"
    if name in kwargs:
        head, kwargs = kwargs[name], {k: v for k, v in kwargs.items() if k != name}
    else:
        head, args = args[0], args[1:]
    if streaming:
        head = _sending(capture, iter(head))
    else:
        capture.sent(head)
    return (head, *args), kwargs


class _Responses(wrapt.ObjectProxy):
    """A streaming call (iterator, ``grpc.Call`` and ``grpc.Future``): each message the
    application reads is recorded, and the status once the stream ends."""

    def __init__(self, rendezvous: Any, capture: _Capture) -> None:
        super().__init__(rendezvous)
        self._self_capture = capture

    def __iter__(self) -> _Responses:
        return self

    def __next__(self) -> Any:
        try:
            message = next(self.__wrapped__)
        except StopIteration:
            self._self_capture.ended(self.__wrapped__)
            raise
        except Exception as exc:
            self._self_capture.failed(exc)
            raise
        self._self_capture.got(message)
        return message

    def next(self) -> Any:
        return self.__next__()


def _unary_response(streaming: bool, returns_call: bool) -> Callable[..., Any]:
    """``with_call`` (``returns_call``) or ``__call__`` of a unary-response call; ``__call__`` is
    made with ``with_call`` underneath: the same response, and the call's metadata too."""

    def capture(wrapped: Callable[..., Any], instance: Any, args: tuple, kwargs: dict) -> Any:
        started = _begin(instance, args, kwargs)
        if started is None:
            return wrapped(*args, **kwargs)
        args, kwargs = _with_sent(started, args, kwargs, streaming)
        with_call = (
            wrapped
            if returns_call
            else functools.partial(wrapper_layers.original(type(instance), "with_call"), instance)
        )
        try:
            response, call = with_call(*args, **kwargs)
        except Exception as exc:
            started.failed(exc)
            raise
        started.got(response)
        started.ended(call)
        return (response, call) if returns_call else response

    return capture


def _future(streaming: bool) -> Callable[..., Any]:
    def capture(wrapped: Callable[..., Any], instance: Any, args: tuple, kwargs: dict) -> Any:
        started = _begin(instance, args, kwargs)
        if started is None:
            return wrapped(*args, **kwargs)
        args, kwargs = _with_sent(started, args, kwargs, streaming)
        try:
            future = wrapped(*args, **kwargs)
        except Exception as exc:
            started.failed(exc)
            raise

        def done(call: Any) -> None:
            if call.code() is grpc.StatusCode.OK:
                started.got(call.result())
            started.ended(call)

        future.add_done_callback(done)
        return future

    return capture


def _stream(streaming: bool) -> Callable[..., Any]:
    def capture(wrapped: Callable[..., Any], instance: Any, args: tuple, kwargs: dict) -> Any:
        started = _begin(instance, args, kwargs)
        if started is None:
            return wrapped(*args, **kwargs)
        args, kwargs = _with_sent(started, args, kwargs, streaming)
        try:
            rendezvous = wrapped(*args, **kwargs)
        except Exception as exc:
            started.failed(exc)
            raise
        started.call.response = call_response("CANCELLED", _UNREAD, [], [], started.received)
        return _Responses(rendezvous, started)

    return capture


# --------------------------------------------------------------------------- grpc.aio
# An aio call is an object of grpc.aio._call, made by the channel's multi-callable (or, with
# interceptors, by the last one's continuation, inside OpenTelemetry's span when
# GrpcAioInstrumentorClient is on); its tasks run in the context it was made in. The capture
# notes the call when it is made, each message it writes and reads, and its status when its
# response task or its stream ends.
_aio_calls: weakref.WeakKeyDictionary[Any, _Capture] = weakref.WeakKeyDictionary()
_AIO_METHOD_ARG = (
    6  # (request, deadline, metadata, credentials, wait_for_ready, channel, method, ...)
)


def _arg(args: tuple, kwargs: dict, index: int, name: str) -> Any:
    return args[index] if len(args) > index else kwargs.get(name)


def _aio_made(unary_request: bool, stream_response: bool) -> Callable[..., Any]:
    def capture(wrapped: Callable[..., Any], instance: Any, args: tuple, kwargs: dict) -> Any:
        recording = current_recording()
        started = None
        if recording is not None:
            with guarded("grpc.request"):
                method = grpc._common.decode(_arg(args, kwargs, _AIO_METHOD_ARG, "method"))
                metadata = metadata_pairs(_arg(args, kwargs, _METADATA_ARG, "metadata"))
                call = ProtocolCall("grpc", "grpc", call_request(method, metadata, []))
                recording.add_call(call)
                started = _aio_calls[instance] = _Capture(call, instance)
                if stream_response:
                    call.response = call_response("CANCELLED", _UNREAD, [], [], started.received)
        result = wrapped(*args, **kwargs)
        if started is not None and unary_request:
            started.sent(_arg(args, kwargs, 0, "request"))
        return result

    return capture


async def _aio_status(capture: _Capture, call: Any) -> None:
    with guarded("grpc.status"):
        capture.ended_with(
            await call.code(),
            await call.details(),
            await call.initial_metadata(),
            await call.trailing_metadata(),
        )


async def _aio_response(wrapped: Callable[..., Any], call: Any, args: tuple, kwargs: dict) -> Any:
    """The task that ends a unary-response call: its response (EOF when it failed), then its status."""
    response = await wrapped(*args, **kwargs)
    capture = _aio_calls.get(call)
    if capture is not None:
        if response is not grpc.aio.EOF:
            capture.got(response)
        await _aio_status(capture, call)
    return response


async def _aio_read(wrapped: Callable[..., Any], call: Any, args: tuple, kwargs: dict) -> Any:
    message = await wrapped(*args, **kwargs)
    capture = _aio_calls.get(call)
    if capture is not None:
        if message is grpc.aio.EOF:
            await _aio_status(capture, call)
        else:
            capture.got(message)
    return message


async def _aio_write(wrapped: Callable[..., Any], call: Any, args: tuple, kwargs: dict) -> Any:
    capture = _aio_calls.get(call)
    if capture is not None:
        capture.sent(_arg(args, kwargs, 0, "request"))
    return await wrapped(*args, **kwargs)


_aio = grpc.aio._call
_channel = grpc._channel
# (class, method, wrapper): the channel's own multi-callables, which the interceptor calls
_SEAMS: tuple[tuple[type, str, Callable[..., Any]], ...] = (
    (_channel._UnaryUnaryMultiCallable, "__call__", _unary_response(False, returns_call=False)),
    (_channel._UnaryUnaryMultiCallable, "with_call", _unary_response(False, returns_call=True)),
    (_channel._UnaryUnaryMultiCallable, "future", _future(False)),
    (_channel._UnaryStreamMultiCallable, "__call__", _stream(False)),
    (_channel._SingleThreadedUnaryStreamMultiCallable, "__call__", _stream(False)),
    (_channel._StreamUnaryMultiCallable, "__call__", _unary_response(True, returns_call=False)),
    (_channel._StreamUnaryMultiCallable, "with_call", _unary_response(True, returns_call=True)),
    (_channel._StreamUnaryMultiCallable, "future", _future(True)),
    (_channel._StreamStreamMultiCallable, "__call__", _stream(True)),
    (_aio.UnaryUnaryCall, "__init__", _aio_made(unary_request=True, stream_response=False)),
    (_aio.UnaryStreamCall, "__init__", _aio_made(unary_request=True, stream_response=True)),
    (_aio.StreamUnaryCall, "__init__", _aio_made(unary_request=False, stream_response=False)),
    (_aio.StreamStreamCall, "__init__", _aio_made(unary_request=False, stream_response=True)),
    (_aio.UnaryUnaryCall, "_invoke", _aio_response),
    (_aio.StreamUnaryCall, "_conduct_rpc", _aio_response),
    (_aio._StreamResponseMixin, "_read", _aio_read),
    (_aio._StreamRequestMixin, "_write", _aio_write),
)


def install() -> None:
    wrapper_layers.install_all(_SEAMS)


def uninstall() -> None:
    wrapper_layers.uninstall_all(_SEAMS)
