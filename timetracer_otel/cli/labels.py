"""One line naming a call or a span by its library and its target, as ``timetracer show`` and the
dashboard print it: ``httpx GET api.example.com/users/octocat``, ``sql SELECT FROM users``,
``redis INCRBY hits`` (a pipeline by its commands: ``redis MULTI/EXEC SET, GET``), ``pymongo find shop.users``,
``grpc /shop.Catalog/GetItem NOT_FOUND`` (the status shown when it is not ``OK``),
``smtp RCPT TO:<ada@example.com>``.

A label is made from the cassette's recorded values only, never by decoding them into objects,
so any document that passed validation gets one.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any
from urllib.parse import urlsplit

__all__ = ["call_label", "span_label"]

_LABEL_CHARS = 160
_NAME = r'("[^"]+"|`[^`]+`|\[[^\]]+\]|[\w.$]+)'
# The table a statement is mainly about, after the keyword that introduces it for each verb.
_TABLE_AFTER = {
    "SELECT": re.compile(rf"\bFROM\s+{_NAME}", re.IGNORECASE),
    "DELETE": re.compile(rf"\bFROM\s+{_NAME}", re.IGNORECASE),
    "INSERT": re.compile(rf"\bINTO\s+{_NAME}", re.IGNORECASE),
    "REPLACE": re.compile(rf"\bINTO\s+{_NAME}", re.IGNORECASE),
    "UPDATE": re.compile(rf"^\s*UPDATE\s+(?:OR\s+\w+\s+)?{_NAME}", re.IGNORECASE),
}
_JOINER = {"SELECT": "FROM", "DELETE": "FROM", "INSERT": "INTO", "REPLACE": "INTO", "UPDATE": ""}
_DDL_OBJECT = re.compile(
    rf"^\s*(?:CREATE|DROP|ALTER|TRUNCATE)\s+(?:TEMP\w*\s+)?(?:TABLE|INDEX|VIEW|SCHEMA)?\s*(?:IF\s+(?:NOT\s+)?EXISTS\s+)?{_NAME}",
    re.IGNORECASE,
)


def _cut(text: str, limit: int = _LABEL_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _text_of(value: Any) -> str:
    """A Redis argument or Mongo name as a person reads it: a string as is, bytes as UTF-8 where they are."""
    if (
        isinstance(value, dict)
        and value.get("$type") == "bytes"
        and isinstance(value.get("base64"), str)
    ):
        try:
            data = base64.b64decode(value["base64"], validate=True)
        except (binascii.Error, ValueError):
            return "b'…'"
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return repr(data)
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    return "…"


def _http(call: dict[str, Any], request: dict[str, Any]) -> str:
    url = str(request.get("url", "?"))
    try:
        parts = urlsplit(url)
    except ValueError:  # not a URL (a damaged cassette): shown as it is
        parts = None
    target = (
        f"{parts.netloc}{parts.path or '/'}{'?' + parts.query if parts.query else ''}"
        if parts and parts.netloc
        else url
    )
    return f"{call.get('library') or 'http'} {request.get('method', '?')} {target}"


def _sql_summary(statement: str) -> str:
    """``SELECT FROM users``: the statement's verb and the table it is mainly about."""
    words = statement.split(None, 1)
    verb = words[0].upper() if words else "?"
    if verb == "WITH":  # a common table expression: the statement proper follows it
        found = re.search(r"\)\s*(SELECT|INSERT|UPDATE|DELETE)\b", statement, re.IGNORECASE)
        verb = found.group(1).upper() if found else verb
    pattern = _TABLE_AFTER.get(verb)
    found = pattern.search(statement) if pattern else _DDL_OBJECT.match(statement)
    if found is None:
        return verb if pattern else _cut(statement, 60)
    table = found.group(1).strip('"`[]')
    return (
        " ".join(part for part in (verb, _JOINER.get(verb, ""), table) if part)
        if pattern
        else _cut(statement[: found.end()], 60)
    )


def _sql(request: dict[str, Any]) -> str:
    if request.get("operation") == "connect":
        return f"sql connect {request.get('dialect', '')}".rstrip()
    statement = request.get("statement")
    summary = _sql_summary(statement) if isinstance(statement, str) else "?"
    many = " (many)" if request.get("operation") in ("executemany", "fetchmany") else ""
    return f"sql {summary}{many}"


def _redis_command(command: Any) -> str:
    if not isinstance(command, dict):
        return "?"
    args = command.get("args")
    key = f" {_text_of(args[0])}" if isinstance(args, list) and args else ""
    return f"{_text_of(command.get('command', '?'))}{key}"


def _redis(request: dict[str, Any]) -> str:
    pipeline = request.get("pipeline")
    if isinstance(pipeline, list):
        name = "MULTI/EXEC" if request.get("transaction") else "pipeline"
        names = [
            _text_of(command.get("command", "?")) if isinstance(command, dict) else "?"
            for command in pipeline[:8]
        ]
        return f"redis {name} {', '.join(names)}{' …' if len(pipeline) > 8 else ''}"
    if request.get("pubsub") == "message":
        return "redis pub/sub message"
    return f"redis {'pub/sub ' if request.get('pubsub') else ''}{_redis_command(request)}"


def _mongo(call: dict[str, Any], request: dict[str, Any]) -> str:
    name = _text_of(request.get("command_name", "?"))
    command = request.get("command")
    collection = command.get(name) if isinstance(command, dict) else None
    target = _text_of(request.get("database", "?"))
    if isinstance(collection, str):
        target += f".{collection}"
    return f"{call.get('library') or 'mongo'} {name} {target}"


def _grpc(call: dict[str, Any], request: dict[str, Any]) -> str:
    response = call.get("response")
    code = response.get("code") if isinstance(response, dict) else None
    status = f" {_text_of(code)}" if code not in (None, "OK") else ""
    return f"grpc {_text_of(request.get('method', '?'))}{status}"


def _amqp(request: dict[str, Any]) -> str:
    """``amqp connect 127.0.0.1:5672``, ``amqp Basic.Publish exchange='orders' routing_key='orders.new'``
    (a publish by where it goes), ``amqp Queue.Declare`` (any other method by its name)."""
    if request.get("connect"):
        return f"amqp connect {_text_of(request.get('server', '?'))}"
    if request.get("wait"):
        return f"amqp waiting on {_text_of(request.get('server', '?'))}"
    method = _text_of(request.get("method", "?"))
    args = request.get("args")
    if method == "Basic.Publish" and isinstance(args, list) and len(args) >= 3:
        return f"amqp {method} exchange={_text_of(args[1])!r} routing_key={_text_of(args[2])!r}"
    return f"amqp {method}"


def _smtp(request: dict[str, Any]) -> str:
    """``smtp MAIL FROM:<a@example.com>``, ``smtp AUTH PLAIN`` (never its credentials), ``smtp
    message 'Welcome'`` (by its subject), ``smtp connect mail.example.com:587``."""
    if request.get("connect"):
        return f"smtp connect {_text_of(request.get('server', '?'))}"
    if "auth_response" in request:
        return "smtp AUTH response"
    message = request.get("message")
    if isinstance(message, dict):
        headers = message.get("headers")
        pairs = headers if isinstance(headers, list) else []
        subject = next(
            (
                pair[1]
                for pair in pairs
                if isinstance(pair, list) and len(pair) == 2 and str(pair[0]).lower() == "subject"
            ),
            "",
        )
        return f"smtp message {_text_of(subject)!r}"
    if "command" in request:
        return f"smtp {_text_of(request['command'])} {_text_of(request.get('args', ''))}".rstrip()
    return "smtp (lines sent together)"


def call_label(call: dict[str, Any]) -> str:
    """The library (or protocol) and the call's target, in one line of at most 160 characters."""
    request = call.get("request")
    request = request if isinstance(request, dict) else {}
    protocol = call.get("protocol")
    if protocol == "http":
        label = _http(call, request)
    elif protocol == "sql":
        label = _sql(request)
    elif protocol == "redis":
        label = _redis(request)
    elif protocol == "mongo":
        label = _mongo(call, request)
    elif protocol == "grpc":
        label = _grpc(call, request)
    elif protocol == "smtp":
        label = _smtp(request)
    elif protocol == "amqp":
        label = _amqp(request)
    else:
        label = f"{protocol} {call.get('library') or ''}".rstrip()
    return _cut(label)


def span_label(span: dict[str, Any], call: dict[str, Any] | None, doc: dict[str, Any]) -> str:
    """A span's label: its call's label, the request's method and route for the server span, else its name."""
    if call is not None:
        return call_label(call)
    request = doc.get("request") or {}
    if span.get("kind") == "SERVER" and request:
        return _cut(f"{request.get('method')} {request.get('route') or request.get('path')}")
    return _cut(str(span.get("name", "")))
