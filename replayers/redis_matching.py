"""Redis calls as cassette data: the request shape, secret redaction, and the matching view.

Capture and replay build a call's request with the same functions here, so a live call
and its recorded twin get equal keys. This module does not import redis: cassettes load
wherever timetracer does.

A command's key is its name (upper-cased, whitespace normalised) and its arguments as
redis-py puts them on the wire: ``str`` as UTF-8, ``int`` and ``float`` as their
``repr``, bytes-like as bytes. So ``1``, ``"1"`` and ``b"1"`` are the same argument,
while ``1.0`` is not (it is sent as ``1.0``). ``decode_responses`` is part of the key
too: the same command answers with bytes or with str depending on it.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

from timetracer_otel.cassette.values import decode_value, encode_value
from timetracer_otel.redaction import Redactor

from .matching import CallView

__all__ = [
    "command_name",
    "command_entry",
    "request_view",
    "live_view",
    "recorded_view",
    "usual_answer",
    "UNWATCH_COMMANDS",
]

# Pipeline commands after which a connection no longer watches keys (as redis-py's Pipeline).
UNWATCH_COMMANDS = frozenset({"DISCARD", "EXEC", "UNWATCH"})
_MAX_LABEL = 200
# Commands that carry no data: what redis-py returns for their reply (after its response callbacks).
# Not HELLO: it answers the server's identity and version, and redis-py's own handshake sends it
# on connecting, which a replay never does.
_NO_DATA_COMMANDS = frozenset({"SELECT", "AUTH", "CLIENT SETNAME", "CLIENT SETINFO"})


def _text(value: Any) -> str:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "backslashreplace")
    return value if isinstance(value, str) else ""


def command_name(command: Any) -> str:
    """``"client  list"`` -> ``"CLIENT LIST"``: how the server reads a command name."""
    return " ".join(_text(command).split()).upper()


def command_entry(args: Sequence[Any]) -> dict[str, Any]:
    """``{"command", "args"}`` for ``execute_command(*args)``; passwords among them are hidden by
    the cassette's redaction (:mod:`timetracer_otel.protocol_redaction`), sealed with the key."""
    return {"command": args[0], "args": list(args[1:])}


def _wire(value: Any) -> Hashable:
    """An argument as redis-py sends it; values it refuses to send stay distinct by type."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int):
        return str(int(value)).encode("ascii")
    if isinstance(value, float):
        return repr(float(value)).encode("ascii")
    return (type(value).__name__, repr(value))


def _shown(value: Any) -> str:
    text = _text(value) if isinstance(value, (str, bytes, bytearray, memoryview)) else repr(value)
    return text if text and not any(c.isspace() for c in text) else repr(text)


def _words(entry: dict[str, Any]) -> str:
    return " ".join([command_name(entry["command"]), *map(_shown, entry["args"])])


def _cut(text: str) -> str:
    return text if len(text) <= _MAX_LABEL else text[: _MAX_LABEL - 3] + "..."


def _command_key(entry: dict[str, Any]) -> tuple[Any, ...]:
    return (command_name(entry["command"]), tuple(_wire(arg) for arg in entry["args"]))


def request_view(request: dict[str, Any]) -> CallView:
    """The view of a redis call request: a command, or a pipeline with all its commands."""
    decode = bool(request.get("decode_responses"))
    if "pipeline" in request:
        kind = "MULTI/EXEC" if request.get("transaction") else "PIPELINE"
        commands = [_words(entry) for entry in request["pipeline"]]
        raise_on_error = bool(request.get("raise_on_error", True))
        return CallView(
            protocol="redis",
            label=_cut(f"{kind} [{'; '.join(commands)}]"),
            key=(
                "redis",
                kind,
                raise_on_error,
                decode,
                tuple(_command_key(e) for e in request["pipeline"]),
            ),
            fields={
                "pipeline": kind,
                "commands": commands,
                "raise_on_error": raise_on_error,
                "decode_responses": decode,
            },
        )
    args = request["args"]
    return CallView(
        protocol="redis",
        label=_cut(_words(request)),
        key=("redis", "command", decode, _command_key(request)),
        fields={
            "command": command_name(request["command"]),
            "key": _shown(args[0]) if args else "",
            "args": " ".join(map(_shown, args[1:])),
            "decode_responses": decode,
        },
    )


def live_view(request: dict[str, Any], redactor: Redactor | None) -> CallView:
    """The view of a call being made, its secret hash fields hidden by ``redactor`` as the recording's were."""
    if redactor is None:
        return request_view(request)
    return request_view(decode_value(redactor.protocol_request("redis", encode_value(request))))


def recorded_view(call: dict[str, Any]) -> CallView:
    """The view of a recorded redis call document."""
    return request_view(decode_value(call["request"]))


def _answer(reply: Any) -> dict[str, Any]:
    return {
        "protocol": "redis",
        "request": None,
        "response": encode_value({"reply": reply}),
        "error": None,
    }


def usual_answer(view: CallView) -> dict[str, Any] | None:
    """The call document a server's usual answer gives for a command that carries no data, or None.

    ``PING`` (without a message) answers ``True``; ``SELECT``, ``AUTH``, ``CLIENT SETNAME``
    and ``CLIENT SETINFO`` answer ``OK``, which redis-py returns as ``True`` (as ``OK`` itself
    when the subcommand is a separate argument: no response callback applies then).
    Answering ``AUTH`` takes its password nowhere and tells nothing about it.
    """
    key = view.key
    if (
        not isinstance(key, tuple) or key[1] != "command"
    ):  # a pipeline: its commands may carry anything
        return None
    decode, (name, args) = key[2], key[3]
    if name == "CLIENT" and args and command_name(_text(args[0])) in ("SETNAME", "SETINFO"):
        return _answer("OK" if decode else b"OK")
    if (name == "PING" and not args) or name in _NO_DATA_COMMANDS:
        return _answer(True)
    return None
