"""Redaction of secrets in a cassette document, before it is written or exported.

It works on the finished document, never on what the application sees: headers,
JSON, form and multipart bodies (JSON cut at the size limit too), query strings,
URL-like span attributes and error messages quoting a URL, and the payloads of SQL,
Redis and Mongo calls (see :mod:`timetracer_otel.protocols`). Which names are
secret is decided by :class:`~timetracer_otel.secret_names.SecretNames` alone.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, unquote_plus, urlsplit, urlunsplit

from .cassette.body import header_value, load_json
from .protocols import redact_call, redact_request
from .sealing import REDACTED
from .secret_names import DEFAULT_FIELDS, DEFAULT_HEADERS, SecretNames
from .secret_values import ValueScrubber, collect

if TYPE_CHECKING:
    from .config import TraceConfig
    from .sealing import Sealer

__all__ = ["Redactor", "REDACTED", "DEFAULT_HEADERS", "DEFAULT_FIELDS", "redactor_for"]

_URL_ATTRIBUTES = ("url.full", "http.url", "http.target", "url.query")
# Span event attributes that hold free text, such as an error message quoting a URL.
_TEXT_ATTRIBUTES = ("exception.message", "exception.stacktrace")
_COLON = re.compile(r"\s*:\s*")
_SCALAR = re.compile(r"[^,}\]\s]*")
# name=value in free text: a query string quoted by an error message.
_TEXT_PAIR = re.compile(r"([A-Za-z0-9_.\-]+)=([^&\s'\"<>()]*)")
# PostgreSQL's DETAIL of a key violation: "Key (api_key)=(sk-...) already exists.", "Key (a, b)=(1, x)".
_KEY_DETAIL = re.compile(r"Key \(([^()]*)\)=\(([^()]*)\)")
_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)
_PART_NAME = re.compile(r'content-disposition:[^\r\n]*;\s*name="([^"]*)"', re.IGNORECASE)


def _string_end(text: str, start: int) -> int:
    """The index after the JSON string opening at ``start`` (the text's end if it is cut)."""
    index = start + 1
    while index < len(text):
        if text[index] == "\\":
            index += 2
        elif text[index] == '"':
            return index + 1
        else:
            index += 1
    return len(text)


def _value_end(text: str, start: int) -> int:
    """The index after the JSON value at ``start``: a string, a whole container, or a scalar."""
    if start >= len(text):
        return start
    if text[start] == '"':
        return _string_end(text, start)
    if text[start] not in "{[":
        scalar = _SCALAR.match(text, start)
        return scalar.end() if scalar is not None else start
    depth, index = 0, start
    while index < len(text):
        char = text[index]
        if char == '"':
            index = _string_end(text, index)
            continue
        depth += char in "{["
        depth -= char in "}]"
        index += 1
        if depth == 0:
            break
    return index


def _json_key(quoted: str) -> str:
    try:
        key = json.loads(quoted)
    except ValueError:
        return quoted.strip('"')
    return key if isinstance(key, str) else quoted


class Redactor:
    """Replaces secret header values and fields with ``[REDACTED]`` in a cassette document,
    or with the value sealed (see :mod:`timetracer_otel.sealing`) where replay needs it back."""

    def __init__(self, names: SecretNames | None = None, sealer: Sealer | None = None) -> None:
        self.names = names or SecretNames()
        self._sealer = sealer

    def sealing(self, sealer: Sealer) -> Redactor:
        """The same redaction, sealing the values replay needs instead of dropping them."""
        return Redactor(self.names, sealer=sealer)

    def _hidden(self, text: str, kind: str = "s") -> str:
        return REDACTED if self._sealer is None else self._sealer.seal(text, kind)

    def _hidden_value(self, value: Any) -> Any:
        return REDACTED if self._sealer is None else self._sealer.seal_json(value)

    # -- primitives ---------------------------------------------------------------
    def is_secret_field(self, name: str) -> bool:
        return self.names.field(name)

    def headers(self, pairs: list | None) -> list | None:
        if not pairs:
            return pairs
        return [[k, self._hidden(v)] if self.names.header(k) else [k, v] for k, v in pairs]

    def json_value(self, value: Any) -> Any:
        """A copy of ``value`` with secret fields replaced; iterative, so no depth is too deep."""
        holder = [value]
        pending: list[tuple[Any, Any, Any]] = [(holder, 0, value)]
        while pending:
            parent, key, item = pending.pop()
            if isinstance(item, dict):
                parent[key] = copy = {}
                for name, child in item.items():
                    if isinstance(name, str) and self.is_secret_field(name):
                        copy[name] = self._hidden_value(child)
                    else:
                        copy[name] = child
                        pending.append((copy, name, child))
            elif isinstance(item, list):
                parent[key] = items = list(item)
                pending.extend((items, index, child) for index, child in enumerate(item))
        return holder[0]

    def query(self, query: str) -> str:
        """Secret values of a query string (or form body) replaced where they stand; the rest is kept byte for byte.

        A sealed value holds the value as it was encoded, so opening it restores the query exactly.
        """
        if not query:
            return query
        pairs = query.split("&")
        changed = False
        for index, pair in enumerate(pairs):
            name, equals, value = pair.partition("=")
            if equals and self.is_secret_field(unquote_plus(name)):
                pairs[index] = f"{name}={quote(self._hidden(value), safe='')}"
                changed = True
        return "&".join(pairs) if changed else query

    def url(self, url: str) -> str:
        parts = urlsplit(url)
        query = self.query(parts.query)
        if query == parts.query and not parts.password:
            return url
        if parts.password:
            netloc = parts.netloc.replace(
                f":{parts.password}@", f":{self._hidden(parts.password)}@", 1
            )
            parts = parts._replace(netloc=netloc)
        return urlunsplit(parts._replace(query=query))

    def _partial_secrets(self, text: str) -> Iterator[tuple[str, int, int]]:
        """(key, start, end) of each secret member's value in JSON text that does not parse."""
        index = 0
        while index < len(text):
            if text[index] != '"':
                index += 1
                continue
            end = _string_end(text, index)
            colon = _COLON.match(text, end)
            if colon is not None and self.is_secret_field(key := _json_key(text[index:end])):
                end = _value_end(text, colon.end())
                yield key, colon.end(), end
            index = end

    def partial_json(self, text: str) -> str:
        """Redact secret members of JSON text that does not parse (a body cut at the limit).

        The value of a secret key goes whole, nested containers included, even when the
        cut falls inside it.
        """
        out: list[str] = []
        done = 0
        for _, start, end in self._partial_secrets(text):
            out.append(text[done:start] + f'"{self._hidden(text[start:end], "r")}"')
            done = end
        out.append(text[done:])
        return "".join(out)

    def _named_in_text(self, text: str) -> list[tuple[int, int]]:
        """(start, end) of each value a message quotes under a secret name: ``name=value`` (a URL
        quoted by an error), PostgreSQL's ``Key (column)=(value)``; in order, none overlapping."""
        spans = [
            match.span(2)
            for match in _TEXT_PAIR.finditer(text)
            if self.is_secret_field(match.group(1))
        ]
        for match in _KEY_DETAIL.finditer(text) if "Key (" in text else ():
            columns = [column.strip().strip('"') for column in match.group(1).split(",")]
            values = match.group(2).split(", ")
            # a value holding ", ": the whole tuple goes if a column is secret
            if len(values) != len(columns):
                columns, values = (
                    [c for c in columns if self.is_secret_field(c)][:1],
                    [match.group(2)],
                )
            start = match.start(2)
            for column, value in zip(columns, values, strict=False):
                if self.is_secret_field(column):
                    spans.append((start, start + len(value)))
                start += len(value) + 2
        kept: list[tuple[int, int]] = []
        for start, end in sorted(spans):
            if not kept or start >= kept[-1][1]:
                kept.append((start, end))
        return kept

    def text_secrets(self, text: str) -> set[str]:
        """The values :meth:`free_text` hides in ``text``."""
        return {text[start:end] for start, end in self._named_in_text(text)}

    def free_text(self, text: str) -> str:
        """Redact the values a message quotes under a secret name (see :meth:`_named_in_text`)."""
        for start, end in reversed(self._named_in_text(text)):
            text = text[:start] + REDACTED + text[end:]
        return text

    def _secret_parts(self, parts: list[str]) -> Iterator[tuple[int, str, str, str]]:
        """(index, name, head with its blank line, content) of each form part whose name is a secret field."""
        for index, part in enumerate(parts):
            head, blank, content = part.partition("\r\n\r\n")
            name = _PART_NAME.search(head)
            if blank and name is not None and self.is_secret_field(name.group(1)):
                yield index, name.group(1), head + blank, content

    def multipart(self, text: str, boundary: str) -> str:
        """Redact the content of form parts whose name is a secret field."""
        delimiter = f"--{boundary}"
        parts = text.split(delimiter)
        for index, _, head, content in self._secret_parts(parts):
            ending = "\r\n" if content.endswith("\r\n") else ""
            parts[index] = head + self._hidden(content[: len(content) - len(ending)]) + ending
        return delimiter.join(parts)

    def binary_multipart(self, data: bytes, boundary: str) -> list[dict[str, str]] | None:
        """A binary multipart body as segments with the content of secret parts hidden; None when it has none.

        A sealed value must stay visible in the document to be opened, so it cannot sit inside
        base64: the other bytes stay base64, around the hidden contents.
        """
        delimiter = f"--{boundary}"
        # one character per byte: the bytes come back exactly
        parts = data.decode("latin-1").split(delimiter)
        secret = {index: (head, content) for index, _, head, content in self._secret_parts(parts)}
        if not secret:
            return None
        segments: list[dict[str, str]] = []
        kept: list[str] = []
        for index, part in enumerate(parts):
            kept.append(delimiter if index else "")
            if index not in secret:
                kept.append(part)
                continue
            head, content = secret[index]
            ending = "\r\n" if content.endswith("\r\n") else ""
            segments += [
                _latin1_segment("".join(kept) + head),
                self._hidden_segment(content[: len(content) - len(ending)]),
            ]
            kept = [ending]
        return [*segments, _latin1_segment("".join(kept))]

    def _hidden_segment(self, content: str) -> dict[str, str]:
        """A secret part's content (bytes as latin-1 text), hidden: as text when it is UTF-8, else its base64."""
        raw = content.encode("latin-1")
        try:
            return {"text": self._hidden(raw.decode("utf-8"))}
        except UnicodeDecodeError:
            return {"base64": self._hidden(base64.b64encode(raw).decode("ascii"))}

    @staticmethod
    def _text_kind(text: str, headers: list | None) -> tuple[str, str | None]:
        """How a text body is redacted: ("form" | "multipart" | "json" | "plain", the multipart boundary)."""
        raw_type = header_value(headers or [], "content-type") or ""
        content_type = raw_type.lower()
        if "application/x-www-form-urlencoded" in content_type:
            return "form", None
        # case kept
        boundary = _BOUNDARY.search(raw_type) if content_type.startswith("multipart/") else None
        if boundary is not None:
            return "multipart", boundary.group(1)
        return ("json" if text.lstrip()[:1] in ("{", "[") else "plain"), None

    def body(self, body: dict | None, headers: list | None) -> None:
        """Redact an encoded cassette body in place."""
        if not body:
            return
        encoding = body.get("encoding")
        if encoding == "json":
            body["json"] = self.json_value(body["json"])
            return
        if encoding == "base64":
            kind, boundary = self._text_kind("", headers)
            segments = (
                self.binary_multipart(base64.b64decode(body["base64"]), boundary or "")
                if kind == "multipart"
                else None
            )
            if segments is not None:
                del body["base64"]
                body.update(encoding="segments", segments=segments)
            return
        if encoding != "text":
            return
        text = body["text"]
        kind, boundary = self._text_kind(text, headers)
        if kind == "form":
            body["text"] = self.query(text)
        elif kind == "multipart":
            body["text"] = self.multipart(text, boundary or "")
        elif kind == "json":
            try:
                parsed = load_json(text)
            except ValueError:
                body["text"] = self.partial_json(text)
                return
            redacted = self.json_value(parsed)
            if redacted != parsed:
                del body["text"]
                body.update(encoding="json", json=redacted, json_format="compact")

    def _json_secrets(self, value: Any) -> Iterator[tuple[str, str]]:
        """(path, value) of each member :meth:`json_value` would replace."""
        pending: list[tuple[str, Any]] = [("$", value)]
        while pending:
            path, item = pending.pop()
            members = (
                item.items()
                if isinstance(item, dict)
                else enumerate(item)
                if isinstance(item, list)
                else ()
            )
            for name, child in members:
                where = f"{path}.{name}" if isinstance(item, dict) else f"{path}[{name}]"
                if isinstance(name, str) and self.is_secret_field(name):
                    yield (
                        where,
                        child
                        if isinstance(child, str)
                        else json.dumps(child, sort_keys=True, ensure_ascii=False),
                    )
                else:
                    pending.append((where, child))

    def _body_secrets(self, body: dict | None, headers: list | None) -> Iterator[tuple[str, str]]:
        if not body:
            return
        if body.get("encoding") == "json":
            yield from self._json_secrets(body["json"])
            return
        if body.get("encoding") == "base64":
            kind, boundary = self._text_kind("", headers)
            if kind == "multipart":
                parts = base64.b64decode(body["base64"]).decode("latin-1").split(f"--{boundary}")
                yield from ((name, content) for _, name, _, content in self._secret_parts(parts))
            return
        if body.get("encoding") != "text":
            return
        text = body["text"]
        kind, boundary = self._text_kind(text, headers)
        if kind == "form":
            yield from (
                (name, value)
                for name, value in parse_qsl(text, keep_blank_values=True)
                if self.is_secret_field(name)
            )
        elif kind == "multipart":
            yield from (
                (name, content)
                for _, name, _, content in self._secret_parts(text.split(f"--{boundary}"))
            )
        elif kind == "json":
            try:
                yield from self._json_secrets(load_json(text))
            except ValueError:
                yield from (
                    (key, text[start:end]) for key, start, end in self._partial_secrets(text)
                )

    def secrets(self, message: dict | None) -> list[tuple[str, str]]:
        """(where, value) of each value :meth:`message` would replace in an inbound request, sorted.

        Taken before redaction, to fingerprint what redaction removes: the same names and
        decisions as redaction, so the two never disagree about what is secret.
        """
        if not message:
            return []
        headers = message.get("headers")
        found = [(f"header {k.lower()}", v) for k, v in headers or () if self.names.header(k)]
        found += [
            (f"query {k}", v)
            for k, v in parse_qsl(message.get("query") or "", keep_blank_values=True)
            if self.is_secret_field(k)
        ]
        found += [
            (f"body {where}", value)
            for where, value in self._body_secrets(message.get("body"), headers)
        ]
        return sorted(found)

    def message(self, message: dict | None) -> None:
        """Redact an HTTP request or response of the document in place."""
        if not message:
            return
        message["headers"] = self.headers(message.get("headers"))
        if "query" in message:
            message["query"] = self.query(message["query"])
        if "url" in message:
            message["url"] = self.url(message["url"])
        self.body(message.get("body"), message.get("headers"))

    def attributes(self, attributes: dict[str, Any]) -> None:
        """Redact span or event attributes in place (by name; values are :mod:`.secret_values`' job)."""
        for name, value in attributes.items():
            if name in _URL_ATTRIBUTES and isinstance(value, str):
                attributes[name] = self.query(value) if name == "url.query" else self.url(value)
            elif name in _TEXT_ATTRIBUTES and isinstance(value, str):
                attributes[name] = self.free_text(value)
            elif ".header." in name and self.names.header(name.rsplit(".", 1)[-1]):
                attributes[name] = [REDACTED] if isinstance(value, (list, tuple)) else REDACTED

    def error(self, error: dict | None) -> None:
        if error and isinstance(error.get("message"), str):
            error["message"] = self.free_text(error["message"])

    def span(self, span: dict[str, Any]) -> None:
        """Redact a cassette span by name."""
        self.attributes(span.get("attributes", {}))
        status = span.get("status") or {}
        if isinstance(status.get("description"), str):
            status["description"] = self.free_text(status["description"])
        for event in span.get("events", ()):
            self.attributes(event.get("attributes", {}))

    def protocol_request(self, protocol: str, request: dict[str, Any]) -> dict[str, Any]:
        """A live SQL, Redis or Mongo request in cassette form (typed values), hidden in place as a recording's is."""
        return redact_request(protocol, request, self.names, self._hidden_value)

    # -- the whole document -------------------------------------------------------
    def document(self, doc: dict[str, Any]) -> dict[str, Any]:
        """Redact ``doc`` in place, by name and then by value (see :mod:`.secret_values`)."""
        found = collect(self, doc)  # before redaction by name takes them out
        self.message(doc.get("request"))
        self.message(doc.get("response"))
        self.error(doc.get("error"))
        for call in doc.get("calls", ()):
            if call.get("protocol", "http") == "http":
                self.message(call.get("request"))
                self.message(call.get("response"))
            else:
                redact_call(call, self.names, self._hidden_value)
            self.error(call.get("error"))
        for span in doc.get("spans", ()):
            self.span(span)
        self.draws(doc.get("draws"))
        doc.update(ValueScrubber(found, self._sealer).value(doc))
        return doc

    def draws(self, draws: Any) -> None:
        """Values drawn from ``secrets`` (or ``random.SystemRandom``) are tokens and keys: hidden (sealed
        with a key). In replay without the key such a draw finds no value and gets a fresh one (an extra draw)."""
        for draw in draws if isinstance(draws, list) else ():
            if isinstance(draw, dict) and draw.get("source") == "secrets":
                draw["value"] = self._hidden_value(draw["value"])


def _latin1_segment(text: str) -> dict[str, str]:
    return {"base64": base64.b64encode(text.encode("latin-1")).decode("ascii")}


@lru_cache(maxsize=64)
def _cached_redactor(
    headers: tuple[str, ...], fields: tuple[str, ...], exempt: tuple[str, ...]
) -> Redactor:
    return Redactor(SecretNames(headers, fields, exempt))


def redactor_for(config: TraceConfig) -> Redactor | None:
    """The redactor a config asks for (one per distinct set of names), or None when redaction is off."""
    if not config.redact:
        return None
    return _cached_redactor(
        tuple(config.redact_headers), tuple(config.redact_fields), tuple(config.redact_exempt)
    )
