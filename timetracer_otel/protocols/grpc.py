"""gRPC calls as cassette data: the request shape, secret redaction, and the matching view.

A call's request is ``{"method", "metadata", "messages"}``: the full method path
(``/package.Service/Method``), the invocation metadata as ``[key, value]`` pairs (values
of ``-bin`` keys are bytes), and the request messages, one for a unary request and every
message sent for a streaming one. Its response is ``{"code", "details",
"initial_metadata", "trailing_metadata", "messages"}``: the status code's name (``"OK"``,
``"NOT_FOUND"``, ...), its details, both metadata lists, and the response messages
received (before the error, for a failed stream). A call that ended with a status other
than ``OK`` also has an ``error`` (``grpc.RpcError`` and the details).

A message is ``{"type", "json"}``: the protobuf message's full type name and the message
as ``google.protobuf.json_format`` writes it (proto field names), which is readable,
diffable and rebuilds the same message. When it would not (the message carries fields
its type does not declare, which JSON drops), ``"bytes"`` holds its serialized form too,
and replay rebuilds the message from those. A message that is not a protobuf message
(a channel with serializers of its own) is ``{"type", "bytes"}``. Capture and replay
build messages with :mod:`timetracer_otel._grpc_messages`; this module never imports
grpc or protobuf, so any cassette loads wherever timetracer does.

Secrets (:func:`redact`): metadata entries whose key is named like a secret header
(``authorization``, ``*token*``, ``cookie``, ...) and message fields named like a secret
field, at any depth. A message with a hidden field has its ``bytes`` hidden too (they
hold the same secret).

A call's signature is its method, its request messages and its invocation metadata less
the entries that change per run: OpenTelemetry's trace context (``traceparent``,
``tracestate``, ``baggage``) and what the transport sets (``user-agent``,
``grpc-timeout``, ``grpc-*`` encodings). A timeout is not part of it either.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from timetracer_otel.cassette.calls import CassetteCall
from timetracer_otel.cassette.values import decode_value, encode_value
from timetracer_otel.secret_names import SecretNames

from . import typed
from .trace_context import without_trace_context
from .view import CallView, cut_label

if TYPE_CHECKING:
    from timetracer_otel.redaction import Redactor

__all__ = [
    "VOLATILE_METADATA",
    "call_request",
    "call_response",
    "redact",
    "request_view",
    "live_view",
    "recorded_view",
]

VOLATILE_METADATA = frozenset(
    {
        "traceparent",
        "tracestate",
        "baggage",
        "user-agent",
        "grpc-timeout",
        "grpc-encoding",
        "grpc-accept-encoding",
    }
)


def call_request(
    method: str, metadata: list[list[Any]], messages: list[dict[str, Any]]
) -> dict[str, Any]:
    """The request of a call of ``method`` (its full path) with ``metadata`` sending ``messages``."""
    return {"method": method, "metadata": metadata, "messages": messages}


def call_response(
    code: str,
    details: str,
    initial_metadata: list[list[Any]],
    trailing_metadata: list[list[Any]],
    messages: list[dict[str, Any]],
) -> dict[str, Any]:
    """The response of a call that ended with status ``code`` (its name) after ``messages``."""
    return {
        "code": code,
        "details": details,
        "initial_metadata": initial_metadata,
        "trailing_metadata": trailing_metadata,
        "messages": messages,
    }


# --------------------------------------------------------------------------- secrets
def _hide_metadata(pairs: Any, names: SecretNames, hide: typed.Hide) -> None:
    for pair in pairs if isinstance(pairs, list) else ():
        if isinstance(pair, list) and len(pair) == 2 and names.header(typed.text(pair[0]) or ""):
            pair[1] = hide(pair[1])


def _hide_messages(messages: Any, names: SecretNames, hide: typed.Hide) -> None:
    for message in messages if isinstance(messages, list) else ():
        if isinstance(message, dict):
            _hide_message(message, names, hide)


def _hide_message(message: dict[str, Any], names: SecretNames, hide: typed.Hide) -> None:
    """Hide the secret fields of one message; its bytes too when it had any."""
    hidden: list[Any] = []

    def noted(value: Any) -> Any:
        hidden.append(value)
        return hide(value)

    typed.hide_named_fields(message.get("json"), names, noted)
    if hidden and "bytes" in message:
        message["bytes"] = hide(message["bytes"])


def redact(
    request: dict[str, Any], response: dict[str, Any] | None, names: SecretNames, hide: typed.Hide
) -> None:
    """Hide, in place, the secret metadata entries and message fields of a call in cassette form."""
    _hide_metadata(request.get("metadata"), names, hide)
    _hide_messages(request.get("messages"), names, hide)
    if isinstance(response, dict):
        _hide_metadata(response.get("initial_metadata"), names, hide)
        _hide_metadata(response.get("trailing_metadata"), names, hide)
        _hide_messages(response.get("messages"), names, hide)


# --------------------------------------------------------------------------- matching
def _canonical(value: Any) -> str:
    return without_trace_context(
        json.dumps(encode_value(value), ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    )


def _significant_metadata(metadata: Any) -> list[tuple[str, str]]:
    pairs = [
        (str(key).lower(), _canonical(value))
        for key, value in (metadata or ())
        if str(key).lower() not in VOLATILE_METADATA
    ]
    return sorted(pairs)


def _shown_message(message: Any) -> str:
    if isinstance(message, dict) and "json" in message:
        return json.dumps(message["json"], ensure_ascii=False, sort_keys=True)
    return _canonical(message)


def request_view(request: dict[str, Any]) -> CallView:
    """The view of a gRPC call request (plain values, secrets already hidden like a recording's)."""
    method = str(request["method"])
    messages = list(request.get("messages") or ())
    metadata = _significant_metadata(request.get("metadata"))
    shown = [_shown_message(message) for message in messages]
    return CallView(
        protocol="grpc",
        label=cut_label(f"{method} {'; '.join(shown)}"),
        key=(
            "grpc",
            method,
            tuple(_canonical(message) for message in messages),
            tuple(metadata),
        ),
        fields={
            "method": method,
            "messages": shown,
            "metadata": [f"{key}: {value}" for key, value in metadata],
        },
    )


def live_view(request: dict[str, Any], redactor: Redactor | None) -> CallView:
    """The view of a call being made, its secrets hidden by ``redactor`` as the recording's were."""
    if redactor is None:
        return request_view(request)
    return request_view(decode_value(redactor.protocol_request("grpc", encode_value(request))))


def recorded_view(call: CassetteCall) -> CallView:
    """The view of a recorded gRPC call."""
    return request_view(call.decoded_request())
