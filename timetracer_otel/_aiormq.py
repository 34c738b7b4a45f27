"""What aio-pika's capture and replay share about aiormq, the client under aio-pika and
FastStream: its connections, and AMQP 0-9-1 frames as pamqp (aiormq's) reads and writes them,
turned into the methods :mod:`timetracer_otel.protocols.amqp` stores and back.

Capture reads the broker's bytes with :class:`Incoming` and the client's frames as aiormq hands
them to be sent with :func:`marshalled_requests`; replay writes the recorded methods back as bytes
with :func:`wire`. A message's properties keep py-amqp's names (``application_headers``,
``type``), so a cassette reads the same whichever client recorded it.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Iterable, Iterator
from types import FrameType
from typing import Any

import aiormq
import pamqp.commands
import pamqp.frame
from pamqp.body import ContentBody
from pamqp.header import ContentHeader
from pamqp.heartbeat import Heartbeat

from timetracer_otel.protocols.amqp import SIGNATURES, broker_name, frame, method_request

__all__ = [
    "CONFIRMS",
    "HEARTBEAT",
    "Incoming",
    "Publishes",
    "caller_connection",
    "confirming",
    "marshalled_requests",
    "server",
    "wire",
]

HEARTBEAT = pamqp.frame.marshal(Heartbeat(), 0)
_PROTOCOL_HEADER = b"AMQP"
_RENAMED = {"headers": "application_headers", "message_type": "type"}  # pamqp's -> py-amqp's
_PAMQP_NAMES = {ours: theirs for theirs, ours in _RENAMED.items()}
_CONTENT_METHODS = frozenset({"Basic.Publish", "Basic.Deliver", "Basic.GetOk", "Basic.Return"})
CONFIRMS = frozenset({"Basic.Ack", "Basic.Nack"})  # a broker's confirms of publishes

_PORTS = {"amqp": 5672, "amqps": 5671}
_LOOKED_UP = 4  # frames looked through for the code that called ChannelFrame.marshall


def server(connection: Any) -> str:
    """``host:port`` of the broker an aiormq connection is for."""
    url = connection.url
    return broker_name(url.host or "localhost", url.port or _PORTS.get(url.scheme, 5672))


def caller_connection() -> Any:
    """The aiormq connection whose channel (or which itself) is marshalling frames: the code
    that called the wrapper of ``ChannelFrame.marshall`` calling this."""
    frame: FrameType | None = sys._getframe(2)
    for _ in range(_LOOKED_UP):
        if frame is None:
            return None
        caller = frame.f_locals.get("self")
        if isinstance(caller, aiormq.Connection):
            return caller
        if isinstance(caller, aiormq.Channel):
            return caller.connection
        frame = frame.f_back
    return None


# one method, and the message it carries: (channel, method, (body, properties) or None)
Method = tuple[int, Any, tuple[bytes, dict[str, Any]] | None]


def _properties(header: ContentHeader) -> dict[str, Any]:
    """A message's properties that are set, under py-amqp's names."""
    return {
        _RENAMED.get(name, name): value
        for name, value in header.properties
        if value is not None and not (name == "cluster_id" and value == "")
    }


class _Messages:
    """Methods as they complete on each channel: one carrying a message waits for its header
    and body frames."""

    def __init__(self) -> None:
        self._open: dict[int, tuple[Any, ContentHeader | None, bytearray]] = {}

    def add(self, channel: int, part: Any) -> Method | None:
        if isinstance(part, Heartbeat):
            return None
        if isinstance(part, ContentHeader):
            method, _, body = self._open[channel]
            self._open[channel] = (method, part, body)
        elif isinstance(part, ContentBody):
            self._open[channel][2].extend(part.value)
        elif _carries_content(part):
            self._open[channel] = (part, None, bytearray())
        else:
            return (channel, part, None)
        method, header, body = self._open[channel]
        if header is None or len(body) < header.body_size:
            return None
        del self._open[channel]
        return (channel, method, (bytes(body), _properties(header)))


def _carries_content(method: Any) -> bool:
    return getattr(method, "name", "") in _CONTENT_METHODS


def _args(method: Any) -> list[Any]:
    return [value for _, value in method]


def marshalled_requests(server: str, args: tuple, kwargs: dict) -> Iterator[dict[str, Any]]:
    """The request of each method ``ChannelFrame.marshall(*args, **kwargs)`` puts into one write
    to ``server``; heartbeats are none."""
    given = {**dict(zip(("channel_number", "frames"), args, strict=False)), **kwargs}
    channel, messages = given["channel_number"], _Messages()
    for part in given["frames"]:
        done = messages.add(channel, part)
        if done is not None:
            sig = SIGNATURES.get(done[1].name, (0, 0))
            yield method_request(server, channel, sig, _args(done[1]), done[2])


class Publishes:
    """The publishes on each channel by delivery tag, as a broker numbers them in its confirms:
    from 1 on each channel opened. Publishes overlap on a channel (concurrent requests), and a
    confirm may cover several (``multiple``): each is given its own."""

    def __init__(self) -> None:
        self._count: dict[int, int] = {}
        self._unconfirmed: dict[int, dict[int, Any]] = {}

    def sent(self, request: dict[str, Any], publish: Any = None) -> int:
        """The delivery tag of ``request`` (0 for what is not a publish); ``publish``: what
        :meth:`confirmed` gives back for it."""
        channel, method = request.get("channel", 0), request.get("method")
        if method == "Channel.Open":
            self._count[channel] = 0
            self._unconfirmed[channel] = {}
        if method != "Basic.Publish":
            return 0
        tag = self._count[channel] = self._count.get(channel, 0) + 1
        if publish is not None:
            self._unconfirmed.setdefault(channel, {})[tag] = publish
        return tag

    def confirmed(self, confirm: dict[str, Any]) -> list[tuple[Any, dict[str, Any]]]:
        """(publish, its own confirm) of each publish a broker's ``Basic.Ack`` or ``Nack`` confirms."""
        tag, multiple, *rest = confirm["args"]
        unconfirmed = self._unconfirmed.get(confirm["channel"], {})
        tags = sorted(t for t in unconfirmed if t <= tag) if multiple else [tag]
        return [
            (unconfirmed.pop(t), {**confirm, "args": [t, False, *rest]})
            for t in tags
            if t in unconfirmed
        ]


def confirming(frames: list[dict[str, Any]], tag: int) -> list[dict[str, Any]]:
    """A publish's recorded answer, its confirm given the live ``tag``: replayed in another order
    than recorded, or alone, a publish has another delivery tag."""
    return [
        {**f, "args": [tag, False, *f["args"][2:]]} if tag and f["method"] in CONFIRMS else f
        for f in frames
    ]


class Incoming:
    """The broker's bytes on one connection, read in any pieces, as the methods they complete."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._messages = _Messages()

    def read(self, data: bytes) -> list[dict[str, Any]]:
        """The methods ``data`` completes, as a response's frames."""
        self._buffer.extend(data)
        done = []
        while len(self._buffer) >= 7:
            if self._buffer.startswith(_PROTOCOL_HEADER):  # a broker refusing our version
                del self._buffer[:8]
                continue
            size = 7 + struct.unpack_from(">I", self._buffer, 3)[0] + 1
            if len(self._buffer) < size:
                break
            _, channel, part = pamqp.frame.unmarshal(bytes(self._buffer[:size]))
            del self._buffer[:size]
            method = self._messages.add(channel, part)
            if method is not None:
                channel, found, content = method
                sig = SIGNATURES.get(found.name, (0, 0))
                done.append(frame(channel, sig, _args(found), content))
        return done


def _command(name: str, args: list[Any]) -> Any:
    """The pamqp method ``name`` with the broker's ``args``; one whose reserved argument pamqp
    refuses as the broker sent it (``Channel.OpenOk``'s, empty from RabbitMQ, ``'0'`` to pamqp)
    with pamqp's own values, which no client reads."""
    class_name, _, method_name = name.partition(".")
    cls = getattr(getattr(pamqp.commands, class_name), method_name)
    try:
        return cls(*args)
    except ValueError:
        return cls()


def wire(sent: Iterable[dict[str, Any]]) -> bytes:
    """The bytes of the broker's methods ``sent`` (a response's frames, channels already the live ones)."""
    out = bytearray()
    for method in sent:
        channel = method["channel"]
        out += pamqp.frame.marshal(_command(method["method"], method["args"]), channel)
        content = method.get("content")
        if content is None:
            continue
        body = content.get("body", b"")
        properties = content.get("properties") or {}
        if isinstance(body, str):
            body = body.encode(properties.get("content_encoding") or "utf-8")
        named = {_PAMQP_NAMES.get(k, k): v for k, v in properties.items()}
        header = ContentHeader(0, len(body), pamqp.commands.Basic.Properties(**named))
        out += pamqp.frame.marshal(header, channel)
        if body:
            out += pamqp.frame.marshal(ContentBody(body), channel)
    return bytes(out)
