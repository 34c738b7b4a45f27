"""Secrets in SQL, Redis and Mongo calls, found by name in their typed values (cassette form).

Capture keeps these payloads whole, off the request path; the writer hides them here
(sealing them when it has the key), and replay hides a live call's request the same
way before matching it, so a recorded ``[REDACTED]`` meets a live one. Each hidden
value is a whole typed value (``{"$type": "bytes", ...}`` included): sealed with
``Sealer.seal_json``, it opens back to the same typed value.

* SQL: parameters named like a secret (``%(password)s``, ``:password``), and parameters and
  string literals that meet a secret column in the statement (``INSERT`` column lists,
  ``SET col = ?``, ``WHERE col = ?``, ``col IN (...)``, see :mod:`._sql_columns`); result
  columns by their name.
* Redis: passwords (``AUTH``, ``HELLO ... AUTH``, ``MIGRATE ... AUTH``, ``CONFIG SET requirepass``
  and the other secret settings, also in ``CONFIG GET`` replies, ``ACL SETUSER`` rules) and hash
  fields (``HSET``/``HMSET``/``HSETNX`` arguments, ``HGET``/``HMGET``/``HGETALL`` replies).
* Mongo: document fields at any depth, in commands and replies.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any

from ._sql_columns import Ref, columns_of
from .secret_names import SecretNames

__all__ = ["Hide", "redact_call", "redact_request", "secret_texts"]

Hide = Callable[[Any], Any]  # a typed value -> what stands in its place
_TYPE = "$type"
_HASH_WRITES = frozenset({"HSET", "HMSET", "HSETNX"})
_PASSWORD_COMMANDS = frozenset({"AUTH", "HELLO", "MIGRATE", "CONFIG", "SENTINEL", "ACL"})
_SECRET_SETTINGS = frozenset(
    {"requirepass", "masterauth", "tls-key-file-pass", "tls-client-key-file-pass", "auth-pass"}
)


def _text(value: Any) -> str | None:
    """A name given as a typed value: a string, or bytes (encoded) as UTF-8; else None."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and value.get(_TYPE) == "bytes":
        try:
            return base64.b64decode(value["base64"]).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
    return None


def _items(value: Any) -> list[Any] | None:
    """The items of a list or an encoded tuple (which can be changed in place), else None."""
    if isinstance(value, list):
        return value
    if isinstance(value, dict) and value.get(_TYPE) == "tuple":
        return value["items"]
    return None


def _hide_at(items: list[Any], positions: list[int], hide: Hide) -> None:
    for index in positions:
        if 0 <= index < len(items):
            items[index] = hide(items[index])


# --------------------------------------------------------------------------- SQL
def _sql_parameters(parameters: Any, secret: set[Ref], names: SecretNames, hide: Hide) -> None:
    """Hide, in place, the parameters named like a secret or meeting a secret column (``secret``)."""
    if isinstance(parameters, dict) and _TYPE not in parameters:
        for name in parameters:
            if name in secret or names.field(name):
                parameters[name] = hide(parameters[name])
        return
    items = _items(parameters)
    if items is not None:
        _hide_at(items, [ref for ref in secret if isinstance(ref, int)], hide)


def _statement(statement: str, literals: list[tuple[int, int]], hide: Hide) -> str:
    """``statement`` with the content of each secret string literal hidden in place."""
    for start, end in reversed(literals):
        statement = statement[:start] + str(hide(statement[start:end])) + statement[end:]
    return statement


def _sql(
    request: dict[str, Any], response: dict[str, Any] | None, names: SecretNames, hide: Hide
) -> None:
    statement = request.get("statement")
    if isinstance(statement, str):
        columns = columns_of(statement)
        secret = {ref for ref, met in columns.parameters.items() if any(map(names.field, met))}
        literals = [
            (start, end) for start, end, met in columns.literals if any(map(names.field, met))
        ]
        if literals:
            request["statement"] = _statement(statement, literals, hide)
    else:
        secret = set()
    parameters = request.get("parameters")
    if request.get("operation") == "executemany":
        for each in _items(parameters) or ():
            _sql_parameters(each, secret, names, hide)
    else:
        _sql_parameters(parameters, secret, names, hide)
    description = (response or {}).get("description")
    if not isinstance(description, list):
        return
    secret_columns = [
        i
        for i, column in enumerate(description)
        if isinstance(column, list) and column and names.field(str(column[0]))
    ]
    for row in (response or {}).get("rows") or () if secret_columns else ():
        _hide_at(_items(row) or [], secret_columns, hide)


# --------------------------------------------------------------------------- Redis
def _command(entry: dict[str, Any]) -> str:
    return " ".join((_text(entry.get("command")) or "").split()).upper()


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
    if (
        name == "MIGRATE"
    ):  # MIGRATE host port key db timeout [COPY] [REPLACE] [AUTH pw | AUTH2 user pw] [KEYS ...]
        return _option_secrets(words, 6, {"AUTH": (1, 1), "AUTH2": (2, 2)}, stop="KEYS")
    if (name, sub) == ("CONFIG", "SET"):  # CONFIG SET name value [name value ...]
        return [i + 1 for i in range(2, len(words) - 1, 2) if words[i].lower() in _SECRET_SETTINGS]
    if (name, sub) == ("SENTINEL", "SET"):  # SENTINEL SET master name value [name value ...]
        return [i + 1 for i in range(3, len(words) - 1, 2) if words[i].lower() in _SECRET_SETTINGS]
    if (name, sub) == ("ACL", "SETUSER"):  # >pw, <pw, #hash, !hash add or remove a password
        return [i for i in range(3, len(words)) if words[i][:1] in (">", "<", "#", "!")]
    return []


def _passwords(name: str, args: list[Any], hide: Hide) -> None:
    """Hide, in place, the password arguments of AUTH, HELLO ... AUTH, MIGRATE ... AUTH/AUTH2,
    CONFIG SET requirepass/masterauth/..., SENTINEL SET ... auth-pass and ACL SETUSER rules."""
    head = name.split()
    if not head or head[0] not in _PASSWORD_COMMANDS:
        return
    words = head + [(_text(arg) or "").upper() for arg in args]
    _hide_at(
        args,
        [position - len(head) for position in _password_positions(words) if position >= len(head)],
        hide,
    )


def _secret_settings(reply: Any, hide: Hide) -> None:
    """``CONFIG GET`` answers the password too: hide, in place, the secret settings of its reply."""
    pairs = reply["items"] if isinstance(reply, dict) and reply.get(_TYPE) == "dict" else None
    if pairs is not None:
        for pair in pairs:
            if (_text(pair[0]) or "").lower() in _SECRET_SETTINGS:
                pair[1] = hide(pair[1])
    elif isinstance(reply, dict) and _TYPE not in reply:
        for name in reply:
            if name.lower() in _SECRET_SETTINGS:
                reply[name] = hide(reply[name])


def _redis_entry(entry: dict[str, Any], reply: Any, names: SecretNames, hide: Hide) -> Any:
    """Hide the passwords and secret hash fields of one command in place; returns its reply with them hidden."""
    name, args = _command(entry), entry.get("args")
    if not isinstance(args, list):
        return reply
    _passwords(name, args, hide)
    if name in _HASH_WRITES:
        _hide_at(
            args,
            [i + 1 for i in range(1, len(args) - 1, 2) if names.field(_text(args[i]) or "")],
            hide,
        )
    elif (
        name == "HGET"
        and len(args) == 2
        and names.field(_text(args[1]) or "")
        and reply is not None
    ):
        return hide(reply)
    elif name == "HMGET" and isinstance(reply, list):
        _hide_at(
            reply, [i - 1 for i in range(1, len(args)) if names.field(_text(args[i]) or "")], hide
        )
    elif name == "HGETALL":
        _mongo(reply, names, hide)  # a hash reply is a field -> value mapping, like a document
    elif name == "CONFIG GET":
        _secret_settings(reply, hide)
    return reply


def _redis(
    request: dict[str, Any], response: dict[str, Any] | None, names: SecretNames, hide: Hide
) -> None:
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


# --------------------------------------------------------------------------- Mongo
def _mongo(value: Any, names: SecretNames, hide: Hide) -> None:
    """Hide, in place, every member with a secret name in a document of typed values, at any depth."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, dict) and item.get(_TYPE) == "dict":
            for pair in item["items"]:
                if names.field(_text(pair[0]) or ""):
                    pair[1] = hide(pair[1])
                else:
                    pending.append(pair[1])
        elif isinstance(item, dict) and _TYPE in item:
            pending.extend(v for v in item.values() if isinstance(v, (list, dict)))
        elif isinstance(item, dict):
            for name, child in item.items():
                if names.field(name):
                    item[name] = hide(child)
                else:
                    pending.append(child)


def _mongo_call(
    request: dict[str, Any], response: dict[str, Any] | None, names: SecretNames, hide: Hide
) -> None:
    _mongo(request.get("command"), names, hide)
    _mongo(response, names, hide)


_BY_PROTOCOL = {"sql": _sql, "redis": _redis, "mongo": _mongo_call}


def redact_call(call: dict[str, Any], names: SecretNames, hide: Hide) -> None:
    """Hide the secrets of a recorded SQL, Redis or Mongo call document in place."""
    redact = _BY_PROTOCOL.get(call.get("protocol", ""))
    if redact is not None and isinstance(call.get("request"), dict):
        redact(call["request"], call.get("response"), names, hide)


def redact_request(
    protocol: str, request: dict[str, Any], names: SecretNames, hide: Hide
) -> dict[str, Any]:
    """A live call's request in cassette form, hidden the way :func:`redact_call` hides a recorded one (in place)."""
    _BY_PROTOCOL[protocol](request, None, names, hide)
    return request


def secret_texts(call: dict[str, Any], names: SecretNames) -> set[str]:
    """The text of each value :func:`redact_call` would hide in ``call`` (which is left as it is),
    so the same values can be hidden wherever else the cassette quotes them."""
    found: set[str] = set()

    def note(value: Any) -> Any:
        text = _text(value)
        if text is not None:
            found.add(text)
        return value

    redact_call(call, names, note)
    return found
