"""gRPC client replay (grpcio: sync and grpc.aio channels).

Sync channels are answered under OpenTelemetry's interceptor, so their client spans still
appear: the channel's own multi-callables (``grpc._channel._UnaryUnaryMultiCallable.__call__``,
``with_call``, ``future`` and those of the other three call shapes) are replaced whole:
each call is answered from the cassette and nothing is handed to gRPC's core, so no
connection is opened (a channel connects on its first call, never on creation). A call
that ended with a status other than ``OK`` raises a ``grpc.RpcError`` with the recorded
code, details and metadata, as gRPC does; a streaming call yields the recorded messages
and then raises it.

A grpc.aio multi-callable's ``__call__`` is replaced whole too (interceptors included: a
replayed aio call makes no client span) and returns a call answered from the cassette
(:class:`_AioReplayed`), which raises ``grpc.aio.AioRpcError`` for a status other than ``OK``.

A channel never connects in replay: asked for its connectivity (``channel.subscribe``,
``grpc.channel_ready_future``; an aio channel's ``get_state``, ``channel_ready``), it
reports ``READY`` at once, as the recorded channel was.

The request messages of a streaming call are all taken from the application's iterator
before the call is matched: a call whose requests wait for its responses (a chat over
one stream) cannot be replayed.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterable, AsyncIterator, Callable, Generator, Iterable, Iterator
from typing import Any

import grpc
import grpc._channel
import grpc._common
import grpc.aio._channel
from grpc._cython import cygrpc

from timetracer_otel import wrapper_layers
from timetracer_otel._grpc_messages import (
    message_entry,
    message_from,
    metadata_from,
    metadata_pairs,
)
from timetracer_otel.protocols.grpc import call_request, live_view

from .session import ReplaySession, replay_session_for, round_trip

__all__ = ["install", "uninstall"]

_METADATA_ARG = 2  # (request, timeout, metadata, ...): the position of ``metadata``


def _metadatums(pairs: Any) -> tuple[Any, ...]:
    """Recorded metadata as a sync call gives it: ``(key, value)`` named tuples (``.key``, ``.value``)."""
    return tuple(cygrpc._Metadatum(key, value) for key, value in metadata_from(pairs))


class _Replayed(grpc.RpcError, grpc.Call, grpc.Future):
    """A recorded call, ended: its response messages (an iterator of them), its status, and, when
    the status is not ``OK``, the ``RpcError`` gRPC raised (as ``grpc._channel`` makes one object
    of all three)."""

    def __init__(self, response: dict[str, Any], messages: list[Any]) -> None:
        super().__init__(response.get("details", ""))
        self._code = grpc.StatusCode[response["code"]]
        self._details = response.get("details", "")
        self._initial = _metadatums(response.get("initial_metadata"))
        self._trailing = _metadatums(response.get("trailing_metadata"))
        self._messages = messages
        self._next = 0

    @property
    def failed(self) -> bool:
        return self._code is not grpc.StatusCode.OK

    def __str__(self) -> str:
        return (
            f"<{type(self).__name__} of RPC that terminated with:\n"
            f"\tstatus = {self._code}\n\tdetails = {self._details!r}\n>"
        )

    # grpc.Call
    def initial_metadata(self) -> Any:
        return self._initial

    def trailing_metadata(self) -> Any:
        return self._trailing

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def debug_error_string(self) -> str:
        return f"replayed by timetracer: {self._code.name} {self._details!r}"

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> float:
        return 0.0  # the call has ended

    def add_callback(self, callback: Callable[[], None]) -> bool:
        return False  # the call has ended: gRPC does not take callbacks then

    # grpc.Future
    def cancel(self) -> bool:
        return False

    def cancelled(self) -> bool:
        return False

    def running(self) -> bool:
        return False

    def done(self) -> bool:
        return True

    def result(self, timeout: float | None = None) -> Any:
        if self.failed:
            raise self
        return self._messages[0] if self._messages else None

    def exception(self, timeout: float | None = None) -> Exception | None:
        return self if self.failed else None

    def traceback(self, timeout: float | None = None) -> Any:
        return self.__traceback__ if self.failed else None

    def add_done_callback(self, fn: Callable[[Any], None]) -> None:
        fn(self)

    # the response stream
    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        if self._next < len(self._messages):
            self._next += 1
            return self._messages[self._next - 1]
        if self.failed:
            raise self
        raise StopIteration

    def next(self) -> Any:
        return self.__next__()


def _failure(error: dict[str, Any]) -> Exception:
    """A recorded error that is not a gRPC status (raised in the client): its built-in class if it has one."""
    found = getattr(builtins, str(error.get("type", "")), None)
    cls = found if isinstance(found, type) and issubclass(found, Exception) else RuntimeError
    return cls(error.get("message", ""))


def _live_request(multicallable: Any, metadata: Any, messages: Iterable[Any]) -> dict[str, Any]:
    """A live call of ``multicallable`` in plain form (as capture records it)."""
    serializer = multicallable._request_serializer
    return call_request(
        grpc._common.decode(multicallable._method),
        metadata_pairs(metadata),
        [message_entry(message, serializer) for message in messages],
    )


def _request(multicallable: Any, args: tuple, kwargs: dict, streaming: bool) -> dict[str, Any]:
    """The live call's request; a stream's request messages are all taken now."""
    name = "request_iterator" if streaming else "request"
    head = kwargs[name] if name in kwargs else args[0]
    metadata = args[_METADATA_ARG] if len(args) > _METADATA_ARG else kwargs.get("metadata")
    return _live_request(multicallable, metadata, head if streaming else [head])


def _recorded(
    session: ReplaySession, multicallable: Any, request: dict[str, Any]
) -> tuple[dict[str, Any], list[Any]]:
    """The recorded response answering ``request`` and its messages, rebuilt; raises the
    recorded error instead for a call that raised in the client."""
    call = session.answer("grpc", live_view(session.scrubbed(request), session.redactor)).call
    if call.response is None:  # raised in the client, or cut short
        raise _failure(call.error or {"message": "the recording holds no answer for this call"})
    response = call.decoded_response()
    deserializer = multicallable._response_deserializer
    return response, [message_from(m, deserializer) for m in response["messages"]]


def _answer(session: ReplaySession, multicallable: Any, request: dict[str, Any]) -> _Replayed:
    return _Replayed(*_recorded(session, multicallable, request))


def _replaying(streaming: bool, give: Callable[[_Replayed], Any]) -> Callable[..., Any]:
    """A replay wrapper: the answer to the call, given to the application by ``give``."""

    def replay(wrapped: Callable[..., Any], instance: Any, args: tuple, kwargs: dict) -> Any:
        method = grpc._common.decode(instance._method)
        session = replay_session_for("grpc", lambda: method)
        if session is None:
            return wrapped(*args, **kwargs)
        return give(_answer(session, instance, _request(instance, args, kwargs, streaming)))

    return replay


def _subscribe(wrapped: Callable[..., Any], channel: Any, args: tuple, kwargs: dict) -> Any:
    """``Channel.subscribe(callback, try_to_connect)``: ``READY``, without connecting."""
    session = replay_session_for("grpc", lambda: "the connectivity of a gRPC channel")
    if session is None:
        return wrapped(*args, **kwargs)
    callback = args[0] if args else kwargs["callback"]
    callback(grpc.ChannelConnectivity.READY)


# --------------------------------------------------------------------------- grpc.aio
class _AioReplayed:
    """A grpc.aio call answered from the cassette: awaitable (a unary response), async-iterable
    and readable (a response stream), writable (a request stream), with the status accessors
    of ``grpc.aio.Call``. A status other than ``OK`` raises ``grpc.aio.AioRpcError`` where gRPC
    raises it. The call is matched when it is made if its request messages are known then, else
    when the application first waits for its answer (it writes them, or they come from an async
    iterator)."""

    def __init__(
        self, session: ReplaySession, multicallable: Any, metadata: Any, requests: Any
    ) -> None:
        self._session = session
        self._multicallable = multicallable
        self._metadata = metadata
        self._requests = requests  # a list, an async iterable, or None: the application writes them
        self._written: list[Any] = []
        self._outcome: tuple[dict[str, Any], list[Any]] | None = None
        self._read = 0
        if isinstance(requests, list):
            self._settle(requests)

    def _settle(self, requests: list[Any]) -> tuple[dict[str, Any], list[Any]]:
        request = _live_request(self._multicallable, self._metadata, requests)
        self._outcome = _recorded(self._session, self._multicallable, request)
        return self._outcome

    async def _answer(self) -> tuple[dict[str, Any], list[Any]]:
        if self._outcome is not None:
            return self._outcome
        if self._requests is None:
            requests = self._written
        elif isinstance(self._requests, AsyncIterable):
            requests = [message async for message in self._requests]
        else:
            requests = list(self._requests)
        outcome = self._settle(requests)
        await round_trip()
        return outcome

    def _error(self, response: dict[str, Any]) -> grpc.aio.AioRpcError | None:
        code = grpc.StatusCode[response["code"]]
        if code is grpc.StatusCode.OK:
            return None
        return grpc.aio.AioRpcError(
            code,
            grpc.aio.Metadata(*metadata_from(response.get("initial_metadata"))),
            grpc.aio.Metadata(*metadata_from(response.get("trailing_metadata"))),
            response.get("details", ""),
            f"replayed by timetracer: {code.name}",
        )

    async def _response(self) -> Any:
        response, messages = await self._answer()
        error = self._error(response)
        if error is not None:
            raise error
        return messages[0] if messages else None

    def __await__(self) -> Generator[Any, None, Any]:
        return self._response().__await__()

    async def read(self) -> Any:
        response, messages = await self._answer()
        if self._read < len(messages):
            self._read += 1
            return messages[self._read - 1]
        error = self._error(response)
        if error is not None:
            raise error
        return grpc.aio.EOF

    async def _messages(self) -> AsyncIterator[Any]:
        while (message := await self.read()) is not grpc.aio.EOF:
            yield message

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._messages()

    async def write(self, request: Any) -> None:
        self._written.append(request)

    async def done_writing(self) -> None:
        """The requests are complete: the call is matched when the application reads its answer."""

    async def wait_for_connection(self) -> None:
        """Nothing connects in replay."""

    async def initial_metadata(self) -> grpc.aio.Metadata:
        response, _ = await self._answer()
        return grpc.aio.Metadata(*metadata_from(response.get("initial_metadata")))

    async def trailing_metadata(self) -> grpc.aio.Metadata:
        response, _ = await self._answer()
        return grpc.aio.Metadata(*metadata_from(response.get("trailing_metadata")))

    async def code(self) -> grpc.StatusCode:
        response, _ = await self._answer()
        return grpc.StatusCode[response["code"]]

    async def details(self) -> str:
        response, _ = await self._answer()
        return str(response.get("details", ""))

    async def debug_error_string(self) -> str:
        return f"replayed by timetracer: {(await self.code()).name}"

    def cancelled(self) -> bool:
        return False

    def cancel(self) -> bool:
        return False

    def done(self) -> bool:
        return self._outcome is not None

    def time_remaining(self) -> float | None:
        return None


def _aio_replaying(streaming: bool) -> Callable[..., Any]:
    """``__call__`` of a grpc.aio multi-callable: a call answered from the cassette."""

    def replay(wrapped: Callable[..., Any], instance: Any, args: tuple, kwargs: dict) -> Any:
        method = grpc._common.decode(instance._method)
        session = replay_session_for("grpc", lambda: method)
        if session is None:
            return wrapped(*args, **kwargs)
        name = "request_iterator" if streaming else "request"
        head: Any = kwargs[name] if name in kwargs else (args[0] if args else None)
        requests: Any
        if streaming and (head is None or isinstance(head, AsyncIterable)):
            requests = head  # written later, or read from an async iterator when awaited
        else:
            requests = list(head) if streaming else [head]
        return _AioReplayed(session, instance, kwargs.get("metadata"), requests)

    return replay


def _aio_state(wrapped: Callable[..., Any], channel: Any, args: tuple, kwargs: dict) -> Any:
    """An aio ``Channel.get_state(try_to_connect)`` (``channel_ready`` asks it): ``READY``, without connecting."""
    session = replay_session_for("grpc", lambda: "the connectivity of a gRPC channel")
    return wrapped(*args, **kwargs) if session is None else grpc.ChannelConnectivity.READY


def _response(replayed: _Replayed) -> Any:
    """What ``__call__`` of a unary-response call returns, or raises."""
    return replayed.result()


def _with_call(replayed: _Replayed) -> tuple[Any, grpc.Call]:
    return replayed.result(), replayed


def _call(replayed: _Replayed) -> _Replayed:
    """What ``future()`` and a streaming-response call return: the call itself."""
    return replayed


_channel = grpc._channel
_SEAMS: tuple[tuple[type, str, Callable[..., Any]], ...] = (
    (_channel._UnaryUnaryMultiCallable, "__call__", _replaying(False, _response)),
    (_channel._UnaryUnaryMultiCallable, "with_call", _replaying(False, _with_call)),
    (_channel._UnaryUnaryMultiCallable, "future", _replaying(False, _call)),
    (_channel._UnaryStreamMultiCallable, "__call__", _replaying(False, _call)),
    (_channel._SingleThreadedUnaryStreamMultiCallable, "__call__", _replaying(False, _call)),
    (_channel._StreamUnaryMultiCallable, "__call__", _replaying(True, _response)),
    (_channel._StreamUnaryMultiCallable, "with_call", _replaying(True, _with_call)),
    (_channel._StreamUnaryMultiCallable, "future", _replaying(True, _call)),
    (_channel._StreamStreamMultiCallable, "__call__", _replaying(True, _call)),
    (_channel.Channel, "subscribe", _subscribe),
    (grpc.aio._channel.Channel, "get_state", _aio_state),
    (grpc.aio._channel.UnaryUnaryMultiCallable, "__call__", _aio_replaying(False)),
    (grpc.aio._channel.UnaryStreamMultiCallable, "__call__", _aio_replaying(False)),
    (grpc.aio._channel.StreamUnaryMultiCallable, "__call__", _aio_replaying(True)),
    (grpc.aio._channel.StreamStreamMultiCallable, "__call__", _aio_replaying(True)),
)


def install() -> None:
    wrapper_layers.install_all(_SEAMS, layer="replay")


def uninstall() -> None:
    wrapper_layers.uninstall_all(_SEAMS, layer="replay")
