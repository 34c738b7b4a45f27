"""Redaction of secrets in a cassette document, before it is written or exported.

It works on the finished document, never on what the application sees: headers,
JSON and form bodies, query strings and URL-like span attributes. Field names match
whole keys, case-insensitively, ignoring ``_`` and ``-`` (``api_key`` = ``API-Key``),
so ``page`` or ``shipping`` never match ``token`` or ``password``.
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterable, Optional
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .cassette.body import header_value

__all__ = ["Redactor", "REDACTED", "DEFAULT_HEADERS", "DEFAULT_FIELDS"]

REDACTED = "[REDACTED]"
DEFAULT_HEADERS = ("authorization", "cookie", "set-cookie", "proxy-authorization", "x-api-key")
DEFAULT_FIELDS = (
    "password",
    "passwd",
    "secret",
    "token",
    "access_token",
    "refresh_token",
    "api_key",
    "apikey",
    "client_secret",
    "authorization",
)
_URL_ATTRIBUTES = ("url.full", "http.url", "http.target", "url.query")
# "key": value inside JSON-looking text that does not parse (a truncated body).
_JSON_PAIR = re.compile(r'"((?:[^"\\]|\\.)*)"(\s*:\s*)("(?:[^"\\]|\\.)*"?|[^,}\]\s]+)')


def _field_key(name: str) -> str:
    return name.lower().replace("_", "").replace("-", "")


class Redactor:
    """Replaces secret header values and fields with ``[REDACTED]`` in a cassette document."""

    def __init__(self, extra_headers: Iterable[str] = (), extra_fields: Iterable[str] = ()) -> None:
        self._headers = frozenset(h.lower() for h in (*DEFAULT_HEADERS, *extra_headers))
        self._fields = frozenset(_field_key(f) for f in (*DEFAULT_FIELDS, *extra_fields))

    # -- primitives ---------------------------------------------------------------
    def is_secret_field(self, name: str) -> bool:
        return _field_key(name) in self._fields

    def headers(self, pairs: Optional[list]) -> Optional[list]:
        if not pairs:
            return pairs
        return [[k, REDACTED] if k.lower() in self._headers else [k, v] for k, v in pairs]

    def json_value(self, value: Any) -> Any:
        if isinstance(value, dict):
            return {
                k: (REDACTED if isinstance(k, str) and self.is_secret_field(k) else self.json_value(v))
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [self.json_value(v) for v in value]
        return value

    def query(self, query: str) -> str:
        if not query:
            return query
        pairs = parse_qsl(query, keep_blank_values=True)
        if not any(self.is_secret_field(k) for k, _ in pairs):
            return query
        return urlencode([(k, REDACTED if self.is_secret_field(k) else v) for k, v in pairs])

    def url(self, url: str) -> str:
        parts = urlsplit(url)
        query = self.query(parts.query)
        if query == parts.query and not parts.password:
            return url
        if parts.password:
            netloc = parts.netloc.replace(f":{parts.password}@", f":{REDACTED}@", 1)
            parts = parts._replace(netloc=netloc)
        return urlunsplit(parts._replace(query=query))

    def _text_pairs(self, text: str) -> str:
        def swap(match: re.Match) -> str:
            if self.is_secret_field(match.group(1)):
                return f'"{match.group(1)}"{match.group(2)}"{REDACTED}"'
            return match.group(0)

        return _JSON_PAIR.sub(swap, text)

    def body(self, body: Optional[dict], headers: Optional[list]) -> None:
        """Redact an encoded cassette body in place."""
        if not body:
            return
        encoding = body.get("encoding")
        if encoding == "json":
            body["json"] = self.json_value(body["json"])
            return
        if encoding != "text":
            return
        text = body["text"]
        content_type = (header_value(headers or [], "content-type") or "").lower()
        if "application/x-www-form-urlencoded" in content_type:
            body["text"] = self.query(text)
            return
        if text.lstrip()[:1] in ("{", "["):
            try:
                parsed = json.loads(text)
            except ValueError:
                body["text"] = self._text_pairs(text)
                return
            redacted = self.json_value(parsed)
            if redacted != parsed:
                del body["text"]
                body.update(encoding="json", json=redacted, json_format="compact")

    def message(self, message: Optional[dict]) -> None:
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
        for name, value in attributes.items():
            if name in _URL_ATTRIBUTES and isinstance(value, str):
                attributes[name] = self.query(value) if name == "url.query" else self.url(value)
            elif ".header." in name and name.rsplit(".", 1)[-1].replace("_", "-") in self._headers:
                attributes[name] = [REDACTED] if isinstance(value, (list, tuple)) else REDACTED

    # -- the whole document -------------------------------------------------------
    def document(self, doc: dict[str, Any]) -> dict[str, Any]:
        self.message(doc.get("request"))
        self.message(doc.get("response"))
        for call in doc.get("calls", ()):
            self.message(call.get("request"))
            self.message(call.get("response"))
        for span in doc.get("spans", ()):
            self.attributes(span.get("attributes", {}))
        return doc
