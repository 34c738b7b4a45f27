"""Redaction of secrets in a cassette document, before it is written or exported.

It works on the finished document, never on what the application sees: headers,
JSON, form and multipart bodies (JSON cut at the size limit too), query strings,
URL-like span attributes and error messages quoting a URL, and the payloads of SQL,
Redis and Mongo calls (see :mod:`timetracer_otel.protocols`). Which names are
secret is decided by :class:`~timetracer_otel.secret_names.SecretNames` alone.

One walk of the document both hides what is secret by name and notes each value it takes
out: those are then hidden wherever else they appear (:mod:`.secret_values`), and the
inbound request's make its fingerprint.
"""

from __future__ import annotations

import base64
import functools
import json
import re
from collections.abc import Iterable, Iterator
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, unquote_plus, urlsplit, urlunsplit

from ._fingerprint import fingerprint
from ._json_text import member_text, with_members_hidden
from .cassette.body import header_value, load_json
from .cassette.values import ValueDecodeError, decode_value
from .protocols import redact_call, redact_request
from .protocols.typed import RawJson, names_a_secret_member, with_secret_members_hidden
from .protocols.typed import text as typed_text
from .sealing import RAW_JSON, REDACTED, hidden_whole
from .secret_names import DEFAULT_FIELDS, DEFAULT_HEADERS, PAIR_LABELS, SecretNames
from .secret_values import (
    OTEL_REDACTED,
    RecentSecrets,
    ValueScrubber,
    free_text_secrets,
    header_secrets,
    kept_credentials,
    usable,
)

if TYPE_CHECKING:
    from ._keys import Key
    from .config import TraceConfig
    from .sealing import Sealer
    from .secret_columns import SecretColumns

__all__ = ["Redactor", "REDACTED", "DEFAULT_HEADERS", "DEFAULT_FIELDS", "redactor_for"]

# Draw sources whose values are secrets: ``os.urandom``'s bytes make reset tokens and salts.
_SEALED_DRAWS = frozenset(("secrets", "urandom"))
_URL_ATTRIBUTES = ("url.full", "http.url", "http.target", "url.query")
# Headers holding a URL whose query may carry a credential (a redirect's OAuth code).
_URL_HEADERS = frozenset(("location", "content-location", "referer"))
# Span event attributes that hold free text, such as an error message quoting a URL.
_TEXT_ATTRIBUTES = ("exception.message", "exception.stacktrace")
# name=value in free text: a query string quoted by an error message.
_TEXT_PAIR = re.compile(r"([A-Za-z0-9_.\-]+)=([^&\s'\"<>()]*)")
# PostgreSQL's DETAIL of a key violation: "Key (api_key)=(sk-...) already exists.", "Key (a, b)=(1, x)".
_KEY_DETAIL = re.compile(r"Key \(([^()]*)\)=\(([^()]*)\)")
_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)
_PART_NAME = re.compile(r'content-disposition:[^\r\n]*;\s*name="([^"]*)"', re.IGNORECASE)


def _json_text(value: Any) -> str:
    """A JSON member's value as it is searched for elsewhere: a string as it is, anything else as JSON."""
    return (
        value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=False)
    )


def _utf8_part(content: str) -> str | None:
    """A multipart part's content (bytes as latin-1 text) as UTF-8 text, or None when it is not."""
    try:
        return content.encode("latin-1").decode("utf-8")
    except UnicodeDecodeError:
        return None


class _Taken:
    """What one pass of redaction by name takes out of a document."""

    __slots__ = ("values", "pairs")

    def __init__(self) -> None:
        # to hide wherever else they appear (see secret_values)
        self.values: set[str] = set()
        # (where, value) of each, while the inbound request is redacted (for its fingerprint)
        self.pairs: list[tuple[str, str]] | None = None


# Protocols whose hidden bytes are hidden whole, not as bytes: a gRPC message's serialized form
# is parsed in replay, and b"[REDACTED]" standing for it would be taken for one.
_WHOLE_BYTES = frozenset(("grpc",))


class Redactor:
    """Replaces secret header values and fields with ``[REDACTED]`` in a cassette document,
    or with the value sealed (see :mod:`timetracer_otel.sealing`) where replay needs it back."""

    def __init__(self, names: SecretNames | None = None, sealer: Sealer | None = None) -> None:
        self.names = names or SecretNames()
        self._sealer = sealer
        self._taken: _Taken | None = None  # on the copy that redacts one document (see _taking)

    def sealing(self, sealer: Sealer) -> Redactor:
        """The same redaction, sealing the values replay needs instead of dropping them."""
        return Redactor(self.names, sealer=sealer)

    def _taking(self) -> Redactor:
        """A copy that notes what it takes out: one walk both redacts and finds the values to hide elsewhere."""
        taking = Redactor(self.names, self._sealer)
        taking._taken = _Taken()
        return taking

    def _took(self, where: str, value: str, *more: str) -> None:
        """Note ``value`` taken out (``more``: other forms of it to hide elsewhere); ``where`` names
        it in the request's fingerprint."""
        taken = self._taken
        if taken is None:
            return
        taken.values.add(value)
        taken.values.update(more)
        if taken.pairs is not None:
            taken.pairs.append((where, value))

    def _hidden(self, text: str, kind: str = "s") -> str:
        return REDACTED if self._sealer is None else self._sealer.seal(text, kind)

    def _hidden_value(self, value: Any, keep_type: bool = True) -> Any:
        """``value`` sealed or redacted; a boolean, a null or an empty list or object as it is:
        no secret, and read back as ``[REDACTED]`` without the key (a ``password_needs_reset``
        column, truthy; ZenML's ``"secrets": []``, ten long) it changed what the app did."""
        if (
            value is None
            or isinstance(value, bool)
            or (isinstance(value, (list, dict)) and not value)
        ):
            return value
        if isinstance(value, RawJson):  # a member's value inside JSON text, put back as it was
            return self._hidden(value, RAW_JSON)
        return hidden_whole(value, self._sealer, keep_type)

    def _hidden_typed(self, value: Any, keep_type: bool = True) -> Any:
        """A typed value of an SQL, Redis or Mongo call, hidden (and noted as text when it is some)."""
        if self._taken is not None:
            shown = member_text(value) if isinstance(value, RawJson) else typed_text(value)
            if shown is not None:
                self._took("call", shown)
        return self._hidden_value(value, keep_type)

    # -- primitives ---------------------------------------------------------------
    def is_secret_field(self, name: str) -> bool:
        return self.names.field(name)

    def headers(self, pairs: list | None) -> list | None:
        if not pairs:
            return pairs
        kept = []
        for k, v in pairs:
            if self.names.header(k):
                self._took(f"header {k.lower()}", v, *header_secrets(k, v))
                v = self._hidden(v)
            elif k.lower() in _URL_HEADERS and isinstance(v, str):
                v = self.url(v)
            kept.append([k, v])
        return kept

    def json_value(self, value: Any) -> Any:
        """A copy of ``value`` with secret fields replaced; iterative, so no depth is too deep.

        An OpenAPI document (FastAPI's ``/openapi.json``) is left whole: its member names are
        schema and path names (``Token``, ``NewPassword``, ``/login/access-token``), not the
        fields of a payload, and sealing them made the document unreadable and its replay
        unverifiable without the key. What redaction takes out elsewhere is still taken out
        of it by value."""
        if _describes_an_api(value):
            return value
        holder = [value]
        # (container, key, item, the item's JSONPath-like place: "$.user.tokens[0]")
        pending: list[tuple[Any, Any, Any, str]] = [(holder, 0, value, "$")]
        while pending:
            parent, key, item, path = pending.pop()
            if isinstance(item, dict):
                parent[key] = copy = {}
                named = self._named_secret_member(item)
                for name, child in item.items():
                    if isinstance(name, str) and (self.is_secret_field(name) or name == named):
                        if self._taken is not None:
                            self._took(f"body {path}.{name}", _json_text(child))
                        copy[name] = self._hidden_value(child)
                    elif isinstance(child, str):
                        copy[name] = self._json_text_members(child, f"{path}.{name}")
                    else:
                        copy[name] = child
                        if isinstance(child, (dict, list)):
                            pending.append((copy, name, child, f"{path}.{name}"))
            elif isinstance(item, list):
                parent[key] = items = list(item)
                for index, child in enumerate(item):
                    if isinstance(child, (dict, list)):
                        pending.append((items, index, child, f"{path}[{index}]"))
                    elif isinstance(child, str):
                        items[index] = self._json_text_members(child, f"{path}[{index}]")
        return holder[0]

    def _json_text_members(self, text: str, path: str) -> str:
        """``text``, where it is JSON text with members named like a secret (a connection's
        ``extra`` that Airflow takes as a string), with each such member's value hidden in place."""

        def hide(raw: Any) -> Any:
            if self._taken is not None:
                self._took(f"body {path}", member_text(raw))
            return self._hidden_value(raw)

        return str(with_secret_members_hidden(text, self.names, hide))

    def _named_secret_member(self, item: dict) -> str | None:
        """The member of ``item`` that a sibling says holds a secret: the ``input`` of a validation
        error about a secret field (pydantic's, in FastAPI's 422: it echoes the value sent, which
        may be too short to be found by value), or the ``value`` of a name-value pair whose
        ``name`` or ``key`` is a secret's (a settings entry, Prefect's variable
        ``openai_api_key``; a config row shown with both, ``{"name": "Mail password", "key":
        "EMAIL_PASSWORD", "value": ...}``)."""
        loc = item.get("loc") if "input" in item else None
        if isinstance(loc, list):
            names = [part for part in loc if isinstance(part, str)]
            return "input" if names and self.is_secret_field(names[-1]) else None
        if "value" not in item:
            return None
        labels = (item.get(name) for name in PAIR_LABELS)
        secret = any(isinstance(label, str) and self.is_secret_field(label) for label in labels)
        return "value" if secret else None

    def query(self, query: str, where: str = "query") -> str:
        """Secret values of a query string (or form body) replaced where they stand; the rest is kept byte for byte.

        A sealed value holds the value as it was encoded, so opening it restores the query exactly.
        """
        if not query:
            return query
        pairs = query.split("&")
        changed = False
        secret = {index: name for index, name, _ in self.names.secret_parameters(pairs)}
        for index, pair in enumerate(pairs):
            name, equals, value = pair.partition("=")
            if index in secret:
                self._took(f"{where} {secret[index]}", unquote_plus(value))
            elif value[:1] in ("{", "[", "%") and self._holds_secret_members(
                decoded := unquote_plus(value)
            ):
                self._took(f"{where} {unquote_plus(name)}", decoded)
            else:
                continue
            if equals:
                pairs[index] = f"{name}={quote(self._hidden(value), safe='')}"
                changed = True
        return "&".join(pairs) if changed else query

    def _holds_secret_members(self, text: str) -> bool:
        """Whether ``text`` is JSON text with members named like a secret (a form field holding a
        config, ``{"host": ..., "api_key": ...}``): hidden whole where it stands, and each such
        member's value noted, to be hidden wherever else it appears (the SQL statement a MySQL
        driver inlines it into, its span)."""
        if not names_a_secret_member(text, self.names):
            return False
        try:
            parsed = json.loads(text)
        except (ValueError, RecursionError):
            return False
        return bool(self.json_value(parsed) != parsed)

    def url(self, url: str) -> str:
        """``url`` with the secrets of its query and fragment (an implicit grant's
        ``#access_token=...``) and its password hidden."""
        parts = urlsplit(url)
        query, fragment = self.query(parts.query), self.query(parts.fragment, "fragment")
        # OpenTelemetry's own placeholder (a span's url.full) is no password
        password = parts.password if parts.password != OTEL_REDACTED else None
        if query == parts.query and fragment == parts.fragment and not password:
            return url
        if password:
            self._took("url password", unquote(password))
            # encoded: a sealed value's brackets would read as an IPv6 host
            hidden = quote(self._hidden(password), safe="")
            netloc = parts.netloc.replace(f":{password}@", f":{hidden}@", 1)
            parts = parts._replace(netloc=netloc)
        return urlunsplit(parts._replace(query=query, fragment=fragment))

    def partial_json(self, text: str) -> str:
        """Redact secret members of JSON text that does not parse (a body cut at the limit).

        The value of a secret key goes whole, nested containers included, even when the
        cut falls inside it.
        """
        return with_members_hidden(text, self.is_secret_field, self._hidden_member)

    def _hidden_member(self, name: str, raw: str) -> str:
        """A secret member's raw value in JSON text, noted and hidden (see :mod:`._json_text`)."""
        self._took(f"body {name}", member_text(raw))
        return self._hidden(raw, RAW_JSON)

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
        for index, name, head, content in self._secret_parts(parts):
            ending = "\r\n" if content.endswith("\r\n") else ""
            kept = content[: len(content) - len(ending)]
            self._took(f"body {name}", content, kept)
            parts[index] = head + self._hidden(kept) + ending
        return delimiter.join(parts)

    def binary_multipart(self, data: bytes, boundary: str) -> list[dict[str, str]] | None:
        """A binary multipart body as segments with the content of secret parts hidden; None when it has none.

        A sealed value must stay visible in the document to be opened, so it cannot sit inside
        base64: the other bytes stay base64, around the hidden contents.
        """
        delimiter = f"--{boundary}"
        # one character per byte: the bytes come back exactly
        parts = data.decode("latin-1").split(delimiter)
        secret = {
            index: (name, head, content) for index, name, head, content in self._secret_parts(parts)
        }
        if not secret:
            return None
        segments: list[dict[str, str]] = []
        kept: list[str] = []
        for index, part in enumerate(parts):
            kept.append(delimiter if index else "")
            if index not in secret:
                kept.append(part)
                continue
            name, head, content = secret[index]
            ending = "\r\n" if content.endswith("\r\n") else ""
            hidden = content[: len(content) - len(ending)]
            as_text = _utf8_part(hidden)
            self._took(f"body {name}", content, *(() if as_text is None else (as_text,)))
            segments += [
                _latin1_segment("".join(kept) + head),
                self._hidden_segment(hidden, as_text),
            ]
            kept = [ending]
        return [*segments, _latin1_segment("".join(kept))]

    def _hidden_segment(self, content: str, as_text: str | None) -> dict[str, str]:
        """A secret part's content (bytes as latin-1 text), hidden: as text when it is UTF-8 (``as_text``), else its base64."""
        if as_text is not None:
            return {"text": self._hidden(as_text)}
        return {"base64": self._hidden(base64.b64encode(content.encode("latin-1")).decode("ascii"))}

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
            body["text"] = self.query(text, "body")
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
        hide = functools.partial(self._hidden_value, keep_type=protocol not in _WHOLE_BYTES)
        return redact_request(protocol, request, self.names, hide)

    # -- the whole document -------------------------------------------------------
    def document(
        self,
        doc: dict[str, Any],
        key: Key | None = None,
        recent: RecentSecrets | None = None,
        given: Iterable[str] = (),
        columns: SecretColumns | None = None,
    ) -> dict[str, Any]:
        """Redact ``doc`` in place, by name and then by value (see :mod:`.secret_values`).

        With ``key``, the inbound request gets the fingerprint of what redaction takes out of
        it: replay tells apart requests that differ only in their secrets. ``recent``: the
        secrets of earlier documents, hidden in this one too; this one's are added to them.
        ``given``: secrets found outside ``doc``, hidden in it by value as its own are.
        ``columns``: the SQL columns learned to hold secrets; their values are hidden too.
        """
        found, request_secrets = self._taking()._by_name(doc)
        found |= usable(given)
        earlier = recent.found_in(doc) if recent is not None else set()
        if columns is not None:
            found |= usable(columns.values_in(doc, found | earlier))
        request = doc.get("request")  # a process cassette has none
        if key is not None and request is not None:
            request["fingerprint"] = fingerprint(request_secrets, key)
        if recent is not None:
            recent.remember(found)
            found = found | earlier
        if found:
            doc.update(ValueScrubber(found, self._sealer).value(doc, document=True))
        return doc

    def secret_values(self, doc: dict[str, Any]) -> frozenset[str]:
        """The secret values of a cassette document, wherever they stand; ``doc`` is redacted by name to find them."""
        return self._taking()._by_name(doc)[0]

    def request_secrets(self, message: dict[str, Any]) -> list[tuple[str, str]]:
        """Redact an inbound request (headers, query, body) in place as its recording was: by name,
        then each value taken out (a cookie's, say) and each JWT hidden wherever else the request
        repeats it (a form field holding the cookie's value). (where, value) of each secret taken
        out by name, sorted: what its fingerprint is made of."""
        taking = self._taking()
        tokens = kept_credentials(message, self.names)
        pairs = taking._inbound(message)
        assert taking._taken is not None
        found = usable(taking._taken.values | tokens)
        if found:
            message.update(ValueScrubber(found, self._sealer).value(message))
        return pairs

    def _inbound(self, message: dict[str, Any] | None) -> list[tuple[str, str]]:
        taken = self._taken
        assert taken is not None, "only the copy made by _taking notes what it takes"
        taken.pairs = []
        self.message(message)
        pairs, taken.pairs = taken.pairs, None
        return sorted(pairs)

    def _by_name(self, doc: dict[str, Any]) -> tuple[frozenset[str], list[tuple[str, str]]]:
        """Redact ``doc`` by name in place: the values taken out, with the tokens its error texts
        quote, and the inbound request's :meth:`request_secrets`."""
        taken = self._taken
        assert taken is not None, "only the copy made by _taking notes what it takes"
        # before redaction hides them in their text; and the tokens the app issued, wherever kept
        quoted = free_text_secrets(self, doc) | kept_credentials(doc, self.names)
        request_secrets = self._inbound(doc.get("request"))
        self.message(doc.get("response"))
        self.error(doc.get("error"))
        for call in doc.get("calls", ()):
            if call.get("protocol", "http") == "http":
                self.message(call.get("request"))
                self.message(call.get("response"))
            else:
                typed = call.get("protocol") not in _WHOLE_BYTES
                redact_call(
                    call, self.names, functools.partial(self._hidden_typed, keep_type=typed)
                )
            self.error(call.get("error"))
        for span in doc.get("spans", ()):
            self.span(span)
        self.draws(doc.get("draws"))
        return usable(taken.values | quoted), request_secrets

    def draws(self, draws: Any) -> None:
        """Values drawn from ``secrets``, ``random.SystemRandom`` or ``os.urandom`` are tokens,
        keys and salts: hidden (sealed with a key). The tokens ``secrets`` makes of its bytes are
        hidden wherever they stand too (bcrypt's salts are found by their shape, see
        secret_values); ``os.urandom``'s are not looked for, since libraries draw there what is
        no secret and must stay readable (httpx's multipart boundary). In replay without the key
        such a draw finds no value and gets a fresh one (an extra draw)."""
        for draw in draws if isinstance(draws, list) else ():
            if isinstance(draw, dict) and draw.get("source") in _SEALED_DRAWS:
                value = draw["value"]
                if isinstance(value, str):
                    self._took("draw", value)
                elif (
                    draw["source"] == "secrets"
                    and isinstance(drawn := _drawn_bytes(value), bytes)
                    and len(drawn) >= 8
                ):
                    self._took("draw", *_token_spellings(drawn))
                # whole: bytes standing for a drawn salt would be taken for one of another length
                draw["value"] = self._hidden_value(value, keep_type=False)


def _drawn_bytes(value: Any) -> Any:
    """A draw's value as the app got it (bytes from ``os.urandom``), or None if it cannot be read."""
    try:
        return decode_value(value)
    except ValueDecodeError:
        return None


def _token_spellings(drawn: bytes) -> tuple[str, str, str]:
    """The tokens ``secrets`` makes of drawn bytes, and hand-made ones: ``token_urlsafe`` (base64url
    without padding), ``token_hex``, and base64. A session key in Redis or a cookie made with
    them holds no secret name, and was stored in clear though the draw was sealed."""
    return (
        base64.urlsafe_b64encode(drawn).rstrip(b"=").decode("ascii"),
        drawn.hex(),
        base64.b64encode(drawn).decode("ascii"),
    )


def _describes_an_api(value: Any) -> bool:
    """An OpenAPI 3 or Swagger 2 document: its version and its ``paths``."""
    return (
        isinstance(value, dict)
        and isinstance(value.get("openapi", value.get("swagger")), str)
        and isinstance(value.get("paths"), dict)
    )


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
