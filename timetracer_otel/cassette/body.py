"""HTTP bodies: a bounded collector used while recording, and the cassette encoding.

A body is stored as readable JSON when it is JSON, at most ``MAX_JSON_DEPTH`` levels
deep, and re-serialises to exactly the recorded bytes, as text when it is UTF-8, and as
base64 otherwise, so replay can give back the recorded bytes exactly. gzip/deflate
bodies that decode cleanly are stored decoded, with the encoding named, so cassettes stay
readable; the rest as received.
"""

from __future__ import annotations

import base64
import json
import zlib
from collections.abc import Iterable, Sequence
from typing import Any

from .safe_json import nesting

__all__ = [
    "BodySink",
    "encode_body",
    "decode_body",
    "expands_beyond",
    "header_value",
    "load_json",
    "JSON_FORMATS",
    "MAX_JSON_DEPTH",
]

# A body nested deeper is not treated as JSON: stored, redacted and matched as text. The bound
# is timetracer's own, so a body is handled the same way on every Python (3.13's parser reads
# depths that raise RecursionError before it), and a cassette holding it stays well inside
# what orjson writes (254 levels).
MAX_JSON_DEPTH = 100


class BodySink:
    """Collect up to ``limit`` bytes of a body that may arrive in chunks, count the rest.

    ``seal()`` freezes it: chunks that arrive after the recording was finished are not
    kept, so the writer thread reads a body nobody is still appending to. Chunks that are
    ``bytes`` are kept as they are (nobody can change them): a body sent in one chunk is
    never copied on the request path; the others are copied once.
    """

    __slots__ = ("limit", "_chunks", "_kept", "size", "_sealed", "complete")

    def __init__(self, limit: int, data: bytes = b"", complete: bool = False) -> None:
        self.limit = limit
        self._chunks: list[bytes] = []
        self._kept = 0
        self.size = 0
        self._sealed = False
        self.complete = False
        if data:
            self.feed(data)
        self.complete = complete

    def feed(self, chunk: bytes) -> None:
        if self._sealed or not chunk:
            return
        self.size += len(chunk)
        room = self.limit - self._kept
        if room > 0:
            part = chunk if len(chunk) <= room else chunk[:room]
            self._chunks.append(part if type(part) is bytes else bytes(part))
            self._kept += len(part)

    def finish(self) -> None:
        """Mark the body as read to its end."""
        self.complete = True

    def seal(self) -> None:
        self._sealed = True

    @property
    def sealed(self) -> bool:
        return self._sealed

    @property
    def data(self) -> bytes:
        return self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)

    @property
    def truncated(self) -> bool:
        return self.size > self._kept


# name -> json.dumps keyword arguments, tried in this order. A name with the suffix
# "_nl" means the same followed by one newline.
JSON_FORMATS: dict[str, dict[str, Any]] = {
    "compact": {"separators": (",", ":"), "ensure_ascii": False},
    "compact_ascii": {"separators": (",", ":"), "ensure_ascii": True},
    "spaced": {"separators": (", ", ": "), "ensure_ascii": False},
    "spaced_ascii": {"separators": (", ", ": "), "ensure_ascii": True},
    "indent2": {"indent": 2, "ensure_ascii": False},
    "indent2_ascii": {"indent": 2, "ensure_ascii": True},
    "indent4": {"indent": 4, "ensure_ascii": False},
    "indent4_ascii": {"indent": 4, "ensure_ascii": True},
}


# one encoder per format: ``json.dumps`` with options builds a new one at every call
_ENCODE = {
    name: json.JSONEncoder(allow_nan=False, **kwargs).encode
    for name, kwargs in JSON_FORMATS.items()
}


def _dump_json(value: Any, fmt: str) -> str:
    name, newline = (fmt[:-3], "\n") if fmt.endswith("_nl") else (fmt, "")
    return _ENCODE[name](value) + newline


def load_json(text: str) -> Any:
    """``json.loads(text)``; ``ValueError`` as well for JSON nested deeper than ``MAX_JSON_DEPTH``."""
    if (
        text.count("[") + text.count("{") > MAX_JSON_DEPTH
        and nesting(text.encode("utf-8", "surrogatepass")) > MAX_JSON_DEPTH
    ):
        raise ValueError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    return json.loads(text)


def _candidates(text: str) -> list[str]:
    """The formats that may reproduce ``text``, in :data:`JSON_FORMATS` order: only an indented one
    writes a line break; ASCII text without ``\\u`` escapes dumps the same either way (the first name
    wins, as it would); text that is not ASCII cannot come from ``ensure_ascii``."""
    indented, either = "\n" in text, text.isascii() and "\\u" in text
    return [
        name
        for name, kwargs in JSON_FORMATS.items()
        if ("indent" in kwargs) == indented and (either or not kwargs["ensure_ascii"])
    ]


def _json_format_of(text: str) -> tuple[Any, str] | None:
    """The parsed value and the format name that reproduces ``text`` exactly, if any."""
    stripped = text.strip()
    if not stripped or stripped[0] not in "{[":
        return None
    try:
        value = load_json(text)
        base, newline = (text[:-1], "_nl") if text.endswith("\n") else (text, "")
        for name in _candidates(base):
            if _ENCODE[name](value) == base:
                # An escaped lone surrogate ("\ud800") parses to a str that a UTF-8
                # cassette cannot hold: such a body stays text.
                if JSON_FORMATS[name]["ensure_ascii"]:
                    _ENCODE["compact"](value).encode("utf-8")
                return value, name + newline
    except ValueError:  # too deep, NaN, a lone surrogate (UnicodeEncodeError)
        return None
    return None


_GZIP_WBITS = 16 + zlib.MAX_WBITS


def _inflate(data: bytes, wbits: int, limit: int) -> tuple[bytes, bool] | None:
    """Inflate every member of ``data`` (gzip may hold several); at most ``limit`` bytes out.

    None when the bytes do not inflate cleanly, trailing bytes included: such a body is
    stored as received, which replays exactly. The flag says the output was cut.
    """
    out = bytearray()
    while True:
        decoder = zlib.decompressobj(wbits)
        try:
            out += decoder.decompress(data, limit + 1 - len(out))
        except zlib.error:
            return None
        if len(out) > limit:
            return bytes(out[:limit]), True
        data = decoder.unused_data
        if not data:  # the end, or input that stops mid-stream (a truncated body)
            return bytes(out), False
        if wbits != _GZIP_WBITS:  # only gzip has further members; bytes after a deflate stream
            return None


_NO_CODING = ("", "identity")


def _decompress(data: bytes, content_encoding: str, limit: int) -> tuple[bytes, bool] | None:
    """Decode gzip/deflate ``data``; at most ``limit`` bytes out. None when it cannot."""
    encoding = content_encoding.strip().lower()
    wbits: tuple[int, ...]
    if encoding in ("gzip", "x-gzip"):
        wbits = (_GZIP_WBITS,)
    elif encoding == "deflate":
        wbits = (zlib.MAX_WBITS, -zlib.MAX_WBITS)  # zlib-wrapped as the RFC says, or raw
    else:
        return None
    return next((r for r in (_inflate(data, w, limit) for w in wbits) if r is not None), None)


def expands_beyond(data: bytes, content_encoding: str, limit: int) -> bool:
    """Whether ``data`` inflates to more than ``limit`` bytes once its Content-Encoding is undone,
    found without inflating the rest. ``content_encoding`` may list several codings (``gzip,
    gzip``: the last one listed was applied last), each gzip or deflate one undone to at most
    ``limit`` bytes in turn; the check ends at a coding it cannot undo."""
    codings = [c for c in content_encoding.split(",") if c.strip().lower() not in _NO_CODING]
    for coding in reversed(codings):
        plain = _decompress(data, coding, limit)
        if plain is None:
            return False
        data, cut = plain
        if cut:
            return True
    return False


def _utf8_prefix(data: bytes, truncated: bool) -> str | None:
    """``data`` as text, allowing a cut multi-byte character at the end of a truncated body."""
    for cut in range(0, 4 if truncated else 1):
        try:
            return (data[: len(data) - cut] if cut else data).decode("utf-8")
        except UnicodeDecodeError:
            continue
    return None


def header_value(headers: Iterable[Sequence[str]], name: str) -> str | None:
    """The first value of header ``name`` (case-insensitive) in a list of ``(name, value)`` pairs."""
    name = name.lower()
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def encode_body(
    data: bytes,
    *,
    size: int,
    truncated: bool,
    content_encoding: str | None = None,
    decoded: bool = False,
    limit: int,
) -> dict[str, Any]:
    """The cassette form of a body.

    ``content_encoding`` is the body's Content-Encoding header; ``decoded`` says the
    client library already undid it, so ``data`` is plain.
    """
    out: dict[str, Any] = {"size": size}
    if content_encoding and content_encoding.strip().lower() not in ("identity", ""):
        if decoded:
            out["content_encoding"] = content_encoding
        else:
            # a cut stream gives its decoded start
            plain = _decompress(data, content_encoding, limit)
            if plain is not None:
                data, cut = plain
                out["content_encoding"] = content_encoding
                truncated = truncated or cut
    if truncated:
        out["truncated"] = True
    if not data:
        out["encoding"] = "empty"
        return out
    text = _utf8_prefix(data, truncated)
    if text is None:
        out["encoding"] = "base64"
        out["base64"] = base64.b64encode(data).decode("ascii")
        return out
    parsed = None if truncated else _json_format_of(text)
    if parsed is not None:
        out["encoding"] = "json"
        out["json"], out["json_format"] = parsed
    else:
        out["encoding"] = "text"
        out["text"] = text
    return out


def _segment(segment: dict[str, str]) -> bytes:
    """A segment's bytes; a hidden value read without the key (``[REDACTED]``) stands as its marker."""
    if "text" in segment:
        return segment["text"].encode("utf-8")
    value = segment["base64"]
    return value.encode("ascii") if value.startswith("[") else base64.b64decode(value)


def decode_body(body: dict[str, Any]) -> bytes:
    """The bytes a cassette body stands for (decoded, when it names a content encoding)."""
    encoding = body.get("encoding")
    if encoding == "empty":
        return b""
    if encoding == "text":
        return body["text"].encode("utf-8")
    if encoding == "json":
        return _dump_json(body["json"], body.get("json_format", "compact")).encode("utf-8")
    if encoding == "base64":
        return base64.b64decode(body["base64"])
    if encoding == "segments":  # a binary body with redacted parts (see Redactor.binary_multipart)
        return b"".join(_segment(segment) for segment in body["segments"])
    raise ValueError(f"unknown body encoding {encoding!r}")
