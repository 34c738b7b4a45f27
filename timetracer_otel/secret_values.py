"""Secrets found by value: a secret seen once is hidden wherever else it appears.

Redaction by name takes a bearer token out of an ``Authorization`` header, but the same
token can stand in an SQL parameter, a Redis key, a Mongo document, another call's URL
or an error message. Redaction by name notes the values it takes out of a cassette
(:func:`header_secrets` says which they are in a header; :func:`free_text_secrets` adds
bearer tokens and JWTs quoted in error text; :func:`kept_credentials` the JWTs and private
keys anywhere in its recorded data), and :class:`ValueScrubber` hides every
occurrence of them, verbatim, percent-encoded or JSON-escaped (:func:`spellings`): a whole
value is sealed whole (``Sealer.seal_json``, so replay with the key gets it back with its type), an
occurrence inside a longer string becomes a sealed token in place. Bytes (raw, or a
cassette's typed ``bytes``) holding a secret are hidden whole. Without a sealer each one
reads ``[REDACTED]``; replay scrubs its live calls the same way before matching them.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import threading
import uuid
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, quote_plus, unquote_plus

import orjson

from .cassette.values import Encoded, encode_value
from .sealing import BYTES_TYPES, REDACTED, SEALED_TOKEN, hidden_whole, is_sealed

if TYPE_CHECKING:
    from .redaction import Redactor
    from .sealing import Sealer
    from .secret_names import SecretNames

__all__ = [
    "MIN_LENGTH",
    "RecentSecrets",
    "ValueScrubber",
    "chosen_codes",
    "free_text_secrets",
    "header_secrets",
    "is_token_like",
    "credentials",
    "credentials_in",
    "kept_credentials",
    "OTEL_REDACTED",
    "shaped_secrets",
    "usable",
]

MIN_LENGTH = 6  # shorter values would hide ordinary text ("admin", "1234")
_LONGEST_IN_PATTERN = 256  # longer secret values are searched with ``in``, not a pattern
# what OpenTelemetry's instrumentations put for a URL's user and password in a span (url.full)
OTEL_REDACTED = "REDACTED"
_PLACEHOLDERS = frozenset((REDACTED, OTEL_REDACTED))
_BEARER = re.compile(r"\bBearer\s+([A-Za-z0-9\-._~+/]+=*)", re.IGNORECASE)
# A body's format markers, wherever they stand: a secret is not searched there.
_FORMAT_MARKERS = frozenset(("encoding", "json_format", "$type", "content_encoding"))
# The cassette's own members (ids, names of libraries, a draw's source, caller and site): a secret is
# not searched there in the document and in its calls, spans, draws and events, where they
# are the cassette's; in a payload (a JSON body's "id", a Mongo document's "kind") it is.
_OWN_MEMBERS = frozenset(
    ("id", "span_id", "trace_id", "parent_span_id", "parent_id", "fingerprint", "recorded_at", "format_version",
     "protocol", "library", "scope", "kind", "source", "caller", "site")
) | _FORMAT_MARKERS  # fmt: skip
_OWN_LISTS = frozenset(("calls", "spans", "draws", "events"))
_PAYLOAD, _OWN, _OWN_ITEMS, _DOCUMENT = range(4)  # what a member of the walk is
_TEXT_ATTRIBUTES = ("exception.message", "exception.stacktrace", "exception.type")


# name=value (or name="value") in a header's credentials, the value token-like and long
# enough to be a key: Digest's response, an AWS signature, Sentry's key
_TOKEN_PARAMETER = re.compile(r'[\w.-]+="?([A-Za-z0-9_\-]{16,})"?(?=[,;\s]|$)')


def header_secrets(name: str, value: str) -> list[str]:
    """The secrets in a secret header: the credentials without their scheme, each cookie's
    value, and the token-like parameters of a scheme's (``Sentry sentry_key=<key>, sentry_version=7``:
    the key, which the app's DSN and other calls' ``baggage`` repeat)."""
    name = name.lower()
    if name in ("authorization", "proxy-authorization"):
        credentials = value.partition(" ")[2].strip()
        return [value, credentials, *_TOKEN_PARAMETER.findall(credentials)]
    if name in ("cookie", "set-cookie"):
        pairs = value.split(";")[:1] if name == "set-cookie" else value.split(";")
        return [value, *(pair.partition("=")[2].strip() for pair in pairs)]
    return [value, *_TOKEN_PARAMETER.findall(value)]


class _Shapes:
    """The patterns of credentials found by their shape, for text or for bytes (a document's JSON):
    JWTs, PEM private keys, a JWK's private members, the signature of a signed URL (an S3 or
    GCS presigned URL, an Azure SAS: whoever holds the URL has the access it grants until it
    expires), password hashes and bcrypt salts (an app's users table under any column name:
    a hash is what an attacker cracks offline), and the password of a URL. Quotes may be
    escaped (JSON text kept inside a string: a JWK in an SQL row)."""

    def __init__(self, encode: Callable[[str], Any]) -> None:
        self.jwt = re.compile(encode(_JWT_PATTERN))
        self.pem = re.compile(encode(_PEM_PATTERN))
        self.jwk = re.compile(encode(_JWK_PATTERN))
        self.jwk_private = re.compile(encode(_JWK_PRIVATE_PATTERN))
        self.signed_url = re.compile(encode(_SIGNED_URL_PATTERN))
        self.password_hash = re.compile(encode(_PASSWORD_HASH_PATTERN))
        self.api_key = re.compile(encode(_API_KEY_PATTERN))
        self.url_password = re.compile(encode(_URL_PASSWORD_PATTERN))
        self.marks = tuple(map(encode, ("eyJ", "PRIVATE KEY", "kty", "ignature=", "sig=", "@")))
        # A byte each mark holds that JSON seldom does, looked for first: a search for one byte
        # runs at memory speed (memchr), one for a word about thirty times slower.
        self.gates = tuple(map(encode, ("J", "V", "=")))
        self.dollar = encode("$")  # every password hash format's
        self.hash_marks = tuple(map(encode, ("$2", "$argon2", "pbkdf2", "scrypt")))
        self.api_key_gate = re.compile(encode(_API_KEY_GATE))
        self.k = encode("k")
        self.key_chars = encode(_KEY_CHARS)

    def _api_keys(self, data: Any) -> Iterator[Any]:
        """The API keys in ``data``: each place where two characters of their starts stand (found
        in one scan: its first characters are few), not after a token's character, matched there
        (a scan of the whole text with the pattern cost a tenth of the writer's work per cassette,
        one search for each start 18 µs of a ``/dep`` cassette's JSON)."""
        for gate in self.api_key_gate.finditer(data):
            at = gate.start()
            if data[at : at + 1] == self.k:  # the k of sk-, sk_ and rk_
                at -= 1
            if at == 0 or (at > 0 and data[at - 1 : at] not in self.key_chars):
                key = self.api_key.match(data, at)
                if key is not None:
                    yield key.group(0)

    def _password_hash_marked(self, data: Any) -> bool:
        """Whether a password hash's mark stands near a ``$`` of ``data``: each format has one,
        after its mark or at most 32 characters before it, and typed values (``"$type"``) bring
        a few."""
        at = data.find(self.dollar)
        while at != -1:
            near = data[max(at - 32, 0) : at + 8]
            if any(mark in near for mark in self.hash_marks):
                return True
            at = data.find(self.dollar, at + 1)
        return False

    def found(self, data: Any) -> Iterator[Any]:
        """Each credential in ``data`` (``str`` or ``bytes``, as the patterns were made for)."""
        jwt_mark, pem_mark, jwk_mark, signature_mark, sig_mark, at_mark = self.marks
        jwt_gate, pem_gate, signature_gate = self.gates
        if at_mark in data:
            yield from (
                m.group(1)
                for m in self.url_password.finditer(data)
                if m.group(1) not in _PLACEHOLDERS
            )
        if self._password_hash_marked(data):
            yield from (m.group(0) for m in self.password_hash.finditer(data))
        yield from self._api_keys(data)
        if jwt_gate in data and jwt_mark in data:
            yield from (m.group(0) for m in self.jwt.finditer(data))
        if pem_gate in data and pem_mark in data:
            yield from (m.group(0) for m in self.pem.finditer(data))
        if jwk_mark in data:
            for jwk in self.jwk.finditer(data):
                yield from (m.group(1) for m in self.jwk_private.finditer(jwk.group(0)))
        if signature_gate in data and (signature_mark in data or sig_mark in data):
            yield from (m.group(1) for m in self.signed_url.finditer(data))


_JWT_PATTERN = r"\beyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"
_PEM_PATTERN = r"-----BEGIN ((?:[A-Z0-9]+ )*)PRIVATE KEY-----[\s\S]*?-----END \1PRIVATE KEY-----"
# A JWK: a flat JSON object (strings and arrays) with a "kty" member; its private members (RFC 7518)
_JWK_PATTERN = r'\{[^{}]*?\\*"kty\\*"[^{}]*\}'
_JWK_PRIVATE_PATTERN = r'\\*"(?:d|p|q|dp|dq|qi|k)\\*"\s*:\s*\\*"([A-Za-z0-9_-]{16,})'
# A signed URL's signature parameter: AWS SigV4 and SigV2 (CloudFront too), GCS V4, Azure SAS
_SIGNED_URL_PATTERN = (
    r"[?&](?i:x-amz-signature|x-goog-signature|signature|sig)=([A-Za-z0-9%+/=_.~-]{16,})"
)
# Password hashes in the modular crypt formats web apps store (and a bcrypt salt alone, 22
# characters after its cost): bcrypt, argon2, passlib's pbkdf2 and scrypt, Django's pbkdf2,
# Werkzeug's pbkdf2 and scrypt (``generate_password_hash``: the method, then ``$salt$hex``).
_PASSWORD_HASH_PATTERN = (
    r"\$2[abxy]?\$\d\d\$[./A-Za-z0-9]{22}(?:[./A-Za-z0-9]{31})?"
    r"|\$argon2(?:id|i|d)\$v=\d+\$m=\d+,t=\d+,p=\d+\$[A-Za-z0-9+/]+(?:\$[A-Za-z0-9+/]+)?"
    r"|\$(?:pbkdf2(?:-sha\d+)?|scrypt)\$[^\s\"'$]+\$[^\s\"'$]+(?:\$[^\s\"'$]+)?"
    r"|\bpbkdf2_sha(?:1|256)\$\d+\$[^\s\"'$]+\$[^\s\"'$]+"
    r"|\b(?:pbkdf2:sha\d+(?::\d+)?|scrypt:\d+:\d+:\d+)\$[^\s\"'$]+\$[0-9a-f]{32,}"
)
# API keys whose prefix says what they are, as secret scanners find them: OpenAI's and
# Anthropic's (sk-, sk-proj-, sk-ant-...), Stripe's secret and restricted keys, GitHub's tokens,
# Slack's, Google's, GitLab's. A key kept in a settings row or a variable (Prefect's
# ``openai_api_key``) holds no secret name; written with a digit in it, so words are not taken.
_API_KEY_PATTERN = (
    r"(?:sk-(?:proj-|ant-)?|[sr]k_(?:live|test)_|gh[pousr]_|github_pat_|glpat-|xox[abposr]-|AIza)"
    r"(?=[A-Za-z_-]*[0-9])[A-Za-z0-9_-]{20,}"
)
# Two characters of each start, the first of them few (the engine skips to those): a match
# of the pattern may begin there, or one character before for the k of sk-, sk_ and rk_.
_API_KEY_GATE = r"k[-_]|gh|gl|github_pat_|xo|AI"
_KEY_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
# The password of a URL written as text (a DSN in a settings row, a link a user saved): the
# part between the user's ``:`` and the ``@`` of its authority. From the ``://``, a literal the
# engine finds fast: a pattern starting with the scheme was tried at every word (30 µs a
# cassette).
_URL_PASSWORD_PATTERN = r"://[^\s/?#@:\"'\\]*:([^\s/?#@\"'\\\[]+)@"
# A URL's query written as text, up to the quote, space or ``#`` that ends it (JSON escapes
# ``\"`` and ``\\``, so a match never runs past the string holding it).
_URL_QUERY_PATTERN = r"://[^\s\"'\\<>?#]*\?([^\s\"'\\<>#]+)"
_URL_QUERY = re.compile(_URL_QUERY_PATTERN)
_URL_QUERY_BYTES = re.compile(_URL_QUERY_PATTERN.encode("ascii"))
_IN_TEXT = _Shapes(lambda pattern: pattern)
_IN_BYTES = _Shapes(lambda pattern: pattern.encode("ascii"))


def _base64_marks(start: bytes) -> Iterator[str]:
    """The base64 characters that ``start`` alone decides, at each of the 3 alignments it may
    have inside bytes encoded whole."""
    for lead in range(3):
        encoded = base64.b64encode(bytes(lead) + start + bytes(2)).decode("ascii")
        first, end = 8 * lead, 8 * (lead + len(start))  # its bits
        yield "".join(c for i, c in enumerate(encoded) if first <= 6 * i and 6 * i + 6 <= end)


# How the credentials start (a JWT, a PEM key, a JWK, the password hashes and bcrypt salts of
# _PASSWORD_HASH_PATTERN) inside bytes a cassette stores in base64: only such bytes are decoded
# to be searched. A bcrypt salt kept in a BYTEA column was in clear.
_CREDENTIAL_STARTS = (
    b"eyJ",
    b"-----BEGIN",
    b'"kty"',
    *(b"$2%s$" % version for version in (b"a", b"b", b"x", b"y")),
    b"$argon2",
    b"$pbkdf2",
    b"$scrypt",
    b"pbkdf2_sha",
)
_IN_BASE64 = re.compile(
    "|".join(re.escape(mark) for start in _CREDENTIAL_STARTS for mark in _base64_marks(start))
)
_IN_BASE64_BYTES = re.compile(_IN_BASE64.pattern.encode("ascii"))
_IN_BASE64_LENGTH = 8


def credentials(text: str) -> set[str]:
    """The credentials in ``text`` found by their shape: JWTs, PEM private keys, a JWK's private
    members, signed URLs' signatures, password hashes and bcrypt salts, URLs' passwords."""
    return set(_IN_TEXT.found(text))


def credentials_in(text: str, names: SecretNames) -> set[str]:
    """:func:`credentials`, and the secret parameters (by ``names``) of a URL's query in ``text``:
    what a recording hid in a live call's text, wherever no secret name announces it."""
    found = credentials(text)
    if "://" in text:
        found.update(_url_query_secrets(text, names))
    return found


def shaped_secrets(text: str) -> set[str]:
    """Bearer tokens and :func:`credentials` quoted in free text (an exception message, a log line)."""
    bearers = {m.group(1) for m in _BEARER.finditer(text)} if "earer" in text else set()
    return bearers | credentials(text)


# Token characters (hex, base64 and base64url, a JWT's dots): a secret value of an earlier
# cassette is looked for in a later one as a whole run of them, in its JSON and in the bytes it
# stores. Every other byte becomes a space, so ``split`` (in C) gives the runs.
_TOKEN_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.~+/=")
_TO_RUNS = bytes(byte if byte in _TOKEN_CHARS else 0x20 for byte in range(256))
_MIN_REMEMBERED = 16  # shorter runs are words and numbers
# JSON's escapes whose letter would join the run after it (a token at the start of a line)
_JSON_ESCAPES = (b"\\n", b"\\t", b"\\r", b"\\b", b"\\f", b"\\/")


def is_token_like(value: str) -> bool:
    """16 or more token characters only: a key or a token, not a word, a number or a flag."""
    if len(value) < _MIN_REMEMBERED or not value.isascii():
        return False
    run = value.encode("ascii")
    return run.translate(_TO_RUNS) == run


class RecentSecrets:
    """The token-like secret values of the last cassettes this process wrote, in its memory only.

    One taken out of a request's cassette (an invitation token where it was issued, by name or
    as a ``secrets`` draw) is hidden in a later request's cassette that holds it with nothing to
    tell it is one: a queued job's pickled arguments read back, a cached object under another
    name. Looked for as whole runs of token characters in the document's JSON and its stored
    bytes (split apart in C, then a set lookup each), so the cost does not grow with how many
    are kept.
    """

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._values: OrderedDict[bytes, None] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, values: Iterable[str]) -> None:
        with self._lock:
            for value in values:
                if is_token_like(value):
                    run = value.encode("ascii")
                    self._values[run] = None
                    self._values.move_to_end(run)
            while len(self._values) > self._size:
                self._values.popitem(last=False)

    def found_in(self, doc: dict[str, Any]) -> set[str]:
        """The remembered values ``doc`` holds, in its text or inside the bytes it stores."""
        if not self._values:
            return set()
        data = _json_bytes(doc)
        blobs = list(_stored_bytes(doc, every=True)) if b'"base64":' in data else []
        for escape in _JSON_ESCAPES:
            data = data.replace(escape, b"  ")
        with self._lock:
            known = self._values.keys()
            found = set().union(
                *(known & set(text.translate(_TO_RUNS).split()) for text in (data, *blobs))
            )
        return {run.decode("ascii") for run in found}


def _json_bytes(doc: dict[str, Any]) -> bytes:
    """``doc`` as JSON, in one pass in C where it can be."""
    try:
        return orjson.dumps(doc, default=str, option=orjson.OPT_NON_STR_KEYS)
    except orjson.JSONEncodeError:  # an int beyond 64 bits (a JSON body's): the standard library's
        return json.dumps(doc, default=str, ensure_ascii=False).encode("utf-8", "surrogatepass")


def kept_credentials(doc: dict[str, Any], names: SecretNames) -> set[str]:
    """:func:`credentials` anywhere in a cassette document's recorded data, text or bytes: a token
    the app issued and keeps (a Redis set of a user's tokens, a sessions table), a signing key in
    a settings row, is a credential wherever it stands, though no secret name announces it there.
    And the secret parameters (by ``names``) of a URL written as text: a saved link or a webhook
    holding its ``?token=``. Searched in the document's JSON (one pass in C); stored bytes are
    decoded only where their base64 can hold one."""
    data = _json_bytes(doc)
    found = {_unescaped(fragment) for fragment in _IN_BYTES.found(data)}
    if b"://" in data:
        found.update(_url_query_secrets(data, names))
    # most documents hold no typed bytes: one substring test instead of the pattern's slow scan
    if b'"base64":' in data and _IN_BASE64_BYTES.search(data) is not None:
        for stored in _stored_bytes(doc):
            found.update(m.decode("utf-8", "replace") for m in _IN_BYTES.found(stored))
    return found


def _url_query_secrets(data: str | bytes, names: SecretNames) -> Iterator[str]:
    """The values of the secret parameters of each URL's query in ``data`` (text, or a document's
    JSON), as written and decoded, judged as a call's query is: the placeholder of one already
    hidden is none."""
    found = (
        (m.group(1).decode("utf-8", "replace") for m in _URL_QUERY_BYTES.finditer(data))
        if isinstance(data, bytes)
        else (m.group(1) for m in _URL_QUERY.finditer(data))
    )
    for query in found:
        for _, _, value in names.secret_parameters(query.split("&")):
            decoded = unquote_plus(value)
            if usable((decoded,)):
                yield from (value, decoded)


def _unescaped(fragment: bytes) -> str:
    """A fragment of a document's JSON as the string the document holds (a PEM's line breaks)."""
    try:
        return json.loads(b'"' + fragment + b'"')
    except ValueError:
        return fragment.decode("utf-8", "replace")


def _stored_bytes(value: Any, every: bool = False) -> Iterator[bytes]:
    """The contents of the typed bytes (stored in base64) in a cassette value that may hold a
    credential by its shape; ``every``: all of them."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            encoded = item.get("base64")
            if item.get("$type") not in BYTES_TYPES or not isinstance(encoded, str):
                pending.extend(item.values())
            elif every or (
                len(encoded) >= _IN_BASE64_LENGTH and _IN_BASE64.search(encoded) is not None
            ):
                try:
                    yield base64.b64decode(encoded)
                except (binascii.Error, ValueError):
                    pass
        elif isinstance(item, list):
            pending.extend(item)


def _free_texts(doc: dict[str, Any]) -> Iterator[str]:
    """Error messages, span statuses and exception events: where tokens show up unannounced."""
    errors = [doc.get("error"), *(call.get("error") for call in doc.get("calls", ()))]
    for error in errors:
        if isinstance(error, dict):
            yield from (v for v in error.values() if isinstance(v, str))
    for span in doc.get("spans", ()):
        description = (span.get("status") or {}).get("description")
        if isinstance(description, str):
            yield description
        for event in span.get("events", ()):
            attributes = event.get("attributes") if isinstance(event, dict) else None
            yield from (
                v
                for k, v in (attributes if isinstance(attributes, dict) else {}).items()
                if k in _TEXT_ATTRIBUTES and isinstance(v, str)
            )


_UUID_HEX = re.compile(r"[0-9a-f]{32}")


def _member_role(name: str, role: int) -> int:
    """What member ``name`` of one of the cassette's own objects (of ``role``) is: the lists of
    calls, spans, draws and events hold own objects, and so does the document's request (its
    fingerprint); the rest is payload."""
    if name in _OWN_LISTS:
        return _OWN_ITEMS
    return _OWN if role == _DOCUMENT and name == "request" else _PAYLOAD


def chosen_codes(chosen: str, doc: dict[str, Any]) -> set[str]:
    """The runs of ``doc``'s text that ``secrets.choice`` picked one character at a time:
    ``chosen`` holds the characters in the order picked, and each run of at least
    :data:`MIN_LENGTH` of them standing in ``doc`` in that order is a code made of them (a
    recovery code, a one-time password, a generated password). A code with separators
    between its groups (``hujb3w-m0hpmb``) gives each group."""
    if len(chosen) < MIN_LENGTH:
        return set()
    grams = {chosen[i : i + MIN_LENGTH] for i in range(len(chosen) - MIN_LENGTH + 1)}
    # only the runs of the picked characters are looked through, a character at a time
    runs = re.compile(f"[{''.join(map(re.escape, sorted(set(chosen))))}]{{{MIN_LENGTH},}}")
    found: set[str] = set()
    for run in runs.finditer(_json_bytes(doc).decode("utf-8", "replace")):
        text = run.group()
        start, end = 0, len(text) - MIN_LENGTH
        while start <= end:
            if text[start : start + MIN_LENGTH] not in grams:
                start += 1
                continue
            stop = start + MIN_LENGTH
            while stop < len(text) and text[stop - MIN_LENGTH + 1 : stop + 1] in grams:
                stop += 1
            found.add(text[start:stop])
            start = stop
    return found


def spellings(values: Iterable[str]) -> set[str]:
    """Each value as it is written where it gets quoted: as it is, percent-encoded (a URL, a
    form body: ``quote`` and ``quote_plus``), escaped inside a JSON string (ASCII-only or
    not), escaped in HTML (a template shows it in a page or a form's ``value=``) and with its
    double quotes doubled (a CSV export). A password with a space, a slash, a quote or an
    accent is thus found in another call's query string, in a JSON body or a page that quotes
    it, not only verbatim. A UUID's 32 hex digits (``uuid4().hex``, a common session id) are
    also looked for as the UUID they spell, as the app's drawn ``uuid4()`` is kept. A long
    value is also looked for inside base64 (:func:`_base64_spellings`)."""
    found = set()
    for value in values:
        if not isinstance(value, str):
            continue
        found.add(value)
        # a session id made with uuid4().hex: the app's draw holds the UUID it spells
        if _UUID_HEX.fullmatch(value):
            found.add(str(uuid.UUID(value)))
        if _IN_BASE64_FROM <= len(value) <= _IN_BASE64_UP_TO:
            found.update(_base64_spellings(value))
        if value.isascii() and value.replace("-", "").replace("_", "").replace(".", "").isalnum():
            continue  # written the same everywhere: the usual token
        found.update((quote(value, safe=""), quote_plus(value, safe="")))
        found.update((json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]))
        found.update(_html_spellings(value))
        found.add(value.replace('"', '""'))
    return found


# the members a cassette body of bytes may have (cassette.body.encode_body)
_BODY_MEMBERS = frozenset(
    ("encoding", "base64", "size", "truncated", "complete", "content_encoding")
)
_INFLATED_AT_MOST = 16 << 20  # of a compressed body, searched for secrets


def _inflated(data: bytes) -> bytes:
    """``data`` decompressed where it is gzip or zlib (up to 16 MiB of it), else nothing."""
    if data[:2] == b"\x1f\x8b":
        wbits = 16 + zlib.MAX_WBITS
    elif len(data) > 1 and data[0] & 0x0F == 8 and int.from_bytes(data[:2], "big") % 31 == 0:
        wbits = zlib.MAX_WBITS
    else:
        return b""
    try:
        return zlib.decompressobj(wbits).decompress(data, _INFLATED_AT_MOST)
    except zlib.error:
        return b""


_IN_BASE64_FROM = 16  # the length from which a value is looked for inside base64 too
_IN_BASE64_UP_TO = 4096  # a PEM key; not a megabyte password field six times over
_URL_SAFE = str.maketrans("+/", "-_")


def _base64_spellings(value: str) -> set[str]:
    """``value`` where an app wrapped it in base64 with other text (ZenML's API keys: ``ZENKEY_``
    and the base64 of a JSON object holding the key): the characters it alone decides, at each
    of the 3 alignments, in both alphabets; hidden in place, the rest of the text stays."""
    marks = set(_base64_marks(value.encode("utf-8")))
    return marks | {mark.translate(_URL_SAFE) for mark in marks}


# how HTML writers escape quotes: the standard library's html.escape (and Django's), MarkupSafe
# (Jinja2's), and text outside attributes (``html.escape(quote=False)``)
_HTML_QUOTES = (("&quot;", "&#x27;"), ("&#34;", "&#39;"), ('"', "'"))


def _html_spellings(value: str) -> set[str]:
    """``value`` as HTML templates escape it."""
    if not any(c in value for c in "&<>\"'"):
        return set()
    text = value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return {text.replace('"', double).replace("'", single) for double, single in _HTML_QUOTES}


def usable(values: Iterable[Any]) -> frozenset[str]:
    """The values worth searching for: strings long enough, not placeholders (timetracer's, and
    the ``REDACTED`` OpenTelemetry puts for a URL's credentials in a span) or sealed tokens."""
    return frozenset(
        v
        for v in values
        if isinstance(v, str)
        and len(v) >= MIN_LENGTH
        and v not in _PLACEHOLDERS
        and not is_sealed(v)
    )


def free_text_secrets(redactor: Redactor, doc: dict[str, Any]) -> set[str]:
    """The secrets a cassette document's error texts quote: bearer tokens, JWTs, and values
    given under a secret name (``password=...``); found before redaction hides the latter."""
    found: set[str] = set()
    for text in _free_texts(doc):
        found |= shaped_secrets(text) | redactor.text_secrets(text)
    return found


class ValueScrubber:
    """Hides known secret values wherever they appear in a value (a document, a call, attributes)."""

    def __init__(
        self,
        values: Iterable[str],
        sealer: Sealer | None = None,
        shapes: Callable[[str], set[str]] | None = None,
    ) -> None:
        self._given = usable(values)
        self.values = usable(spellings(self._given))
        self._sealer = sealer
        # also hide the secrets this finds in each text by their shape (JWTs, bearer tokens)
        self._shapes = shapes
        # the longest first: a cookie header before its value
        ordered = sorted(self.values, key=len, reverse=True)
        # Long values (a megabyte password field) are searched as they are: compiling them into
        # the pattern costs seconds a megabyte. They are longer than any in the pattern.
        self._long = [v for v in ordered if len(v) > _LONGEST_IN_PATTERN]
        # Sealed tokens are matched first and kept: a secret is never searched inside one.
        self._in_pattern = [v for v in ordered if len(v) <= _LONGEST_IN_PATTERN]
        secrets = "|".join(map(re.escape, self._in_pattern))
        self._pattern = re.compile(
            f"(?P<token>{SEALED_TOKEN.pattern})" + (f"|(?P<secret>{secrets})" if secrets else "")
        )
        self._bytes = [v.encode("utf-8") for v in ordered]

    def __bool__(self) -> bool:
        return bool(self.values) or self._shapes is not None

    def _whole(self, value: Any) -> Any:
        return hidden_whole(value, self._sealer)

    def _part(self, text: str) -> str:
        return REDACTED if self._sealer is None else self._sealer.seal(text)

    def text(self, text: str) -> str:
        """``text`` with each secret hidden: sealed whole when it is the whole text, else in place."""
        if self._shapes is not None:
            extra = usable(self._shapes(text)) - self.values
            if extra:
                return ValueScrubber(self._given | extra, self._sealer).text(text)
        if text in self.values:
            return self._whole(text)
        if not self.values:
            return text
        for secret in self._long:
            if secret in text:
                text = self._part(secret).join(text.split(secret))
        # the pattern's many branches are tried at each character: a few substring searches
        # tell first, at a fifth of its cost, that most texts hold neither a secret nor a token
        if "SEALED" not in text and not any(secret in text for secret in self._in_pattern):
            return text
        return self._pattern.sub(
            lambda m: m.group(0) if m.group("token") else self._part(m.group(0)), text
        )

    def _holds_secret(self, data: bytes) -> bool:
        return any(secret in data for secret in self._bytes)

    def _typed_value(self, value: Any) -> Any:
        """A cassette's typed value (bytes, a UUID, a date...), hidden whole when it holds a
        secret (the type's own form has no room for a sealed token), or None for any other dict."""
        if "$type" not in value:
            return None
        if value["$type"] in BYTES_TYPES and isinstance(value.get("base64"), str):
            try:
                data = base64.b64decode(value["base64"])
            except (binascii.Error, ValueError):
                return value
            return self._whole(value) if self._holds_secret(data) else value
        text = value.get("value")
        if not isinstance(text, str):
            return None
        return self._whole(value) if self.text(text) != text else value

    def _binary_body(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """A cassette body of bytes (``{"encoding": "base64", ...}``) holding a secret, as it is
        or compressed with gzip or zlib (a downloaded archive of a run's configuration): its
        bytes hidden whole, as the one segment of a body (see ``Redactor.binary_multipart``);
        as it is without a secret; None for any other dict."""
        if body.get("encoding") != "base64" or not _BODY_MEMBERS.issuperset(body):
            return None
        try:
            data = base64.b64decode(body["base64"], validate=True)
        except (binascii.Error, ValueError, TypeError):
            return None
        if not (self._holds_secret(data) or self._holds_secret(_inflated(data))):
            return body
        hidden = {name: value for name, value in body.items() if name != "base64"}
        hidden.update(encoding="segments", segments=[{"base64": self._part(body["base64"])}])
        return hidden

    def value(self, value: Any, document: bool = False) -> Any:
        """A copy of ``value`` with every secret hidden; iterative, so no depth is too deep.
        ``document``: ``value`` is a cassette document or one of its calls, whose own members
        are left as they are."""
        if not self:
            return value
        holder: list[Any] = [value]
        pending: list[tuple[Any, Any, Any, int]] = [
            (holder, 0, value, _DOCUMENT if document else _PAYLOAD)
        ]
        tuples: list[
            tuple[Any, Any]
        ] = []  # made tuples again once their items are done, the deepest first
        while pending:
            parent, key, item, role = pending.pop()
            if isinstance(item, str):
                parent[key] = self.text(item)
            elif isinstance(item, (bytes, bytearray)):
                # a live call's plain bytes, hidden as the recording's typed bytes were
                held = self._holds_secret(bytes(item))
                parent[key] = Encoded(self._whole(encode_value(item))) if held else item
            elif isinstance(item, dict):
                typed = self._typed_value(item)
                if typed is None:
                    typed = self._binary_body(item)
                if typed is not None:
                    parent[key] = typed
                    continue
                parent[key] = copy = dict(item)
                if role in (_PAYLOAD, _OWN_ITEMS):
                    pending.extend(
                        (copy, name, child, _PAYLOAD)
                        for name, child in item.items()
                        if name not in _FORMAT_MARKERS
                    )
                else:
                    pending.extend(
                        (copy, name, child, _member_role(name, role))
                        for name, child in item.items()
                        if name not in _OWN_MEMBERS
                    )
            elif isinstance(item, (list, tuple)):
                parent[key] = items = list(item)
                each = _OWN if role == _OWN_ITEMS else _PAYLOAD
                pending.extend((items, index, child, each) for index, child in enumerate(item))
                if isinstance(item, tuple):
                    tuples.append((parent, key))
        for parent, key in reversed(tuples):
            parent[key] = tuple(parent[key])
        return holder[0]
