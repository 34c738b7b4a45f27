"""aio-pika replay (aiormq underneath): a connection answered from the cassette, with no broker.

Connecting (``Connection.connect``; aiormq's ``asyncio.open_connection`` inside it) opens
nothing: aiormq gets a stand-in stream whose reader holds what the broker sent while it logged
in, or raises what connecting raised when recorded. Each method the application's code hands
aiormq (``ChannelFrame.marshall``, in the request's context) is matched as
:mod:`timetracer_otel.protocols.amqp` describes, where it is made, so a message the cassette
does not hold fails at the publish; the broker's recorded answer is read by aiormq's own
reader once the frame is written, as from a broker. aiormq's heartbeats are answered, so an
idle replayed connection stays open.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from typing import Any
from weakref import WeakKeyDictionary

import aiormq
from aiormq.abc import ChannelFrame

from timetracer_otel import wrapper_layers
from timetracer_otel._aiormq import (
    CONFIRMS,
    HEARTBEAT,
    Publishes,
    caller_connection,
    confirming,
    marshalled_requests,
    server,
    wire,
)
from timetracer_otel.protocols.amqp import live_view
from timetracer_otel.redaction import Redactor

from .rabbitmq import recorded_frames
from .session import ReplayMismatchError, ReplaySession, replay_session_for

__all__ = ["install", "uninstall"]

_LIBRARY = "aio_pika"


class _Transport:
    """What aiormq asks of a stream's transport when it closes one."""

    def abort(self) -> None:
        """Nothing is open."""

    def is_closing(self) -> bool:
        return True


class _Writer:
    """Stands in for aiormq's stream writer: nothing reaches the network; a frame written
    lets the reader have the broker's recorded answer to it, a heartbeat a heartbeat."""

    transport = _Transport()

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader
        self._answers: dict[int, tuple[bytes, bytes]] = {}  # id(payload) -> (payload, answer)
        self._closing = False

    def answer_when_written(self, payload: bytes, answer: bytes) -> None:
        self._answers[id(payload)] = (payload, answer)

    def write(self, data: Any) -> None:
        pending = self._answers.pop(id(data), None)
        if pending is not None and pending[0] is data:
            self._reader.feed_data(pending[1])
        elif bytes(data) == HEARTBEAT and not self._reader.at_eof():
            self._reader.feed_data(HEARTBEAT)

    async def drain(self) -> None:
        """Nothing waits to be sent."""

    def is_closing(self) -> bool:
        return self._closing

    def can_write_eof(self) -> bool:
        return False

    def write_eof(self) -> None:
        """Nothing was opened."""

    def close(self) -> None:
        self._closing = True
        if not self._reader.at_eof():
            self._reader.feed_eof()

    async def wait_closed(self) -> None:
        """Closed at once."""

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


class _Replayed:
    """One connection answered from a cassette: the session it was opened in, its stand-in stream."""

    def __init__(self, session: ReplaySession, server: str) -> None:
        self.session = session
        self.server = server
        self.reader = asyncio.StreamReader()
        self.writer = _Writer(self.reader)
        self.publishes = Publishes()
        self._confirming: set[int] = set()  # channels whose publishes the broker confirms

    def answer(self, request: dict[str, Any]) -> bytes:
        """The broker's recorded answer to ``request``, as bytes; raises what the recorded call
        raised, and :class:`ReplayMismatchError` for a publish the broker confirms whose confirm
        the recording does not hold (aiormq would wait for it forever)."""
        frames: list[dict[str, Any]] = recorded_frames(
            self.session, _LIBRARY, request, "aiormq", ConnectionError, _checked
        )
        channel, method = request.get("channel", 0), request.get("method")
        if method == "Channel.Open":
            self._confirming.discard(channel)
        elif method == "Confirm.Select":
            self._confirming.add(channel)
        elif (
            method == "Basic.Publish"
            and channel in self._confirming
            and not any(f["method"] in _SETTLING for f in frames)
        ):
            raise ReplayMismatchError(
                live_view(request, Redactor()).label,
                _LIBRARY,
                "(the publish's recorded answer)",
                "The broker confirms this channel's publishes, and the recording holds no confirm of\n"
                "this one (its confirm came after the request ended): aiormq would wait for it forever.",
            )
        return wire(confirming(frames, self.publishes.sent(request)))

    def open(self) -> tuple[asyncio.StreamReader, _Writer]:
        self.reader.feed_data(self.answer({"server": self.server, "connect": True}))
        return self.reader, self.writer


def _checked(methods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The broker's recorded methods, once pamqp frames them (the live delivery tag comes after)."""
    wire(methods)
    return methods


# what ends a publish on a confirming channel: its confirm, or the broker returning it first
_SETTLING = CONFIRMS | {"Basic.Return"}
_connections: WeakKeyDictionary[Any, _Replayed] = WeakKeyDictionary()
_opening: contextvars.ContextVar[_Replayed | None] = contextvars.ContextVar(
    "timetracer_aio_pika_replay_opening", default=None
)


async def _connecting(wrapped: Callable[..., Any], client: Any, args: tuple, kwargs: dict) -> Any:
    broker = server(client)
    session = replay_session_for(_LIBRARY, lambda: f"AMQP {broker} (connect)")
    if session is None:
        return await wrapped(*args, **kwargs)
    replayed = _connections[client] = _Replayed(session, broker)
    token = _opening.set(replayed)
    try:
        return await wrapped(*args, **kwargs)
    finally:
        _opening.reset(token)


async def _open_connection(wrapped: Callable[..., Any], _: Any, args: tuple, kwargs: dict) -> Any:
    replayed = _opening.get()
    if replayed is None:
        return await wrapped(*args, **kwargs)
    return replayed.open()


def _marshalling(wrapped: Callable[..., Any], _: Any, args: tuple, kwargs: dict) -> Any:
    marshalled = wrapped(*args, **kwargs)
    replayed = _connections.get(caller_connection())
    if replayed is None:
        return marshalled
    answer = b"".join(
        replayed.answer(request) for request in marshalled_requests(replayed.server, args, kwargs)
    )
    if answer:
        replayed.writer.answer_when_written(marshalled.payload, answer)
    return marshalled


_SEAMS = (
    (aiormq.Connection, "connect", _connecting),
    (asyncio, "open_connection", _open_connection),
    (ChannelFrame, "marshall", _marshalling),
)


def install() -> None:
    wrapper_layers.install_all(_SEAMS, layer="replay")


def uninstall() -> None:
    wrapper_layers.uninstall_all(_SEAMS, layer="replay")
