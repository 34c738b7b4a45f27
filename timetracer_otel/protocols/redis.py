"""Redis calls as cassette data: the request shape, secret redaction, and the matching view.

Capture and replay build a call's request with the same functions here, so a live call
and its recorded twin get equal keys. This module does not import redis: cassettes load
wherever timetracer does (the client and pipeline objects it reads are redis-py's).

A call's request is ``{"command", "args", "decode_responses"}`` for a command, and
``{"pipeline": [{"command", "args"}, ...], "transaction", "raise_on_error",
"decode_responses"}`` for a pipeline. The response is ``{"reply": ...}`` or
``{"replies": [...], "errors": [{"index", "type", "message"}]}``. On a pub/sub
connection a command (``SUBSCRIBE``, ``PING``, ...) adds ``"pubsub": true`` (its reply is
``None``: the server's answers arrive as messages), and each message read from it is
``{"pubsub": "message", "decode_responses"}`` with the message, as redis-py parsed it,
for reply.

Secrets (:func:`redact`): passwords (``AUTH``, ``HELLO ... AUTH``, ``MIGRATE ... AUTH``,
``CONFIG SET requirepass`` and the other secret settings, also in ``CONFIG GET`` replies,
``ACL SETUSER`` rules) and the values of fields named like secrets wherever a command
names the field: hash fields (``HSET``/``HMSET``/``HSETNX``/``HSETEX`` arguments,
``HGET``/``HMGET``/``HGETALL``/``HSCAN``/``HRANDFIELD ... WITHVALUES``/``HGETEX``/``HGETDEL``
replies) and stream entry fields (``XADD`` arguments; ``XRANGE``, ``XREVRANGE``, ``XREAD``,
``XREADGROUP``, ``XCLAIM``, ``XAUTOCLAIM``, ``XINFO STREAM`` replies).

A command's key is its name (upper-cased, whitespace normalised) and its arguments as
redis-py puts them on the wire: ``str`` as UTF-8, ``int`` and ``float`` as their
``repr``, bytes-like as bytes. So ``1``, ``"1"`` and ``b"1"`` are the same argument,
while ``1.0`` is not (it is sent as ``1.0``). ``decode_responses`` is part of the key
too: the same command answers with bytes or with str depending on it. A message that
Celery (kombu) queues is matched without the sending process's identity, which no two
processes share: ``headers.origin`` (``gen<pid>@<host>``) and ``properties.reply_to``
(a UUID of the process, thread and app object).
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING, Any

from timetracer_otel.cassette.calls import CassetteCall, call_document
from timetracer_otel.cassette.values import decode_value, encode_value
from timetracer_otel.secret_names import SecretNames

from . import typed
from .trace_context import without_trace_context
from .view import CallView, cut_label

if TYPE_CHECKING:
    from timetracer_otel.redaction import Redactor

__all__ = [
    "command_name",
    "command_entry",
    "command_request",
    "pubsub_request",
    "pubsub_read_request",
    "pipeline_request",
    "sends",
    "raise_on_error",
    "redact",
    "request_view",
    "live_view",
    "recorded_view",
    "usual_answer",
    "UNWATCH_COMMANDS",
]

# Pipeline commands after which a connection no longer watches keys (as redis-py's Pipeline).
UNWATCH_COMMANDS = frozenset({"DISCARD", "EXEC", "UNWATCH"})
_HASH_WRITES = frozenset({"HSET", "HMSET", "HSETNX"})
# replies holding field -> value maps (a stream entry's fields are a map, as a hash's are)
_FIELD_MAP_REPLIES = frozenset(
    {"HGETALL", "HSCAN", "XRANGE", "XREVRANGE", "XCLAIM", "XAUTOCLAIM", "XINFO STREAM"}
)
_STREAM_READS = frozenset({"XREAD", "XREADGROUP"})  # their RESP3 reply maps stream names
_XADD_FLAGS = frozenset({"NOMKSTREAM", "KEEPREF", "DELREF", "ACKED"})
_PASSWORD_COMMANDS = frozenset({"AUTH", "HELLO", "MIGRATE", "CONFIG", "SENTINEL", "ACL"})
_SECRET_SETTINGS = frozenset(
    {"requirepass", "masterauth", "tls-key-file-pass", "tls-client-key-file-pass", "auth-pass"}
)
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
    the cassette's redaction (:func:`redact`), sealed with the key."""
    return {"command": args[0], "args": list(args[1:])}


def _decode_responses(client: Any) -> bool:
    kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", None) or {}
    return bool(kwargs.get("decode_responses", False))


def command_request(client: Any, args: tuple) -> dict[str, Any]:
    """The request of ``client.execute_command(*args)``."""
    return {**command_entry(args), "decode_responses": _decode_responses(client)}


def pubsub_request(pubsub: Any, args: tuple) -> dict[str, Any]:
    """The request of ``pubsub.execute_command(*args)``: sent without waiting for an answer."""
    return {**command_request(pubsub, args), "pubsub": True}


def pubsub_read_request(pubsub: Any) -> dict[str, Any]:
    """The request of reading the next message from ``pubsub`` (``parse_response``)."""
    return {"pubsub": "message", "decode_responses": _decode_responses(pubsub)}


def _is_transaction(pipe: Any) -> bool:
    # sync pipelines keep the flag in ``transaction``, asyncio ones in ``is_transaction``
    # (where ``transaction`` is the client's method): read the instance's own attributes.
    attributes = vars(pipe)
    return bool(attributes.get("is_transaction", attributes.get("transaction"))) or bool(
        pipe.explicit_transaction
    )


def pipeline_request(pipe: Any, raise_on_error: bool) -> dict[str, Any]:
    """The request of ``pipe.execute(raise_on_error)``: every queued command."""
    return {
        "pipeline": [command_entry(args) for args, _options in pipe.command_stack],
        "transaction": _is_transaction(pipe),
        "raise_on_error": raise_on_error,
        "decode_responses": _decode_responses(pipe),
    }


def sends(pipe: Any) -> bool:
    """Whether ``pipe.execute()`` talks to the server (redis-py returns ``[]`` at once otherwise)."""
    return bool(pipe.command_stack) or bool(pipe.watching)


def raise_on_error(args: tuple, kwargs: dict) -> bool:
    """The ``raise_on_error`` argument of ``Pipeline.execute``."""
    return bool(args[0] if args else kwargs.get("raise_on_error", True))


_KOMBU_MESSAGE = b'{"body": '


def _kombu_message(data: bytes) -> Hashable | None:
    """A kombu message's key without its producer's process identity; None for any other value."""
    try:
        message = json.loads(data)
    except ValueError:
        return None
    headers, properties = message.get("headers"), message.get("properties")
    if not (isinstance(headers, dict) and isinstance(properties, dict)):
        return None
    headers.pop("origin", None)
    properties.pop("reply_to", None)
    return ("kombu message", without_trace_context(json.dumps(message, sort_keys=True)))


def _wire(value: Any) -> Hashable:
    """An argument as redis-py sends it; values it refuses to send stay distinct by type."""
    if isinstance(value, (bytes, bytearray, memoryview, str)):
        data = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else bytes(value)
        return (data.startswith(_KOMBU_MESSAGE) and _kombu_message(data)) or without_trace_context(
            data
        )
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


# Commands whose arguments from this position on are a set: the reply does not depend on their
# order, and an app passing a Python set of strings sends them in its process's hash order.
_SET_ARGUMENTS = {
    "DEL": 0, "UNLINK": 0, "EXISTS": 0, "TOUCH": 0,
    "SADD": 1, "SREM": 1, "ZREM": 1, "HDEL": 1, "PFADD": 1,
}  # fmt: skip


def _command_key(entry: dict[str, Any]) -> tuple[Any, ...]:
    name = command_name(entry["command"])
    wired = tuple(_wire(arg) for arg in entry["args"])
    start = _SET_ARGUMENTS.get(name)
    if start is not None:
        wired = wired[:start] + tuple(sorted(wired[start:], key=repr))
    return (name, wired)


def request_view(request: dict[str, Any]) -> CallView:
    """The view of a redis call request: a command, or a pipeline with all its commands."""
    decode = bool(request.get("decode_responses"))
    if "pipeline" in request:
        kind = "MULTI/EXEC" if request.get("transaction") else "PIPELINE"
        commands = [_words(entry) for entry in request["pipeline"]]
        raise_on_error = bool(request.get("raise_on_error", True))
        return CallView(
            protocol="redis",
            label=cut_label(f"{kind} [{'; '.join(commands)}]"),
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
    if request.get("pubsub") == "message":
        return CallView(
            protocol="redis",
            label="(pub/sub message)",
            key=("redis", "pubsub message", decode),
            fields={"command": "(pub/sub message)", "decode_responses": decode},
        )
    args = request["args"]
    kind = "pubsub" if request.get("pubsub") else "command"
    return CallView(
        protocol="redis",
        label=cut_label(("(pub/sub) " if request.get("pubsub") else "") + _words(request)),
        key=("redis", kind, decode, _command_key(request)),
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


def recorded_view(call: CassetteCall) -> CallView:
    """The view of a recorded redis call."""
    return request_view(call.decoded_request())


def _answer(reply: Any) -> dict[str, Any]:
    return call_document("redis", None, encode_value({"reply": reply}))


def usual_answer(view: CallView) -> dict[str, Any] | None:
    """The call document a server's usual answer gives for a command that carries no data, or None.

    ``PING`` (without a message) answers ``True``; ``SELECT``, ``AUTH``, ``CLIENT SETNAME``
    and ``CLIENT SETINFO`` answer ``OK``, which redis-py returns as ``True`` (as ``OK`` itself
    when the subcommand is a separate argument: no response callback applies then).
    Answering ``AUTH`` takes its password nowhere and tells nothing about it.
    """
    key = view.key
    # a pipeline: its commands may carry anything
    if not isinstance(key, tuple) or key[1] != "command":
        return None
    decode, (name, args) = key[2], key[3]
    if name == "CLIENT" and args and command_name(_text(args[0])) in ("SETNAME", "SETINFO"):
        return _answer("OK" if decode else b"OK")
    if (name == "PING" and not args) or name in _NO_DATA_COMMANDS:
        return _answer(True)
    return None


# --------------------------------------------------------------------------- secrets
def _command(entry: dict[str, Any]) -> str:
    return " ".join((typed.text(entry.get("command")) or "").split()).upper()


def _option_secrets(
    words: list[str], start: int, options: dict[str, tuple[int, int]], stop: str = ""
) -> list[int]:
    """Positions of secrets among options from ``start`` on, up to the word ``stop``.

    ``options`` maps an option word to (position of its secret after it, or 0 for none;
    how many values follow it).
    """
    found, index = [], start
    while index < len(words) and words[index] != stop:
        secret, width = options.get(words[index], (0, 0))
        if secret:
            found.append(index + secret)
        index += 1 + width
    return found


def _password_positions(words: list[str]) -> list[int]:
    """Positions in ``words`` (the command's words, upper-cased) that hold a password."""
    name, sub = (words + ["", ""])[:2]
    if name == "AUTH":  # AUTH [username] password
        return [len(words) - 1] if len(words) > 1 else []
    if name == "HELLO":  # HELLO protover [AUTH username password] [SETNAME name]
        return _option_secrets(words, 2, {"AUTH": (2, 2), "SETNAME": (0, 1)})
    # MIGRATE host port key db timeout [COPY] [REPLACE] [AUTH pw | AUTH2 user pw] [KEYS ...]
    if name == "MIGRATE":
        return _option_secrets(words, 6, {"AUTH": (1, 1), "AUTH2": (2, 2)}, stop="KEYS")
    if (name, sub) == ("CONFIG", "SET"):  # CONFIG SET name value [name value ...]
        return [i + 1 for i in range(2, len(words) - 1, 2) if words[i].lower() in _SECRET_SETTINGS]
    if (name, sub) == ("SENTINEL", "SET"):  # SENTINEL SET master name value [name value ...]
        return [i + 1 for i in range(3, len(words) - 1, 2) if words[i].lower() in _SECRET_SETTINGS]
    if (name, sub) == ("ACL", "SETUSER"):  # >pw, <pw, #hash, !hash add or remove a password
        return [i for i in range(3, len(words)) if words[i][:1] in (">", "<", "#", "!")]
    return []


def _passwords(name: str, args: list[Any], hide: typed.Hide) -> None:
    """Hide, in place, the password arguments of AUTH, HELLO ... AUTH, MIGRATE ... AUTH/AUTH2,
    CONFIG SET requirepass/masterauth/..., SENTINEL SET ... auth-pass and ACL SETUSER rules."""
    head = name.split()
    if not head or head[0] not in _PASSWORD_COMMANDS:
        return
    words = head + [_word(arg) for arg in args]
    typed.hide_at(
        args,
        [position - len(head) for position in _password_positions(words) if position >= len(head)],
        hide,
    )


def _secret_settings(reply: Any, hide: typed.Hide) -> None:
    """``CONFIG GET`` answers the password too: hide, in place, the secret settings of its reply."""
    pairs = reply["items"] if isinstance(reply, dict) and reply.get(typed.TYPE) == "dict" else None
    if pairs is not None:
        for pair in pairs:
            if (typed.text(pair[0]) or "").lower() in _SECRET_SETTINGS:
                pair[1] = hide(pair[1])
    elif isinstance(reply, dict) and typed.TYPE not in reply:
        for name in reply:
            if name.lower() in _SECRET_SETTINGS:
                reply[name] = hide(reply[name])


def _redis_entry(entry: dict[str, Any], reply: Any, names: SecretNames, hide: typed.Hide) -> Any:
    """Hide the passwords and secret hash fields of one command in place; returns its reply with them hidden."""
    name, args = _command(entry), entry.get("args")
    if not isinstance(args, list):
        return reply
    _passwords(name, args, hide)
    if name in _HASH_WRITES:
        typed.hide_at(args, _secret_values_of_pairs(args, 1, names), hide)
    elif name == "XADD":
        typed.hide_at(args, _secret_values_of_pairs(args, _xadd_id(args) + 1, names), hide)
    elif name == "HSETEX":
        typed.hide_at(args, _secret_values_of_pairs(args, _fields_start(args), names), hide)
    elif name in ("HGETEX", "HGETDEL") and isinstance(reply, list):
        typed.hide_at(reply, _secret_fields_of_list(args, _fields_start(args), names), hide)
    elif (
        name == "HGET"
        and len(args) == 2
        and names.field(typed.text(args[1]) or "")
        and reply is not None
    ):
        return hide(reply)
    elif name == "HMGET" and isinstance(reply, list):
        typed.hide_at(reply, _secret_fields_of_list(args, 1, names), hide)
    elif name in _FIELD_MAP_REPLIES:
        # a hash (or a stream entry's fields) is a field -> value mapping, like a document
        typed.hide_named_fields(reply, names, hide)
    elif name in _STREAM_READS:
        for entries in _stream_values(reply):
            typed.hide_named_fields(entries, names, hide)
    elif name == "HRANDFIELD" and _has_word(args, "WITHVALUES"):
        _hide_field_value_list(reply, names, hide)
    elif name == "CONFIG GET":
        _secret_settings(reply, hide)
    return _json_values(args, reply, names, hide)


def _secret_values_of_pairs(values: list[Any], start: int, names: SecretNames) -> list[int]:
    """Positions of the values whose field is named like a secret, in ``field value ...`` from ``start``."""
    return [
        i + 1 for i in range(start, len(values) - 1, 2) if names.field(typed.text(values[i]) or "")
    ]


def _secret_fields_of_list(args: list[Any], start: int, names: SecretNames) -> list[int]:
    """Positions in the reply of the fields named like a secret among ``args[start:]``: the
    reply lists one value per field asked for (``HMGET``, ``HGETEX``, ``HGETDEL``)."""
    return [i - start for i in range(start, len(args)) if names.field(typed.text(args[i]) or "")]


def _word(arg: Any) -> str:
    """An argument as the option word it may be: upper-cased text, empty for any other value."""
    return (typed.text(arg) or "").upper()


def _has_word(args: list[Any], word: str) -> bool:
    return any(_word(arg) == word for arg in args)


def _xadd_id(args: list[Any]) -> int:
    """The position of the entry id in ``XADD key [NOMKSTREAM] [MAXLEN|MINID [=|~] n [LIMIT c]] id field value ...``."""
    index = 1
    while index < len(args):
        word = _word(args[index])
        if word in _XADD_FLAGS:
            index += 1
        elif word in ("MAXLEN", "MINID"):
            exact = index + 1 < len(args) and typed.text(args[index + 1]) in ("=", "~")
            index += 3 if exact else 2
        elif word == "LIMIT":
            index += 2
        else:
            return index
    return index


def _fields_start(args: list[Any]) -> int:
    """The position of the first field in ``... FIELDS numfields field ...`` (Redis 8's HSETEX, HGETEX, HGETDEL)."""
    for index, arg in enumerate(args):
        if _word(arg) == "FIELDS":
            return index + 2
    return len(args)


def _stream_values(reply: Any) -> list[Any]:
    """What an ``XREAD`` reply holds per stream: a RESP3 reply maps the streams' names (keys, not
    fields) to their entries; a RESP2 one lists ``[name, entries]`` pairs."""
    if isinstance(reply, dict) and reply.get(typed.TYPE) == "dict":
        return [
            pair[1]
            for pair in reply.get("items") or ()
            if isinstance(pair, list) and len(pair) == 2
        ]
    if isinstance(reply, dict) and typed.TYPE not in reply:
        return list(reply.values())
    return [reply]


def _hide_field_value_list(reply: Any, names: SecretNames, hide: typed.Hide) -> None:
    """``HRANDFIELD ... WITHVALUES``: ``[field, value, ...]`` (RESP2) or ``[[field, value], ...]`` (RESP3)."""
    values = typed.items(reply)
    if not values:
        return
    pairs = [typed.items(value) for value in values]
    if all(pair is not None and len(pair) == 2 for pair in pairs):
        for pair in filter(None, pairs):
            typed.hide_at(pair, _secret_values_of_pairs(pair, 0, names), hide)
    else:
        typed.hide_at(values, _secret_values_of_pairs(values, 0, names), hide)


def _json_values(args: list[Any], reply: Any, names: SecretNames, hide: typed.Hide) -> Any:
    """Hide the secret members of the arguments and replies that are JSON (a cached user object
    with its token, ``SET session:1 '{"access_token": ...}'``); returns the reply."""
    args[:] = [typed.with_secret_members_hidden(arg, names, hide) for arg in args]
    values = typed.items(reply)
    if values is None:
        return typed.with_secret_members_hidden(reply, names, hide)
    values[:] = [typed.with_secret_members_hidden(value, names, hide) for value in values]
    return reply


def redact(
    request: dict[str, Any], response: dict[str, Any] | None, names: SecretNames, hide: typed.Hide
) -> None:
    """Hide a call's passwords and secret hash fields in place (its request in cassette form, and its response)."""
    response = response if isinstance(response, dict) else {}
    if "pipeline" in request:
        replies = response.get("replies") or []
        for index, entry in enumerate(request["pipeline"]):
            reply = _redis_entry(
                entry, replies[index] if index < len(replies) else None, names, hide
            )
            if index < len(replies):
                replies[index] = reply
    elif "reply" in response:
        response["reply"] = _redis_entry(request, response["reply"], names, hide)
    else:
        _redis_entry(request, None, names, hide)
