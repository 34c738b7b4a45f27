"""py-amqp replay: a connection answered from the cassette, with no broker.

Opening a connection (``Connection.Transport``) gives a stand-in transport: connecting raises
what connecting raised when recorded (``ConnectionRefusedError``), else hands the client the
recorded ``Connection.Start``. Each method the client sends (``AbstractChannel.send_method``)
is matched as :mod:`timetracer_otel.protocols.amqp` describes, and the methods the broker
sent back to it are what the client reads next, framed as the broker framed them, on the
channel the client sent from. Everything above (the handshake, ``channel()``,
``basic_publish``, kombu's producers, Celery's ``delay``) is py-amqp's and kombu's own code,
running as it did. A client waiting for a method the recording does not hold gets
``socket.timeout`` when it waits with a timeout (what a broker with nothing to say gives),
else :class:`ReplayMismatchError`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from struct import pack
from typing import Any

import amqp
from amqp.abstract_channel import AbstractChannel
from amqp.serialization import dumps

from timetracer_otel import wrapper_layers
from timetracer_otel.protocols.amqp import SIGNATURES, broker_address, live_view, sent_request
from timetracer_otel.redaction import Redactor

from .rabbitmq import framed_answer, recorded_frames
from .session import ReplayMismatchError, ReplaySession, replay_session_for

__all__ = ["install", "uninstall"]

_LIBRARY = "amqp"


def _framed(methods: Iterable[dict[str, Any]]) -> list[tuple[int, int, bytes]]:
    """The frames of the broker's recorded methods."""
    return [frame for sent in methods for frame in _method_frames(sent)]


def _method_frames(sent: dict[str, Any]) -> list[tuple[int, int, bytes]]:
    """The frames (type, channel, payload) the broker sent for one recorded method."""
    channel = sent["channel"]
    sig = SIGNATURES[sent["method"]]
    owner = amqp.Connection if channel == 0 else amqp.Channel
    method = owner._METHODS.get(sig)
    arguments = dumps(method.args, sent["args"]) if method is not None and method.args else b""
    frames = [(1, channel, pack(">HH", *sig) + arguments)]
    content = sent.get("content")
    if content is not None:
        body = content.get("body", b"")
        properties = content.get("properties") or {}
        if isinstance(body, str):
            body = body.encode(properties.get("content_encoding") or "utf-8")
        header = amqp.Message(**properties)._serialize_properties()
        frames.append((2, channel, pack(">HHQ", sig[0], 0, len(body)) + header))
        if body:
            frames.append((3, channel, body))
    return frames


class _Replayed:
    """Stands in for a py-amqp transport answered from a cassette: nothing reaches the network;
    what the broker sent is read frame by frame."""

    def __init__(self, session: ReplaySession, server: str) -> None:
        self.session = session
        self.server = server
        self.connected = False
        self.sock = None
        self._incoming: deque[tuple[int, int, bytes]] = deque()
        self._timeout: float | None = None
        self._last: dict[str, Any] = {"server": server, "connect": True}  # the last method sent

    def _shown(self) -> str:
        """The last method sent, as an error names it (its secrets hidden)."""
        return live_view(self._last, Redactor()).label

    def answer(self, request: dict[str, Any]) -> None:
        """Queue the recorded answer to ``request``; raise what the recorded call raised."""
        self._last = request
        self._incoming.extend(
            recorded_frames(self.session, _LIBRARY, request, _LIBRARY, ConnectionError, _framed)
        )

    def _waited(self) -> bool:
        """Whether the broker sent something, when recorded, while the client waited in the
        request now replayed: queued if so. Not a mismatch when not: a wait may time out."""
        request = {"server": self.server, "wait": True}
        session = replay_session_for(_LIBRARY, self._shown) or self.session
        recorded = session.take_due(_LIBRARY, live_view(request, None))
        if recorded is not None:
            self._incoming.extend(
                framed_answer(session, recorded.call, request, self._shown, _framed)
            )
        return bool(self._incoming)

    def connect(self) -> None:
        self.answer({"server": self.server, "connect": True})
        self.connected = True

    @contextmanager
    def having_timeout(self, timeout: float | None) -> Iterator[None]:
        self._timeout = timeout
        try:
            yield None
        finally:
            self._timeout = None

    def read_frame(self, unpack: Any = None) -> tuple[int, int, bytes]:
        if self._incoming or self._waited():
            return self._incoming.popleft()
        if self._timeout is not None:
            raise TimeoutError("timed out")  # socket.timeout
        raise ReplayMismatchError(
            f"{self._shown()} (waiting for the broker)",
            _LIBRARY,
            "(the recording)",
            "The client waits, with no timeout, for a method the broker did not send when recorded.",
        )

    def write(self, data: Any) -> None:
        """What the client sends was matched method by method already."""

    def close(self) -> None:
        self.connected = False


def _transport(wrapped: Callable[..., Any], connection: Any, args: tuple, kwargs: dict) -> Any:
    server = broker_address(connection.host)
    session = replay_session_for(_LIBRARY, lambda: f"AMQP {server} (connect)")
    if session is None:
        return wrapped(*args, **kwargs)
    return _Replayed(session, server)


def _sending(wrapped: Callable[..., Any], channel: Any, args: tuple, kwargs: dict) -> Any:
    connection = channel.connection
    replayed = getattr(connection, "_transport", None) if connection is not None else None
    if isinstance(replayed, _Replayed):
        replayed.answer(sent_request(channel, args, kwargs))
    return wrapped(*args, **kwargs)


_SEAMS = (
    (amqp.Connection, "Transport", _transport),
    (AbstractChannel, "send_method", _sending),
)


def install() -> None:
    wrapper_layers.install_all(_SEAMS, layer="replay")


def uninstall() -> None:
    wrapper_layers.uninstall_all(_SEAMS, layer="replay")
