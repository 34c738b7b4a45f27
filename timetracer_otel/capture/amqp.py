"""py-amqp capture (RabbitMQ; what kombu's ``amqp://`` transport and Celery publish with):
each method the client sends, as one call, with the methods the server sent back before the
next one.

Three seams every method passes: ``Connection.connect`` (the connection's opening, a call
whose response is the server's ``Connection.Start``; a refusal is its error),
``AbstractChannel.send_method`` (each method a channel or the connection sends) and
``Connection.on_inbound_method`` (each method the server sends, added to the response of
the connection's last call, or of a ``wait`` call when it is read for another request than
that call's: a task's result delivered to a reply queue consumed since an earlier request).
Heartbeats are neither. The shapes are
:mod:`timetracer_otel.protocols.amqp`'s.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from weakref import WeakKeyDictionary

import amqp
from amqp.abstract_channel import AbstractChannel
from amqp.serialization import loads

from timetracer_otel import wrapper_layers
from timetracer_otel._diagnostics import guarded
from timetracer_otel._recording import ProtocolCall, current_recording, exception_info
from timetracer_otel.protocols.amqp import broker_address, frame, sent_request

__all__ = ["install", "uninstall"]

_LIBRARY = "amqp"
# each open connection's last call, whose response its incoming methods go to, and the
# recording holding it (None, None: not recorded)
_last_call: WeakKeyDictionary[Any, tuple[ProtocolCall | None, Any]] = WeakKeyDictionary()


def _begin(connection: Any, request: dict[str, Any]) -> ProtocolCall | None:
    """Make ``request`` the connection's current call, kept when a request (or the process) is recorded."""
    recording = current_recording()
    call = None
    if recording is not None:
        call = ProtocolCall("amqp", _LIBRARY, request, response={"frames": []})
        recording.add_call(call)
    _last_call[connection] = (call, recording)
    return call


def _connecting(wrapped: Callable[..., Any], connection: Any, args: tuple, kwargs: dict) -> Any:
    if connection.connected:
        return wrapped(*args, **kwargs)
    call = None
    with guarded("amqp.connect"):
        call = _begin(connection, {"server": broker_address(connection.host), "connect": True})
    try:
        return wrapped(*args, **kwargs)
    except Exception as exc:
        if call is not None and not call.response["frames"]:  # type: ignore[index]
            with guarded("amqp.connect"):
                call.error = exception_info(exc)
        raise


def _sending(wrapped: Callable[..., Any], channel: Any, args: tuple, kwargs: dict) -> Any:
    with guarded("amqp.send"):
        if channel.connection is not None:
            _begin(channel.connection, sent_request(channel, args, kwargs))
    return wrapped(*args, **kwargs)


def _receiving(wrapped: Callable[..., Any], connection: Any, args: tuple, kwargs: dict) -> Any:
    with guarded("amqp.receive"):
        call, recording = _last_call.get(connection, (None, None))
        if recording is not current_recording():  # read for another request than the last call's
            call = _begin(connection, {"server": broker_address(connection.host), "wait": True})
        if call is not None:
            channel_id, sig, payload, content = args[:4]
            receiver = connection.channels.get(channel_id) if connection.channels else None
            method = receiver._METHODS.get(sig) if receiver is not None else None
            values = loads(method.args, payload, 4)[0] if method and method.args else []
            message = None if content is None else (content.body, content.properties)
            call.response["frames"].append(frame(channel_id, sig, values, message))  # type: ignore[index]
    return wrapped(*args, **kwargs)


_SEAMS = (
    (amqp.Connection, "connect", _connecting),
    (AbstractChannel, "send_method", _sending),
    (amqp.Connection, "on_inbound_method", _receiving),
)


def install() -> None:
    wrapper_layers.install_all(_SEAMS)


def uninstall() -> None:
    wrapper_layers.uninstall_all(_SEAMS)
