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
* Redis: hash fields (``HSET``/``HMSET``/``HSETNX`` arguments, ``HGET``/``HMGET``/``HGETALL`` replies).
* Mongo: document fields at any depth, in commands and replies.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Callable, Optional

from ._sql_columns import Ref, columns_of
from .secret_names import SecretNames

__all__ = ["Hide", "redact_call", "redact_request", "secret_texts"]

Hide = Callable[[Any], Any]  # a typed value -> what stands in its place
_TYPE = "$type"
_HASH_WRITES = frozenset({"HSET", "HMSET", "HSETNX"})


def _text(value: Any) -> Optional[str]:
    """A name given as a typed value: a string, or bytes (encoded) as UTF-8; else None."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and value.get(_TYPE) == "bytes":
        try:
            return base64.b64decode(value["base64"]).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
    return None


def _items(value: Any) -> Optional[list[Any]]:
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


def _sql(request: dict[str, Any], response: Optional[dict[str, Any]], names: SecretNames, hide: Hide) -> None:
    statement = request.get("statement")
    if isinstance(statement, str):
        columns = columns_of(statement)
        secret = {ref for ref, met in columns.parameters.items() if any(map(names.field, met))}
        literals = [(start, end) for start, end, met in columns.literals if any(map(names.field, met))]
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
    secret_columns = [i for i, column in enumerate(description) if isinstance(column, list) and column and names.field(str(column[0]))]
    for row in (response or {}).get("rows") or () if secret_columns else ():
        _hide_at(_items(row) or [], secret_columns, hide)


# --------------------------------------------------------------------------- Redis
def _command(entry: dict[str, Any]) -> str:
    return " ".join((_text(entry.get("command")) or "").split()).upper()


def _redis_entry(entry: dict[str, Any], reply: Any, names: SecretNames, hide: Hide) -> Any:
    """Hide the secret hash fields of one command in place; returns its reply with them hidden."""
    name, args = _command(entry), entry.get("args")
    if not isinstance(args, list):
        return reply
    if name in _HASH_WRITES:
        _hide_at(args, [i + 1 for i in range(1, len(args) - 1, 2) if names.field(_text(args[i]) or "")], hide)
    elif name == "HGET" and len(args) == 2 and names.field(_text(args[1]) or "") and reply is not None:
        return hide(reply)
    elif name == "HMGET" and isinstance(reply, list):
        _hide_at(reply, [i - 1 for i in range(1, len(args)) if names.field(_text(args[i]) or "")], hide)
    elif name == "HGETALL":
        _mongo(reply, names, hide)  # a hash reply is a field -> value mapping, like a document
    return reply


def _redis(request: dict[str, Any], response: Optional[dict[str, Any]], names: SecretNames, hide: Hide) -> None:
    response = response if isinstance(response, dict) else {}
    if "pipeline" in request:
        replies = response.get("replies") or []
        for index, entry in enumerate(request["pipeline"]):
            reply = _redis_entry(entry, replies[index] if index < len(replies) else None, names, hide)
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


def _mongo_call(request: dict[str, Any], response: Optional[dict[str, Any]], names: SecretNames, hide: Hide) -> None:
    _mongo(request.get("command"), names, hide)
    _mongo(response, names, hide)


_BY_PROTOCOL = {"sql": _sql, "redis": _redis, "mongo": _mongo_call}


def redact_call(call: dict[str, Any], names: SecretNames, hide: Hide) -> None:
    """Hide the secrets of a recorded SQL, Redis or Mongo call document in place."""
    redact = _BY_PROTOCOL.get(call.get("protocol", ""))
    if redact is not None and isinstance(call.get("request"), dict):
        redact(call["request"], call.get("response"), names, hide)


def redact_request(protocol: str, request: dict[str, Any], names: SecretNames, hide: Hide) -> dict[str, Any]:
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
