"""The cassette format: bodies replay byte for byte, and the JSON Schema says what a cassette is.

Body tests go through the writer's own serialisation, so they prove the bytes survive
being written to a cassette file and read back, not only ``encode_body`` itself.
"""

from __future__ import annotations

import copy
import gzip
import importlib.resources
import json
import re
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind, Status, StatusCode

from timetracer_otel._recording import HttpCall, TraceRecording, activate, deactivate
from timetracer_otel.cassette.body import (
    JSON_FORMATS,
    MAX_JSON_DEPTH,
    BodySink,
    decode_body,
    encode_body,
)
from timetracer_otel.cassette.safe_json import JSONProblem, loads
from timetracer_otel.config import TraceConfig
from timetracer_otel.exporters.builder import build_document
from timetracer_otel.exporters.files import serialise
from timetracer_otel.exporters.frozen import freeze, thaw

_DOC = Path(__file__).resolve().parent.parent / "docs" / "cassette-format.md"
_LIMIT = 1024


def _encode(
    data: bytes, limit: int = _LIMIT, content_encoding: str | None = None, decoded: bool = False
) -> dict:
    """Encode ``data`` as a recording would: fed in chunks through a BodySink of ``limit``."""
    sink = BodySink(limit)
    for start in range(0, len(data), 100):
        sink.feed(data[start : start + 100])
    sink.finish()
    return encode_body(
        sink.data,
        size=sink.size,
        truncated=sink.truncated,
        content_encoding=content_encoding,
        decoded=decoded,
        limit=limit,
    )


def _through_cassette(body: dict) -> dict:
    """``body`` after being written to a cassette file and read back."""
    return json.loads(serialise({"body": body}))["body"]


def _replayed(body: dict) -> bytes:
    return decode_body(_through_cassette(body))


# --------------------------------------------------------------------------- JSON
_VALUE = {
    "name": "Zoë ☃",
    "tags": ["a", "ü", ""],
    "n": 1.5,
    "i": -3,
    "big": 2**70,
    "nested": {"k": None, "b": True},
}
_FORMAT_NAMES = [name + newline for name in JSON_FORMATS for newline in ("", "_nl")]


@pytest.mark.parametrize("fmt", _FORMAT_NAMES)
def test_json_body_keeps_its_exact_format(fmt: str) -> None:
    """Each JSON layout (separators, indent, ASCII escapes, trailing newline) is named and replays exactly."""
    name, newline = (fmt[:-3], "\n") if fmt.endswith("_nl") else (fmt, "")
    data = (json.dumps(_VALUE, **JSON_FORMATS[name]) + newline).encode("utf-8")
    body = _encode(data)
    assert (body["encoding"], body["json_format"], body["json"]) == ("json", fmt, _VALUE)
    assert _replayed(body) == data


@pytest.mark.parametrize(
    "data",
    [
        b'{"a": 1,"b":2}',  # mixed separators
        b'{"a":1e5}',  # number written another way than Python writes it
        b'{"a":1.10}',
        b'{"a":NaN}',
        b'{"a":"x\\/y"}',  # escaped slash
        b'{"a":"\\u00e9","b":"\xc3\xa9"}',  # one escaped, one raw non-ASCII
        b'{"a":1,"a":2}',  # duplicate key
        b'{"a":1}\n\n',
        b'{"a":1}\r\n',
        b' {"a":1}',
        b'{"a":"\\ud800"}',  # a lone surrogate: valid JSON text, not storable as a UTF-8 str
        b'"just a string"',
    ],
    ids=lambda d: repr(d[:24]),
)
def test_json_that_python_would_write_differently_stays_text(data: bytes) -> None:
    """Replay must give the recorded bytes, so JSON that does not re-serialise exactly is kept as text."""
    body = _encode(data, limit=len(data))
    assert body["encoding"] == "text"
    assert _replayed(body) == data


def _nested(depth: int, inside: str = "0") -> bytes:
    """JSON ``depth`` levels deep, arrays and objects taking turns: [{"k":[{"k":...}]}]."""
    text = inside
    for level in range(depth):
        text = f"[{text}]" if level % 2 else f'{{"k":{text}}}'
    return text.encode()


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 990, 5000, 100_000])
def test_json_nested_deeper_than_the_bound_is_text_on_every_python(depth: int) -> None:
    """The codec's own depth bound decides, not the interpreter's recursion limit (which 3.13 raised)."""
    data = _nested(depth)
    body = _encode(data, limit=len(data))
    assert (body["encoding"], body["text"]) == ("text", data.decode())
    assert _replayed(body) == data


@pytest.mark.parametrize("depth", [255, 256, 257, 600, 1023, 1024, 1025, 5000])
def test_a_cassette_nested_beyond_the_read_bound_is_refused_whichever_parser_reads_it(
    depth: int,
) -> None:
    """orjson reads up to 1024 levels and the standard parser fewer: below and above that, a file
    nested deeper than ``TIMETRACER_READ_MAX_DEPTH`` is refused naming its depth, and brackets in
    strings (or a wide file of many shallow values) do not count."""
    limits = TraceConfig(mode="replay").read_limits
    inside = json.dumps(["[{" * 300 + '\\"]', "x"])  # one level, however its strings look
    data = _nested(depth, inside=inside)
    if depth + 1 > limits.max_depth:
        with pytest.raises(JSONProblem) as refused:
            loads(data, limits)
        assert str(refused.value) == (
            f"is nested {depth + 1} levels deep; TIMETRACER_READ_MAX_DEPTH allows {limits.max_depth}"
        )
    else:
        assert loads(data, limits) == json.loads(data)
    wide = json.dumps([[["[[["], {"k": "{{"}]] * 3000).encode()
    assert loads(wide, limits) == json.loads(wide)


def test_json_nested_up_to_the_bound_is_json() -> None:
    """Brackets inside strings are not nesting: a deep-looking string in a shallow document stays JSON."""
    for data in (
        _nested(MAX_JSON_DEPTH),
        _nested(MAX_JSON_DEPTH - 1, inside=json.dumps("[{" * 5000 + '\\"]')),
    ):
        body = _encode(data, limit=len(data))
        assert (body["encoding"], body["json_format"]) == ("json", "compact")
        assert _replayed(body) == data


# --------------------------------------------------------------------------- text, binary, empty
@pytest.mark.parametrize(
    "data", ["plain text\r\nline two\x00\t", "naïve café ✓ 😀", "\ufeffwith BOM"], ids=repr
)
def test_utf8_body_is_text(data: str) -> None:
    body = _encode(data.encode("utf-8"))
    assert (body["encoding"], body["text"], body["size"]) == (
        "text",
        data,
        len(data.encode("utf-8")),
    )
    assert _replayed(body) == data.encode("utf-8")


@pytest.mark.parametrize(
    "data", [b"caf\xe9", bytes(range(256)), b"\xff\xfe\x00a", b"ok\xed\xa0\x80"], ids=repr
)
def test_non_utf8_body_is_base64(data: bytes) -> None:
    """Latin-1, binary and UTF-8-encoded surrogates are not text; base64 keeps every byte."""
    body = _encode(data)
    assert body["encoding"] == "base64"
    assert "truncated" not in body
    assert _replayed(body) == data


def test_empty_body() -> None:
    body = _encode(b"")
    assert body == {"size": 0, "encoding": "empty"}
    assert _replayed(body) == b""


# --------------------------------------------------------------------------- content encodings
def _raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


_PLAIN = json.dumps({"compressed": True, "items": list(range(50))}).encode()
_COMPRESSED = {
    "gzip": ("gzip", gzip.compress(_PLAIN)),
    "x-gzip": ("x-gzip", gzip.compress(_PLAIN)),
    "gzip multi-member": ("gzip", gzip.compress(_PLAIN[:30]) + gzip.compress(_PLAIN[30:])),
    "deflate (zlib)": ("deflate", zlib.compress(_PLAIN)),
    "deflate (raw)": ("deflate", _raw_deflate(_PLAIN)),
}


@pytest.mark.parametrize("case", list(_COMPRESSED))
def test_compressed_body_is_stored_decoded(case: str) -> None:
    """The cassette holds the readable body and names the encoding it came in; size counts wire bytes."""
    content_encoding, wire = _COMPRESSED[case]
    body = _encode(wire, content_encoding=content_encoding)
    assert body["content_encoding"] == content_encoding
    assert (body["encoding"], body["size"]) == ("json", len(wire))
    assert "truncated" not in body
    assert _replayed(body) == _PLAIN


@pytest.mark.parametrize(
    "content_encoding, wire",
    [
        ("gzip", b"not gzip at all"),
        ("gzip", gzip.compress(b"first") + b"trailing junk"),
        ("deflate", zlib.compress(b"data") + b"junk"),
        ("br", b"\x8b\x02\x80hello\x03"),
        ("gzip, br", gzip.compress(b"twice")),
    ],
    ids=["not-gzip", "gzip-trailing-junk", "deflate-trailing-junk", "br", "stacked"],
)
def test_body_that_does_not_decode_cleanly_is_stored_as_received(
    content_encoding: str, wire: bytes
) -> None:
    """Without a clean decode the wire bytes are kept, and no content_encoding claims otherwise."""
    body = _encode(wire, content_encoding=content_encoding)
    assert "content_encoding" not in body
    assert _replayed(body) == wire


def test_body_the_library_already_decoded_names_its_encoding() -> None:
    body = _encode(_PLAIN, content_encoding="gzip", decoded=True)
    assert body["content_encoding"] == "gzip"
    assert _replayed(body) == _PLAIN


def test_identity_encoding_is_not_recorded() -> None:
    assert "content_encoding" not in _encode(b"plain", content_encoding="identity")


# --------------------------------------------------------------------------- truncation
@pytest.mark.parametrize(
    "text, limit, kept",
    [
        ("a" + "€" * 1000, 1000, "a" + "€" * 333),  # cut after 1 of the 3 bytes of a €
        ("😀" * 10, 7, "😀"),  # cut after 3 of the 4 bytes of an emoji
        (json.dumps({"k": "v" * 100}), 20, json.dumps({"k": "v" * 100})[:20]),  # cut JSON is text
    ],
    ids=["euro", "emoji", "json"],
)
def test_truncated_text_stays_valid_utf8(text: str, limit: int, kept: str) -> None:
    """A cut inside a multi-byte character drops the partial character; the body is marked truncated."""
    data = text.encode("utf-8")
    body = _encode(data, limit=limit)
    assert (body["encoding"], body["text"], body["truncated"], body["size"]) == (
        "text",
        kept,
        True,
        len(data),
    )
    assert data.startswith(_replayed(body))


def test_truncated_binary_falls_back_to_base64() -> None:
    data = b"\xff" + b"a" * 100
    body = _encode(data, limit=50)
    assert (body["encoding"], body["truncated"], body["size"]) == ("base64", True, 101)
    assert _replayed(body) == data[:50]


def test_truncated_gzip_stream_stores_its_decoded_start() -> None:
    """A compressed body cut at the limit is decoded as far as it goes, still marked truncated."""
    plain = "".join(f"line {i}: é\n" for i in range(5000)).encode("utf-8")
    wire = gzip.compress(plain)
    body = _encode(wire, limit=len(wire) // 2, content_encoding="gzip")
    assert (body["content_encoding"], body["truncated"], body["size"]) == ("gzip", True, len(wire))
    replayed = _replayed(body)
    assert 0 < len(replayed) <= len(wire) // 2
    assert plain.startswith(replayed)


@pytest.mark.parametrize("compress", [gzip.compress, zlib.compress], ids=["gzip", "deflate"])
def test_decompression_bomb_is_bounded_by_the_limit(compress: Callable[[bytes], bytes]) -> None:
    """32 MiB of zeros in 32 KiB on the wire, kept whole: at most ``limit`` decoded bytes are stored."""
    limit = 64 * 1024
    wire = compress(bytes(32 * 1024 * 1024))
    assert len(wire) < limit  # the stream itself is not cut: the decoder is what is bounded
    body = _encode(
        wire, limit=limit, content_encoding="gzip" if compress is gzip.compress else "deflate"
    )
    assert (body["truncated"], body["size"]) == (True, len(wire))
    assert _replayed(body) == bytes(limit)


# --------------------------------------------------------------------------- BodySink
def test_body_sink_keeps_the_limit_and_counts_the_rest() -> None:
    sink = BodySink(10)
    for chunk in (b"0123", b"4567", b"89ab", b"", b"cdef"):
        sink.feed(chunk)
    assert (sink.data, sink.size, sink.truncated, sink.complete) == (b"0123456789", 16, True, False)
    sink.finish()
    assert sink.complete


def test_body_sink_at_exactly_the_limit_is_not_truncated() -> None:
    sink = BodySink(4, b"abcd", complete=True)
    assert (sink.data, sink.size, sink.truncated, sink.complete) == (b"abcd", 4, False, True)


def test_sealed_body_sink_ignores_late_chunks() -> None:
    """After the recording is finished, chunks the app still reads are neither kept nor counted."""
    sink = BodySink(100, b"early")
    sink.seal()
    sink.feed(b"late")
    assert (sink.sealed, sink.data, sink.size) == (True, b"early", 5)


# --------------------------------------------------------------------------- schema
def _schema() -> dict[str, Any]:
    """The schema as the installed package ships it."""
    resource = importlib.resources.files("timetracer_otel.cassette").joinpath(
        "cassette.schema.json"
    )
    return json.loads(resource.read_text("utf-8"))


def _errors(doc: dict[str, Any]) -> list[str]:
    return [error.message for error in jsonschema.Draft202012Validator(_schema()).iter_errors(doc)]


def _built_document(tmp_path: Path) -> dict[str, Any]:
    """A cassette document from ``build_document`` for real SDK spans: a server span, two client calls."""
    tracer = TracerProvider().get_tracer("test_cassette_format")
    config = TraceConfig(mode="record", cassette_dir=str(tmp_path), max_body_bytes=64)
    with tracer.start_as_current_span("POST /items/{item_id}", kind=SpanKind.SERVER) as root:
        context = root.get_span_context()
        recording = TraceRecording(
            config,
            trace_id=context.trace_id,
            root_span_id=context.span_id,
            method="POST",
            path="/items/7",
            query="verbose=1",
            headers=[("content-type", "application/json"), ("content-length", "9")],
            service="shop",
        )
        token = activate(recording)
        recording.request_body = BodySink(64, b'{"a": 1}\n', complete=True)
        with tracer.start_as_current_span("GET", kind=SpanKind.CLIENT) as client:
            call = HttpCall(
                "httpx",
                "GET",
                "http://127.0.0.1:9/x?q=1",
                [("accept", "*/*")],
                BodySink(64, complete=True),
            )
            recording.add_call(call)
            call.status = 200
            call.response_headers = [
                ("content-type", "application/octet-stream"),
                ("content-encoding", "gzip"),
            ]
            call.response_body = BodySink(64, gzip.compress(bytes(range(128, 160))), complete=True)
            client.add_event("retry", {"attempt": 1, "hosts": ("a", "b")})
        with tracer.start_as_current_span("GET", kind=SpanKind.CLIENT) as failed:
            call = HttpCall(
                "requests", "GET", "http://127.0.0.1:9/down", [], BodySink(64, complete=True)
            )
            recording.add_call(call)
            call.error = {"type": "requests.exceptions.ConnectionError", "message": "refused"}
            failed.set_status(Status(StatusCode.ERROR, "refused"))
        recording.status = 201
        recording.response_headers = [
            ("content-type", "text/plain"),
            ("transfer-encoding", "chunked"),
        ]
        recording.response_body = BodySink(64, "é".encode() * 40)  # cut at 64 bytes, never finished
        root.set_attribute("http.route", "/items/{item_id}")
        recording.route = "/items/{item_id}"
        deactivate(token)
    for span in (client, failed, root):
        recording.add_span(span)
    return json.loads(serialise(build_document(thaw(freeze(recording)), config.max_body_bytes)))


def test_schema_ships_in_the_package_and_is_a_valid_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(_schema())


def test_schema_names_every_json_format_the_codec_writes() -> None:
    body_formats = _schema()["$defs"]["body"]["allOf"][1]["then"]["properties"]["json_format"][
        "enum"
    ]
    assert sorted(body_formats) == sorted(_FORMAT_NAMES)


def test_schema_accepts_what_build_document_produces(tmp_path: Path) -> None:
    doc = _built_document(tmp_path)
    assert [c["response"] is None for c in doc["calls"]] == [False, True]
    assert doc["response"]["body"]["truncated"] and doc["response"]["body"]["complete"] is False
    assert doc["calls"][0]["response"]["body"]["content_encoding"] == "gzip"
    assert _errors(doc) == []


def _at(doc: dict, path: str) -> tuple[Any, Any]:
    """The container and key that a dotted path (numbers index lists) names in ``doc``."""
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
    for part in parents:
        doc = doc[part]
    return doc, last


def _set(path: str, value: Any) -> Callable[[dict], None]:
    def mutate(doc: dict) -> None:
        container, key = _at(doc, path)
        container[key] = value

    return mutate


def _delete(path: str) -> Callable[[dict], None]:
    def mutate(doc: dict) -> None:
        container, key = _at(doc, path)
        del container[key]

    return mutate


_BROKEN = {
    "missing request": _delete("request"),
    "version 2": _set("version", 2),
    "other format": _set("format", "vcr"),
    "body encoding hex": _set("request.body.encoding", "hex"),
    "text body without text": _delete("response.body.text"),
    "json body without json_format": _delete("request.body.json_format"),
    "unknown json_format": _set("request.body.json_format", "pretty"),
    "base64 with a text field": _set("calls.0.response.body.text", "x"),
    "unknown body key": _set("request.body.charset", "utf-8"),
    "truncated false": _set("request.body.truncated", False),
    "header triple": _set("request.headers.0", ["a", "b", "c"]),
    "header number": _set("request.headers.0", ["a", 1]),
    "status 42": _set("response.status", 42),
    "short trace id": _set("trace_id", "abc"),
    "upper-case id": _set("id", "ABCDEF01"),
    "recorded_at without Z": _set("recorded_at", "2026-01-22T10:00:00+01:00"),
    "http call without url": _delete("calls.0.request.url"),
    "http call with kind db": _set("calls.0.kind", "db.client"),
    "call without library": _delete("calls.0.library"),
    "span kind lower-case": _set("spans.0.kind", "server"),
    "span status code": _set("spans.0.status.code", "FAILED"),
    "attribute object": _set("spans.0.attributes.bad", {"nested": 1}),
    "error without message": _set("error", {"type": "ValueError"}),
}


@pytest.mark.parametrize("case", list(_BROKEN))
def test_schema_rejects_broken_documents(tmp_path: Path, case: str) -> None:
    doc = copy.deepcopy(_built_document(tmp_path))
    _BROKEN[case](doc)
    assert _errors(doc), f"schema accepted a document with {case}"


def test_schema_leaves_calls_of_other_protocols_open(tmp_path: Path) -> None:
    """Calls of future protocols need the common keys only; their request/response shapes are free."""
    doc = _built_document(tmp_path)
    doc["calls"].append(
        {
            "kind": "kafka.client",
            "protocol": "kafka",
            "library": "aiokafka",
            "span_id": None,
            "start_offset_ms": 1.5,
            "request": {"topic": "orders", "body": [1]},
            "response": {"offset": 7},
            "error": None,
        }
    )
    assert _errors(doc) == []


def test_documented_example_is_valid() -> None:
    """The example cassette in docs/cassette-format.md matches the schema (docs cannot drift)."""
    match = re.search(
        r"```json\n(\{\n  \"format\": \"timetracer-cassette\".*?\n\})\n```",
        _DOC.read_text("utf-8"),
        re.S,
    )
    assert match, "no example cassette in docs/cassette-format.md"
    assert _errors(json.loads(match.group(1))) == []


def test_serialise_keeps_integers_beyond_64_bits_and_non_ascii_text() -> None:
    """orjson refuses big integers; the cassette then falls back to the standard library, same layout."""
    doc = {"big": -(2**70), "text": "naïve ✓", "nested": {"list": [1, 2.5, None, True]}}
    fast = serialise({k: v for k, v in doc.items() if k != "big"})
    slow = serialise(doc)
    assert json.loads(slow) == doc
    assert fast.endswith(b"\n") and slow.endswith(b"\n")
    assert "naïve ✓".encode() in fast and "naïve ✓".encode() in slow
    assert (
        fast
        == (
            json.dumps({k: v for k, v in doc.items() if k != "big"}, ensure_ascii=False, indent=2)
            + "\n"
        ).encode()
    )
