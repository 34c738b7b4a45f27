"""SMTP conversations as cassette data: the request shape, secret redaction, and the matching view.

A call is one exchange of a conversation: what the client sent since the server's last
reply, and the reply. Its request is one of

- ``{"server": "host:port", "connect": true}``: the greeting, read on connecting;
- ``{"server", "command": "MAIL", "args": "FROM:<a@example.com> SIZE=120"}``: a command
  line, its verb and ``MAIL``'s ``FROM:`` and ``RCPT``'s ``TO:`` upper-cased (their case means
  nothing to a server, and Python 3.13's smtplib sends them in lower case); ``AUTH`` keeps its mechanism in ``args`` and the initial
  response apart, in ``credentials``;
- ``{"server", "auth_response": "..."}``: a line sent in answer to a ``334`` challenge;
- ``{"server", "message": {"headers": [[name, value], ...], "content": ..., "parts": [...]}}``:
  the message sent after ``DATA``'s ``354``, dot-stuffing undone, each part's content
  with its transfer encoding undone (text as text, anything else as bytes), so a cassette
  shows the mail as it reads and redaction finds a token in a base64 body;
- ``{"server", "sent": "..."}``: anything else (lines pipelined before one reply).

Its response is ``{"code": 250, "message": "2.0.0 Ok"}``: the lines of a multi-line reply
joined by ``\\n``, text when it is UTF-8, else bytes.

Secrets (:func:`redact`): ``AUTH`` credentials and every answer to a challenge, whatever
the mechanism, and message headers named like a secret.

Matching compares the exchange as the application asked for it, less what belongs to the
machine or the process: the ``EHLO``/``HELO`` argument is the local host name, and a
message's ``Message-ID`` holds the sending process's id and host name
(:func:`email.utils.make_msgid`), so neither it nor the size ``MAIL FROM`` declares for the
message counts. Works on plain values: it never imports
a mail client.
"""

from __future__ import annotations

import email
import email.policy
import email.utils
import json
import re
from datetime import timezone
from typing import Any

from timetracer_otel.cassette.calls import CassetteCall, call_document
from timetracer_otel.cassette.values import decode_value, encode_value
from timetracer_otel.secret_names import SecretNames

from . import typed
from .trace_context import without_trace_context
from .view import CallView, server_view

__all__ = [
    "Conversation",
    "server_name",
    "aiosmtplib_address",
    "exchange_request",
    "exchange_verb",
    "reply_response",
    "reply_wire",
    "redact",
    "request_view",
    "live_view",
    "recorded_view",
    "usual_answer",
]

_CHALLENGE = 334  # AUTH goes on: the next line answers the server's challenge
_SEND_DATA = 354  # DATA accepted: the next thing sent is the message
_GREETINGS = frozenset({"EHLO", "HELO", "LHLO"})  # their argument is the client's host name
_UNSTUFFED = re.compile(rb"^\.", re.M)
# MAIL's FROM: and RCPT's TO:, which Python 3.13's smtplib sends in lower case: no server minds
_KEYWORD = re.compile(rb"^(?:from|to):", re.I)
# MAIL FROM's declared size: the message's, Message-ID included
_SIZE = re.compile(r" SIZE=\d+", re.I)
_DATED = frozenset({"date", "resent-date"})  # headers compared as the instant they name


def server_name(host: str, port: int) -> str:
    """``host:port`` (an IPv6 address in brackets), as calls name their server."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def aiosmtplib_address(client: Any) -> tuple[str, int]:
    """(host, port) an aiosmtplib ``SMTP`` client connects to, its defaults applied as it applies them."""
    return client.hostname or "localhost", client.port or client._get_default_port()


class Conversation:
    """One SMTP connection as its client speaks it: what was sent since the last reply, read
    by what that reply asked for (a message after ``354``, a challenge's answer after ``334``)."""

    __slots__ = ("server", "_sent", "_last")

    def __init__(self, server: str) -> None:
        self.server = server
        self._sent = bytearray()
        self._last: int | None = None  # the last reply's code; None until the greeting

    def sending(self, data: bytes | bytearray | memoryview | str) -> None:
        self._sent += data.encode("utf-8") if isinstance(data, str) else data

    def awaiting(self) -> dict[str, Any]:
        """The request of the exchange a reply is now awaited for; what is sent next is another's."""
        request = exchange_request(self.server, bytes(self._sent), self._last)
        self._sent.clear()
        return request

    def replied(self, code: int) -> None:
        self._last = code


def _text(data: bytes) -> str | bytes:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data


def exchange_request(server: str, sent: bytes, after: int | None) -> dict[str, Any]:
    """The request of an exchange: ``sent`` since the reply whose code was ``after`` (None: none yet)."""
    if after is None and not sent:
        return {"server": server, "connect": True}
    if after == _SEND_DATA:
        return {"server": server, "message": _message(sent)}
    line = sent[:-2] if sent.endswith(b"\r\n") else sent
    if after == _CHALLENGE:
        return {"server": server, "auth_response": _text(line)}
    if not line or b"\n" in line:
        return {"server": server, "sent": _text(sent)}
    verb, _, args = line.partition(b" ")
    request: dict[str, Any] = {"server": server, "command": verb.decode("latin-1").upper()}
    if request["command"] == "AUTH":
        mechanism, _, credentials = args.partition(b" ")
        request["args"] = _text(mechanism)
        if credentials:
            request["credentials"] = _text(credentials)
    elif request["command"] in ("MAIL", "RCPT"):
        request["args"] = _text(_KEYWORD.sub(lambda m: m.group(0).upper(), args, count=1))
    else:
        request["args"] = _text(args)
    return request


def exchange_verb(sent: bytes, after: int | None) -> str:
    """What an exchange is, for a span's name: ``connect`` (the greeting), the command's verb,
    ``AUTH`` for an answer to a challenge (never its content), ``DATA`` for the message."""
    if after == _SEND_DATA:
        return "DATA"
    if after == _CHALLENGE:
        return "AUTH"
    verb = sent.split(b" ", 1)[0].strip().decode("latin-1").upper()
    return verb or "connect"


def _message(sent: bytes) -> dict[str, Any]:
    """The message sent after ``354``: its final ``.`` line dropped and dot-stuffing undone."""
    data = _UNSTUFFED.sub(b"", sent[:-3] if sent.endswith(b".\r\n") else sent)
    message = email.message_from_bytes(data, policy=email.policy.compat32)
    document = _part(message)
    if message.is_multipart():
        document["parts"] = [_part(part) for part in message.walk() if part is not message]
    return document


def _part(part: email.message.Message) -> dict[str, Any]:
    """A part's headers, and its content unless it is itself multipart."""
    found: dict[str, Any] = {"headers": [[k, str(v)] for k, v in part.items()]}
    if not part.is_multipart():
        found["content"] = _content(part)
    return found


def _content(part: email.message.Message) -> str | bytes:
    """A part's content as it reads: its transfer encoding undone, text decoded by its charset."""
    payload = part.get_payload(decode=True)
    data = payload if isinstance(payload, bytes) else b""
    if part.get_content_maintype() == "text":
        try:
            return data.decode(part.get_content_charset() or "utf-8")
        except (LookupError, UnicodeDecodeError):
            return data
    return data


def _reply_bytes(message: bytes | str) -> bytes:
    """A reply's text as the server sent it (a client that gives text decoded it with ``surrogateescape``)."""
    return message.encode("utf-8", "surrogateescape") if isinstance(message, str) else message


def reply_response(code: int, message: bytes | str) -> dict[str, Any]:
    """The response of a reply: its code and its text (bytes when it is not UTF-8)."""
    return {"code": code, "message": _text(_reply_bytes(message))}


def reply_wire(code: int, message: bytes | str) -> bytes:
    """A reply as the server sends it: one ``code-text`` line per line of ``message``, the last ``code text``."""
    lines = _reply_bytes(message).split(b"\n")
    marks = [b"-"] * (len(lines) - 1) + [b" "]
    return b"".join(
        b"%d%s%s\r\n" % (code, mark, line) for mark, line in zip(marks, lines, strict=True)
    )


# --------------------------------------------------------------------------- secrets
def redact(
    request: dict[str, Any], response: dict[str, Any] | None, names: SecretNames, hide: typed.Hide
) -> None:
    """Hide, in place, ``AUTH`` credentials, answers to challenges and headers named like a
    secret in a message (in cassette form)."""
    for secret in ("credentials", "auth_response"):
        if secret in request:
            request[secret] = hide(request[secret])
    message = request.get("message")
    if isinstance(message, dict):
        for holder in (message, *message.get("parts", ())):
            for pair in holder.get("headers", ()):
                if names.header(pair[0]):
                    pair[1] = hide(pair[1])


# --------------------------------------------------------------------------- matching
def _canonical(value: Any) -> str:
    return without_trace_context(
        json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=repr)
    )


def _compared(message: dict[str, Any]) -> dict[str, Any]:
    """A message less its ``Message-ID`` (made of the process id and the host name), its dates
    as the instants they name."""
    headers = [
        [pair[0], _instant(pair[1])] if pair[0].lower() in _DATED else pair
        for pair in message.get("headers", ())
        if pair[0].lower() != "message-id"
    ]
    return {**message, "headers": headers}


def _instant(value: Any) -> Any:
    """A date header's value in UTC: ``formatdate(localtime=True)`` (the ``emails`` package,
    Django) writes the time zone of the process, and a replay in another one sends the same
    instant as another text."""
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return value
    if when.tzinfo is None:
        return value
    return email.utils.format_datetime(when.astimezone(timezone.utc))


def _subject(message: dict[str, Any]) -> str:
    return next((str(v) for k, v in message.get("headers", ()) if k.lower() == "subject"), "")


def request_view(request: dict[str, Any]) -> CallView:
    """The view of an SMTP exchange's request (secrets already hidden like a recording's)."""
    server = request["server"]
    key: tuple[Any, ...]
    if request.get("connect"):
        what, key, fields = "(connect)", ("connect",), {}
    elif "message" in request:
        message = _compared(request["message"])
        what = f"(message) {_subject(message)!r}"
        key = ("message", _canonical(message))
        fields = {
            "headers": _canonical(message["headers"]),
            "content": _canonical({k: v for k, v in message.items() if k != "headers"}),
        }
    elif "auth_response" in request:
        what, key = "(AUTH response)", ("auth response", _canonical(request["auth_response"]))
        fields = {"auth_response": _canonical(request["auth_response"])}
    elif "command" in request:
        command = request["command"]
        shown = "" if command in _GREETINGS else str(request.get("args", ""))
        args = _canonical(_SIZE.sub("", shown) if command == "MAIL" else shown)
        what = f"{command} {shown}".rstrip()
        key = ("command", command, args, _canonical(request.get("credentials")))
        fields = {"command": command, "args": shown}
    else:
        what, key = "(sent)", ("sent", _canonical(request.get("sent")))
        fields = {"sent": _canonical(request.get("sent"))}
    return server_view("smtp", str(server), what, key, fields)


def live_view(request: dict[str, Any], redactor: Any) -> CallView:
    """The view of an exchange being made, its secrets hidden by ``redactor`` (a
    :class:`~timetracer_otel.redaction.Redactor`) as the recording's were."""
    if redactor is None:
        return request_view(request)
    return request_view(decode_value(redactor.protocol_request("smtp", encode_value(request))))


def recorded_view(call: CassetteCall) -> CallView:
    """The view of a recorded SMTP exchange."""
    return request_view(call.decoded_request())


# Commands whose usual answer carries nothing: what a server says to them, for a process
# replaying without its recording (a client closing a connection it opened at startup).
_USUAL = {"QUIT": (221, "Bye"), "NOOP": (250, "OK"), "RSET": (250, "OK")}


def usual_answer(view: CallView) -> dict[str, Any] | None:
    """The call document of a server's usual answer to ``QUIT``, ``NOOP`` or ``RSET``, or None."""
    key = view.key
    if not isinstance(key, tuple) or len(key) < 5 or key[2] != "command" or key[4] != '""':
        return None
    usual = _USUAL.get(key[3])
    if usual is None:
        return None
    return call_document("smtp", None, encode_value(reply_response(*usual)))
