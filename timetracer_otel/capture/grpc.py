"""gRPC client capture (grpcio, sync channels): the four call shapes, their metadata and status.

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
which is what gRPC ends it with. A unary call made with ``__call__`` is made with ``with_call`` underneath, which returns the
same response and also the call's metadata. Secrets in metadata and messages are hidden by
the cassette writer, off the request path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import grpc
import grpc._channel
import grpc._common
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

    def __init__(self, call: ProtocolCall, multicallable: Any) -> None:
        self.call = call
        self.multicallable = multicallable
        self.received: list[dict[str, Any]] = []

    def entry(self, message: Any, serializer: Any) -> dict[str, Any] | None:
        with guarded("grpc.message"):
            return message_entry(message, serializer)
        return None

    def sent(self, message: Any) -> None:
        entry = self.entry(message, self.multicallable._request_serializer)
        if entry is not None:
            self.call.request["messages"].append(entry)

    def got(self, message: Any) -> None:
        entry = self.entry(message, None)
        if entry is not None:
            self.received.append(entry)

    def ended(self, outcome: Any) -> None:
        """``outcome``: the ``grpc.Call`` that ended (an ``RpcError`` is one too)."""
        with guarded("grpc.status"):
            code = outcome.code()
            self.call.response = call_response(
                code.name,
                outcome.details() or "",
                metadata_pairs(outcome.initial_metadata()),
                metadata_pairs(outcome.trailing_metadata()),
                self.received,
            )
            if code is not grpc.StatusCode.OK:
                self.call.error = {"type": "grpc.RpcError", "message": outcome.details() or ""}

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


def _blocking(streaming: bool) -> Callable[..., Any]:
    """``__call__`` of a unary-response call: made with ``with_call`` to see its metadata."""

    def capture(wrapped: Callable[..., Any], instance: Any, args: tuple, kwargs: dict) -> Any:
        started = _begin(instance, args, kwargs)
        if started is None:
            return wrapped(*args, **kwargs)
        args, kwargs = _with_sent(started, args, kwargs, streaming)
        with_call = wrapper_layers.original(type(instance), "with_call")
        try:
            response, call = with_call(instance, *args, **kwargs)
        except Exception as exc:
            started.failed(exc)
            raise
        started.got(response)
        started.ended(call)
        return response

    return capture


def _with_call(streaming: bool) -> Callable[..., Any]:
    def capture(wrapped: Callable[..., Any], instance: Any, args: tuple, kwargs: dict) -> Any:
        started = _begin(instance, args, kwargs)
        if started is None:
            return wrapped(*args, **kwargs)
        args, kwargs = _with_sent(started, args, kwargs, streaming)
        try:
            response, call = wrapped(*args, **kwargs)
        except Exception as exc:
            started.failed(exc)
            raise
        started.got(response)
        started.ended(call)
        return response, call

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


_channel = grpc._channel
# (class, method, wrapper): the channel's own multi-callables, which the interceptor calls
_SEAMS: tuple[tuple[type, str, Callable[..., Any]], ...] = (
    (_channel._UnaryUnaryMultiCallable, "__call__", _blocking(False)),
    (_channel._UnaryUnaryMultiCallable, "with_call", _with_call(False)),
    (_channel._UnaryUnaryMultiCallable, "future", _future(False)),
    (_channel._UnaryStreamMultiCallable, "__call__", _stream(False)),
    (_channel._SingleThreadedUnaryStreamMultiCallable, "__call__", _stream(False)),
    (_channel._StreamUnaryMultiCallable, "__call__", _blocking(True)),
    (_channel._StreamUnaryMultiCallable, "with_call", _with_call(True)),
    (_channel._StreamUnaryMultiCallable, "future", _future(True)),
    (_channel._StreamStreamMultiCallable, "__call__", _stream(True)),
)


def install() -> None:
    for owner, name, wrapper in _SEAMS:
        wrapper_layers.install(owner, name, wrapper)


def uninstall() -> None:
    for owner, name, _ in _SEAMS:
        wrapper_layers.uninstall(owner, name)
