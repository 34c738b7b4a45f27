"""AMQP 0-9-1 calls (RabbitMQ) as cassette data: the request shape, secret redaction, and the matching view.

A call is one method the client sends on a connection, its response the methods the server
sent before the client's next one (none for a publish without confirms). Its request is one of

- ``{"server": "host:port", "connect": true}``: opening the connection; its response holds
  the server's ``Connection.Start``;
- ``{"server", "wait": true}``: what the broker sent while the client waited, for a request
  that sent nothing on the connection before (deliveries to a consumer started by an earlier
  request, such as the reply queue of Celery's ``rpc://`` result backend);
- ``{"server", "channel": 1, "method": "Basic.Publish", "args": [0, "", "celery", false, false]}``:
  a method and its arguments in the protocol's order, with ``"content": {"properties": {...},
  "body": ...}`` for a method that carries a message (the body as text when it is UTF-8).

Its response is ``{"frames": [{"channel": 1, "method": "Queue.DeclareOk", "args": [...]}, ...]}``,
a delivered message with its ``content`` too.

Secrets (:func:`redact`): the credentials of ``Connection.StartOk`` and
``Connection.SecureOk``, message headers named like a secret, and members named like one
in a JSON body.

Matching compares what the application asked for, less what belongs to the process: the
channel number (channels are numbered as they are opened, by whichever request opens one
first), the client's properties (library versions) and a message's ``reply_to`` and
``origin`` header (Celery writes the process id and host name there), as for kombu's
messages over Redis. Works on plain values: it never imports a client library.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from timetracer_otel.cassette.calls import CassetteCall, call_document
from timetracer_otel.cassette.values import decode_value, encode_value
from timetracer_otel.secret_names import SecretNames

from . import typed
from .trace_context import without_trace_context
from .view import CallView, server_view

__all__ = [
    "METHODS",
    "SIGNATURES",
    "broker_address",
    "broker_name",
    "method_name",
    "method_request",
    "sent_request",
    "frame",
    "redact",
    "request_view",
    "live_view",
    "recorded_view",
    "usual_answer",
]

_CLASSES = {
    10: ("Connection", {10: "Start", 11: "StartOk", 20: "Secure", 21: "SecureOk", 30: "Tune",
                        31: "TuneOk", 40: "Open", 41: "OpenOk", 50: "Close", 51: "CloseOk",
                        60: "Blocked", 61: "Unblocked", 70: "UpdateSecret", 71: "UpdateSecretOk"}),
    20: ("Channel", {10: "Open", 11: "OpenOk", 20: "Flow", 21: "FlowOk", 40: "Close", 41: "CloseOk"}),
    40: ("Exchange", {10: "Declare", 11: "DeclareOk", 20: "Delete", 21: "DeleteOk", 30: "Bind",
                      31: "BindOk", 40: "Unbind", 51: "UnbindOk"}),
    50: ("Queue", {10: "Declare", 11: "DeclareOk", 20: "Bind", 21: "BindOk", 30: "Purge",
                   31: "PurgeOk", 40: "Delete", 41: "DeleteOk", 50: "Unbind", 51: "UnbindOk"}),
    60: ("Basic", {10: "Qos", 11: "QosOk", 20: "Consume", 21: "ConsumeOk", 30: "Cancel",
                   31: "CancelOk", 40: "Publish", 50: "Return", 60: "Deliver", 70: "Get",
                   71: "GetOk", 72: "GetEmpty", 80: "Ack", 90: "Reject", 100: "RecoverAsync",
                   110: "Recover", 111: "RecoverOk", 120: "Nack"}),
    85: ("Confirm", {10: "Select", 11: "SelectOk"}),
    90: ("Tx", {10: "Select", 11: "SelectOk", 20: "Commit", 21: "CommitOk", 30: "Rollback",
                31: "RollbackOk"}),
}  # fmt: skip
# each method of AMQP 0-9-1 by its (class id, method id), and back
METHODS: dict[tuple[int, int], str] = {
    (class_id, method_id): f"{class_name}.{method_name}"
    for class_id, (class_name, methods) in _CLASSES.items()
    for method_id, method_name in methods.items()
}
SIGNATURES: dict[str, tuple[int, int]] = {name: sig for sig, name in METHODS.items()}

_CREDENTIALS = {"Connection.StartOk": 2, "Connection.SecureOk": 0}  # the argument holding them
# a process's own identity in a message: Celery's reply queue and its "gen<pid>@<host>" origin
_OWN_PROPERTIES = frozenset({"reply_to"})
_OWN_HEADERS = frozenset({"origin"})


_PORT = 5672


def broker_address(host: str) -> str:
    """``host:port`` of the broker a client's ``host`` setting names (``rabbit``, ``rabbit:5673``,
    ``[::1]:5672``, ``::1``), its port AMQP's where it names none, as calls name their server."""
    if host.startswith("["):
        name, _, rest = host[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif host.count(":") == 1:
        name, _, port = host.partition(":")
    else:  # a bare name, or an IPv6 address without brackets
        name, port = host, ""
    return broker_name(name, int(port) if port.isdecimal() else _PORT)


def broker_name(host: str, port: int) -> str:
    """``host:port`` (an IPv6 address in brackets), as calls name their server."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def method_name(sig: Sequence[int]) -> str:
    """A method's name (``Basic.Publish``) by its signature; unknown ones as their numbers."""
    return METHODS.get((sig[0], sig[1]), f"{sig[0]}.{sig[1]}")


def _content(body: Any, properties: dict[str, Any]) -> dict[str, Any]:
    if isinstance(body, (bytes, bytearray, memoryview)):
        try:
            body = bytes(body).decode("utf-8")
        except UnicodeDecodeError:
            body = bytes(body)
    return {"properties": dict(properties), "body": body}


def method_request(
    server: str, channel: int, sig: Sequence[int], args: Any, content: Any = None
) -> dict[str, Any]:
    """The request of a method the client sends; ``content``: a message's (body, properties)."""
    request: dict[str, Any] = {
        "server": server,
        "channel": channel,
        "method": method_name(sig),
        "args": list(args or ()),
    }
    if content is not None:
        request["content"] = _content(*content)
    return request


def sent_request(channel: Any, args: tuple, kwargs: dict) -> dict[str, Any]:
    """The request of the method py-amqp's ``AbstractChannel.send_method(*args, **kwargs)`` sends
    on ``channel`` (a channel, or the connection as channel 0)."""
    given = {**dict(zip(("sig", "format", "args", "content"), args, strict=False)), **kwargs}
    content = given.get("content")
    return method_request(
        broker_address(channel.connection.host),
        channel.channel_id,
        given["sig"],
        given.get("args") if given.get("format") else (),
        None if content is None else (content.body, content.properties),
    )


def frame(channel: int, sig: Sequence[int], args: Any, content: Any = None) -> dict[str, Any]:
    """One method the server sent, as a response holds it."""
    found: dict[str, Any] = {"channel": channel, "method": method_name(sig), "args": list(args)}
    if content is not None:
        found["content"] = _content(*content)
    return found


# --------------------------------------------------------------------------- secrets
def _hide_content(content: Any, names: SecretNames, hide: typed.Hide) -> None:
    if not isinstance(content, dict):
        return
    properties = content.get("properties")
    if isinstance(properties, dict):
        typed.hide_named_fields(properties.get("application_headers"), names, hide)
    if "body" in content:
        content["body"] = typed.with_secret_members_hidden(content["body"], names, hide)


def redact(
    request: dict[str, Any], response: dict[str, Any] | None, names: SecretNames, hide: typed.Hide
) -> None:
    """Hide, in place, credentials, message headers named like a secret and such members of a
    JSON body (in cassette form)."""
    position = _CREDENTIALS.get(request.get("method", ""))
    args = request.get("args")
    if position is not None and isinstance(args, list):
        typed.hide_at(args, [position], hide)
    _hide_content(request.get("content"), names, hide)
    for sent in (response or {}).get("frames", ()):
        if isinstance(sent, dict):
            _hide_content(sent.get("content"), names, hide)


# --------------------------------------------------------------------------- matching
def _canonical(value: Any) -> str:
    return without_trace_context(
        json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=repr)
    )


def _compared_content(content: dict[str, Any]) -> dict[str, Any]:
    """A message less its sender's identity (``reply_to``, an ``origin`` header)."""
    properties = {
        name: value
        for name, value in (content.get("properties") or {}).items()
        if name not in _OWN_PROPERTIES
    }
    headers = properties.get("application_headers")
    if isinstance(headers, dict):
        properties["application_headers"] = {
            name: value for name, value in headers.items() if name not in _OWN_HEADERS
        }
    return {"properties": properties, "body": content.get("body")}


def _compared_args(method: str, args: list[Any]) -> list[Any]:
    if method == "Connection.StartOk":  # the client's properties: library versions
        return args[1:2] + args[3:]
    return args


def _shown(method: str, args: list[Any]) -> str:
    """The arguments a reader names a call by: the exchange and routing key of a publish, else
    the first few that are words."""
    if method == "Basic.Publish" and len(args) >= 3:
        return f"exchange={args[1]!r} routing_key={args[2]!r}"
    if method in _CREDENTIALS:
        return ""
    return " ".join(str(a) for a in args if isinstance(a, str) and a)[:80]


def request_view(request: dict[str, Any]) -> CallView:
    """The view of an AMQP call's request (secrets already hidden like a recording's)."""
    server = str(request.get("server", ""))
    key: tuple[Any, ...]
    fields: dict[str, Any]
    if request.get("connect"):
        what, key, fields = "(connect)", ("connect",), {}
    elif request.get("wait"):
        what, key, fields = "(waiting for the broker)", ("wait",), {}
    else:
        method = str(request.get("method", ""))
        args = _compared_args(method, list(request.get("args") or ()))
        content = request.get("content")
        compared = _compared_content(content) if isinstance(content, dict) else None
        what = f"{method} {_shown(method, args)}".rstrip()
        key = ("method", method, _canonical(args), _canonical(compared))
        fields = {"method": method, "args": _canonical(args)}
        if compared is not None:
            fields["properties"] = _canonical(compared["properties"])
            fields["body"] = _canonical(compared["body"])
    return server_view("amqp", server, what, key, fields)


def live_view(request: dict[str, Any], redactor: Any) -> CallView:
    """The view of a call being made, its secrets hidden by ``redactor`` (a
    :class:`~timetracer_otel.redaction.Redactor`) as the recording's were."""
    if redactor is None:
        return request_view(request)
    return request_view(decode_value(redactor.protocol_request("amqp", encode_value(request))))


def recorded_view(call: CassetteCall) -> CallView:
    """The view of a recorded AMQP call."""
    return request_view(call.decoded_request())


# Methods whose usual answer carries nothing: what a broker says to them, for a process
# replaying without its recording (an app closing at shutdown a connection it opened at start).
_USUAL = {"Connection.Close": "Connection.CloseOk", "Channel.Close": "Channel.CloseOk"}


def usual_answer(view: CallView) -> dict[str, Any] | None:
    """The call document of a broker's usual answer to closing a channel or a connection, or None."""
    key = view.key
    if not isinstance(key, tuple) or len(key) < 4 or key[2] != "method":
        return None
    answer = _USUAL.get(key[3])
    if answer is None:
        return None
    channel = 0 if answer.startswith("Connection.") else 1  # given the caller's channel in replay
    response = {"frames": [{"channel": channel, "method": answer, "args": []}]}
    return call_document("amqp", None, encode_value(response))
