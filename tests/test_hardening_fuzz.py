"""Cassettes are untrusted input: every reader takes whatever a file holds.

In process (hypothesis, bounded): whatever a cassette file holds, ``load_cassette`` gives a
checked document or ``CassetteError``, nothing else, and every reader can show a document it
gives. Inputs: random bytes, gzip of random bytes, JSON-like token soup, very deep nesting,
and mutations of a real cassette recorded here: bytes flipped, inserted, deleted or cut
(plain and gzip-compressed), and JSON nodes replaced or removed.

In subprocesses under a memory limit (the corpus): a directory of hostile files (random
bytes, truncated, not JSON, JSON that is no cassette, huge integers, 100,000-deep nesting, a
gzip bomb, an oversized file, a FIFO, a link out, escape sequences, names that are not
UTF-8, and a cassette for each field with a wrong-typed value) beside valid cassettes goes
through every reader: each CLI command, each dashboard page, replay's start and import. Each
gives its one-line error naming the file, within the memory limit and the time-out, prints
nothing a terminal would act on, and the valid cassettes are still listed and served.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import functools
import gzip
import html
import io
import json
import os
import random
import re
import resource
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from _replay import APPS_DIR, cassette_files, send
from apps.replay_app import create_app
from conftest import Upstream, start_uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console

import timetracer_otel
from timetracer_otel._standalone import record_block
from timetracer_otel._terminal import printable
from timetracer_otel.cassette import otlp_json
from timetracer_otel.cassette.body import encode_body
from timetracer_otel.cassette.reader import CassetteError, load_cassette
from timetracer_otel.cli import _render
from timetracer_otel.cli.diff import diff_cassettes
from timetracer_otel.cli.index import summarise
from timetracer_otel.cli.search import matches
from timetracer_otel.config import ReadLimits, TraceConfig
from timetracer_otel.dashboard.app import _Pages
from timetracer_otel.replayers.session import recorded_views

_FUZZ = settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@pytest.fixture(scope="module")
def real_cassette(upstream: Any, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The bytes of a cassette recorded from real calls: JSON, binary and gzip bodies."""
    path = tmp_path_factory.mktemp("fuzz") / "real.json"
    with record_block(path, "fuzz"), httpx.Client(timeout=15) as client:
        client.post(f"{upstream.url}/echo", json={"name": "ada", "tags": [1, 2.5, None]})
        client.get(f"{upstream.url}/binary")
        client.get(f"{upstream.url}/gzip")
    assert len(load_cassette(path)["calls"]) == 3
    return path.read_bytes()


@pytest.fixture
def target(tmp_path: Path) -> Path:
    return tmp_path / "fuzzed.json"


@functools.cache
def _pages() -> _Pages:
    """The dashboard's pages over an empty directory: a recording's page is rendered from a document."""
    return _Pages(tempfile.mkdtemp(prefix="fuzz-dashboard-"), None, ReadLimits.from_env())


def _every_reader_takes(path: Path, document: dict[str, Any]) -> None:
    """What each reader does with a document that loaded: listing, show, the dashboard's page, search, diff,
    export, replay's views."""
    _render.list_lines([summarise("fuzzed.json", document)])
    page = _pages().render_detail("fuzzed.json", document)
    assert page.status_code == 200 and _UNSAFE.search(page.body.decode("utf-8")) is None
    for payloads in (False, True):
        _render.show(Console(file=io.StringIO(), width=160), document, str(path), payloads, 200)
    matches(document, "a")
    diff_cassettes(document, document)
    try:
        recorded_views(document, str(path))
    except CassetteError as exc:  # a call no matcher can read: the index names the file unusable
        assert exc.problem.startswith("calls[")
    try:
        otlp_json.to_line(document)
    except (ValueError, KeyError, TypeError):  # timetracer export says so in one line
        pass


def _only_cassette_error(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path``; loading it must give a document every reader takes, or :class:`CassetteError`."""
    path.write_bytes(data)
    try:
        document = load_cassette(path)
    except CassetteError as exc:
        assert exc.path == str(path) and exc.problem and "\n" not in exc.problem
    else:
        assert isinstance(document, dict) and isinstance(document["calls"], list)
        _every_reader_takes(path, document)


def test_hostile_values_in_database_calls_are_shown_escaped_or_as_their_json(
    real_cassette: bytes, target: Path
) -> None:
    """Typed values that do not decode, escape sequences in statements, commands and rows, and a URL that is
    not one: show, the dashboard's page and the other readers take them, and print nothing a terminal acts on."""
    document = json.loads(real_cassette)
    document["calls"][0]["request"]["url"] = "http://[" + _ESCAPES
    bad = [{"$type": "decimal", "value": "not a number"}, {"$type": "timedelta", "days": 10**12, "seconds": 0, "microseconds": 0},
           {"$type": "uuid", "value": _ESCAPES}, {"$type": "nope"}, {"$type": "dict", "items": [[[1], 2]]}]  # fmt: skip
    document["calls"] += [
        {"protocol": "sql", "request": {"operation": "execute", "statement": "SELECT " + _ESCAPES, "parameters": bad},
         "response": {"description": [[_ESCAPES], "x", []], "rows": [[_ESCAPES, {"$type": "bytes", "base64": "G10w"}, 1], bad]}},
        {"protocol": "sql", "request": {"operation": "execute", "statement": 5}, "response": {"description": 5, "rows": {"a": 1}}},
        {"protocol": "redis", "request": {"command": _ESCAPES, "args": [_ESCAPES, *bad]}, "response": {"reply": _ESCAPES}},
        {"protocol": "redis", "request": {"pipeline": [5, {"command": None, "args": "x"}], "transaction": True}, "response": None},
        {"protocol": "mongo", "request": {"database": _ESCAPES, "command_name": _ESCAPES, "command": {_ESCAPES: _ESCAPES}},
         "response": {"failure": bad}},
    ]  # fmt: skip
    target.write_text(json.dumps(document), "utf-8")
    loaded = load_cassette(target)
    _every_reader_takes(target, loaded)
    out = io.StringIO()
    _render.show(Console(file=out, width=160), loaded, str(target), True, 200)
    # the statement, escaped
    assert _UNSAFE.search(out.getvalue()) is None and "SELECT \\x1b]0;owned\\x07" in out.getvalue()
    page = _pages().render_detail("fuzzed.json", loaded).body.decode("utf-8")
    # a value that does not decode: its JSON
    assert '"value": "not a number"' in html.unescape(page)


_TOKENS = [b"{", b"}", b"[", b"]", b":", b",", b'"format"', b'"timetracer-cassette"', b'"version"', b"1", b"-0.5e9",
           b'"calls"', b'"request"', b'"response"', b'"protocol"', b'"http"', b"null", b"true", b'"\\ud800"', b"\xff",
           b"NaN", b"Infinity", b" ", b"\n", b"\x1f\x8b"]  # fmt: skip

_soups = st.lists(st.sampled_from(_TOKENS), max_size=60).map(b"".join)
_deep = st.builds(
    lambda opener, depth, tail: opener * depth + tail,
    st.sampled_from([b"[", b'{"a":', b'{"format":"timetracer-cassette","version":1,"calls":[']),
    st.integers(min_value=1, max_value=200_000),
    st.sampled_from([b"", b"1", b"]}"]),
)


@_FUZZ
@given(
    st.one_of(st.binary(max_size=4096), st.binary(max_size=512).map(gzip.compress), _soups, _deep)
)
def test_random_bytes_give_only_cassette_error(target: Path, data: bytes) -> None:
    _only_cassette_error(target, data)


@st.composite
def _byte_mutations(draw: st.DrawFn, original: bytes) -> bytes:
    data = bytearray(gzip.compress(original, mtime=0) if draw(st.booleans()) else original)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["flip", "insert", "delete", "cut"]))
        if kind == "flip" and at < len(data):
            data[at] ^= draw(st.integers(1, 255))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 64))]
        else:
            del data[at:]
    return bytes(data)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def _tree_mutations(draw: st.DrawFn, original: bytes) -> bytes:
    """The cassette with one node (found by a random walk from the top) replaced by random JSON, or removed."""
    document = json.loads(original)
    parent: Any = None
    key: Any = None
    node: Any = document
    while isinstance(node, (dict, list)) and node and draw(st.integers(0, 4)) > 0:
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        parent, key = node, draw(st.sampled_from(keys))
        node = node[key]
    if parent is None:
        return json.dumps(draw(_json_values)).encode()
    if draw(st.booleans()):
        del parent[key]
    else:
        parent[key] = draw(_json_values)
    return json.dumps(document, ensure_ascii=draw(st.booleans())).encode("utf-8")


@_FUZZ
@given(st.data())
def test_mutated_real_cassettes_give_a_document_or_cassette_error(
    real_cassette: bytes, target: Path, data: st.DataObject
) -> None:
    _only_cassette_error(
        target, data.draw(_byte_mutations(real_cassette) | _tree_mutations(real_cassette))
    )


def test_a_json_body_nested_deeper_than_readers_take_is_recorded_as_text(
    real_cassette: bytes, target: Path
) -> None:
    """What the recorder writes, every reader takes: such a body is kept as text, and the cassette loads."""
    deep = "[" * 300 + "]" * 300
    body = encode_body(deep.encode(), size=len(deep), truncated=False, limit=1 << 20)
    assert body["encoding"] == "text"
    document = json.loads(real_cassette)
    document["calls"][0]["response"]["body"] = body
    target.write_text(json.dumps(document), "utf-8")
    assert load_cassette(target)["calls"][0]["response"]["body"]["text"] == deep


# --------------------------------------------------------------------------- the corpus, through every reader
_MIB = 1 << 20
# address space of each reader's process: a 4 GiB gzip bomb expanded whole would not fit
_MEMORY_LIMIT = 1024 * _MIB
_TIMEOUT_SECONDS = 300  # for all of one process's readers together
# What a terminal acts on: C0 controls but the newline, DEL, C1 controls, bidi overrides, and surrogates (not UTF-8).
_UNSAFE = re.compile(
    "[\x00-\x09\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)
_ESCAPES = (
    "\x1b]0;owned\x07\x1b[2J\x9b31m\u202etxt.exe"  # retitle, clear, C1 CSI, right-to-left override
)
_NOT_UTF8_VALID = os.fsdecode(b"\xff\xfe-valid.json")
_NOT_UTF8_BROKEN = os.fsdecode(b"broken-\xe9.json")


@dataclass
class Corpus:
    directory: Path
    valid: dict[str, str]  # file name -> cassette id
    hostile: list[Path]  # directly in the directory
    wrong_types: list[Path]  # in wrong-types/, each with one field of another type


@pytest.fixture(scope="module")
def recorded_pair(upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    """Two cassettes recorded from the replay app, so a directory replay through it answers them."""
    directory = tmp_path_factory.mktemp("recorded")
    server = start_uvicorn(
        create_app(upstream.url, TraceConfig(mode="record", cassette_dir=str(directory)))
    )
    send(server.url, [("GET", "/async/httpx", {}), ("POST", "/lookup", {"json": {"name": "ada"}})])
    assert timetracer_otel.flush(30)
    server.stop()
    found = sorted(
        cassette_files(directory), key=lambda path: json.loads(path.read_bytes())["request"]["path"]
    )
    return [path.read_bytes() for path in found]


def _gzip_bomb() -> bytes:
    """About 4 MiB of gzip that expands to 4 GiB: one member of 64 MiB of zeros, 64 times over."""
    return gzip.compress(bytes(64 * _MIB), compresslevel=9, mtime=0) * 64


def _answered_with_headers(document: dict[str, Any], headers: list[list[str]]) -> bytes:
    """``document`` whose first call was answered with ``headers``."""
    call = document["calls"][0]
    response = dict(call["response"], headers=headers)
    return json.dumps(dict(document, calls=[dict(call, response=response)])).encode()


def _answered_with_a_bomb(
    document: dict[str, Any], headers: list[list[str]], wrapped: bool = False
) -> bytes:
    """``document`` whose first call was answered with a gzip bomb kept compressed, as the wire
    carried it, with ``headers``: the client it is replayed to would inflate it. ``wrapped``: the
    bomb gzipped once more (``Content-Encoding: gzip, gzip``, or two headers)."""
    call = document["calls"][0]
    bomb = gzip.compress(_gzip_bomb(), mtime=0) if wrapped else _gzip_bomb()
    body = {"encoding": "base64", "base64": base64.b64encode(bomb).decode("ascii")}
    response = dict(call["response"], headers=headers, body=body)
    return json.dumps(dict(document, calls=[dict(call, response=response)])).encode()


def _wrong(value: Any) -> Any:
    """A value of another JSON type than ``value``."""
    if isinstance(value, bool):
        return "yes"
    if isinstance(value, (int, float)):
        return "abc"
    if isinstance(value, str):
        return 12345
    if isinstance(value, list):
        return "notalist"
    if isinstance(value, dict):
        return 5
    return ["was", "null"]


def _fields(node: Any, path: tuple = ()) -> Iterator[tuple]:
    """The path of every field of a document, not into JSON bodies and span attributes (any value is right there)."""
    items = (
        node.items()
        if isinstance(node, dict)
        else enumerate(node)
        if isinstance(node, list)
        else ()
    )
    for key, value in items:
        yield (*path, key)
        if key not in ("json", "attributes"):
            yield from _fields(value, (*path, key))


def _with(document: dict[str, Any], path: tuple, value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(document)
    node = changed
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return changed


def _escaping(document: dict[str, Any]) -> dict[str, Any]:
    """A usable cassette with terminal escape sequences in every recorded text a reader prints."""
    changed = copy.deepcopy(document)
    changed["service"] = _ESCAPES
    changed["request"]["path"] += _ESCAPES
    changed["request"]["headers"].append(["x-note", _ESCAPES])
    changed["response"]["body"] = {
        "size": 40,
        "encoding": "text",
        "text": f"line one\n{_ESCAPES}\nlast",
    }
    changed["error"] = {"type": "Boom" + _ESCAPES, "message": _ESCAPES}
    changed["calls"][0]["request"]["url"] += _ESCAPES
    changed["spans"][0]["name"] += _ESCAPES
    return changed


@pytest.fixture(scope="module")
def corpus(recorded_pair: list[bytes], tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    directory = tmp_path_factory.mktemp("corpus") / "cassettes"
    directory.mkdir()
    valid = [json.loads(data) for data in recorded_pair]
    lookup = valid[1]
    (directory / "valid.json").write_bytes(recorded_pair[0])
    (directory / "valid-lookup.json.gz").write_bytes(gzip.compress(recorded_pair[1]))
    (directory / _NOT_UTF8_VALID).write_bytes(json.dumps({**lookup, "id": "0000abcd"}).encode())
    huge = dict(lookup, response=dict(lookup["response"], status="HUGE"), duration_ms="HUGER")
    hostile: dict[str, bytes] = {
        "random.json": random.Random(14).randbytes(4096),
        "random.json.gz": gzip.compress(random.Random(15).randbytes(4096)),
        "truncated.json": recorded_pair[1][: len(recorded_pair[1]) // 2],
        "request.json": b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
        "empty.json": b"",
        "other.json": b'{"hello": "world"}',
        "list.json": b"[1, 2, 3]",
        "otlp.json": b'{"resourceSpans": []}',
        "huge-status.json": json.dumps(huge)
        .replace('"HUGE"', "9" * 5000)
        .replace('"HUGER"', "1" * 50)
        .encode(),
        "huge-in-range.json": json.dumps(huge)
        .replace('"HUGE"', "2" * 4000)
        .replace('"HUGER"', "12.5")
        .encode(),
        "infinite.json": json.dumps(huge)
        .replace('"HUGE"', "200")
        .replace('"HUGER"', "1e999")
        .encode(),
        "deep.json": b"[" * 100_000 + b"]" * 100_000,
        "deep-body.json": json.dumps(lookup)[:-1].encode()
        + b', "deep": '
        + b'{"a":' * 100_000
        + b"1"
        + b"}" * 100_001,
        "bomb.json.gz": _gzip_bomb(),
        "body-bomb.json": _answered_with_a_bomb(valid[0], [["content-encoding", "gzip"]]),
        "body-bomb-twice.json": _answered_with_a_bomb(
            valid[0], [["content-encoding", "gzip, gzip"]], wrapped=True
        ),
        "body-bomb-two-headers.json": _answered_with_a_bomb(
            valid[0],
            [
                ["content-encoding", "identity"],
                ["content-encoding", "gzip"],
                ["content-encoding", "gzip"],
            ],
            wrapped=True,
        ),
        "header-split.json": _answered_with_headers(valid[0], [["x-up", "a\r\nSet-Cookie: pwn=1"]]),
        "id-path.json": json.dumps(dict(lookup, id="../../../etc/passwd")).encode(),
        "version-true.json": json.dumps(dict(lookup, version=True)).encode(),
        "version-float.json": json.dumps(dict(lookup, version=1.0)).encode(),
        "json-format.json": json.dumps(
            dict(
                lookup,
                request=dict(
                    lookup["request"],
                    body={"encoding": "json", "json": {"name": "ada"}, "json_format": "weird"},
                ),
            )
        ).encode(),
        "header-name.json": json.dumps(
            dict(lookup, request=dict(lookup["request"], headers=[["x-colon:evil", "v"]]))
        ).encode(),
        "broken-" + _ESCAPES + ".json": recorded_pair[1][:100],
        _NOT_UTF8_BROKEN: random.Random(16).randbytes(512),
        "escapes.json": json.dumps(_escaping(lookup), ensure_ascii=False).encode(),
    }
    for name, data in hostile.items():
        (directory / name).write_bytes(data)
    with open(directory / "oversized.json", "wb") as sparse:
        sparse.truncate(65 * _MIB)  # one byte past the default limit... and then some: never read
    os.mkfifo(directory / "fifo.json")  # opened for reading, it would wait for a writer forever
    (directory / "zero.json").symlink_to("/dev/zero")
    wrong = directory / "wrong-types"
    wrong.mkdir()
    for number, path in enumerate(_fields(lookup)):
        value = _value_at(lookup, path)
        name = f"{number:03d}-{'.'.join(map(str, path))[:80]}"
        (wrong / f"{name}.json").write_text(json.dumps(_with(lookup, path, _wrong(value))), "utf-8")
        # and a number no float holds
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            (wrong / f"{name}-huge.json").write_text(
                json.dumps(_with(lookup, path, int("9" * 400))), "utf-8"
            )
    names = [*hostile, "oversized.json", "fifo.json", "zero.json"]
    return Corpus(
        directory,
        {
            "valid.json": valid[0]["id"],
            "valid-lookup.json.gz": lookup["id"],
            _NOT_UTF8_VALID: "0000abcd",
            "escapes.json": lookup["id"],
        },
        [directory / name for name in names],
        sorted(wrong.iterdir()),
    )


def _value_at(document: Any, path: tuple) -> Any:
    for key in path:
        document = document[key]
    return document


def _limited() -> None:
    """Run in the reader's process before it starts: its address space is bounded."""
    resource.setrlimit(resource.RLIMIT_AS, (_MEMORY_LIMIT, _MEMORY_LIMIT))


def _environment(upstream: str = "http://127.0.0.1:9") -> dict[str, str]:
    """The readers' environment: the replay app's upstream (never called: replay answers), few malloc
    arenas (each thread's would reserve address space the limit is not meant to count)."""
    return {**os.environ, "MALLOC_ARENA_MAX": "2", "REPLAY_APP_UPSTREAM": upstream}


@pytest.fixture(scope="module")
def driven(
    corpus: Corpus, upstream: Upstream, tmp_path_factory: pytest.TempPathFactory
) -> dict[tuple[str, str], dict[str, Any]]:
    """What every reader did with every file of the corpus (see _read_every_way.py), keyed by (file, reader)."""
    files = [
        str(path)
        for path in (
            *corpus.hostile,
            *(corpus.directory / name for name in corpus.valid),
            *corpus.wrong_types,
        )
    ]
    command = [sys.executable, str(Path(__file__).with_name("_read_every_way.py")), str(corpus.directory),
               str(corpus.directory / "valid.json"), str(APPS_DIR), str(tmp_path_factory.mktemp("imported")), *files]  # fmt: skip
    done = subprocess.run(
        command,
        capture_output=True,
        timeout=_TIMEOUT_SECONDS,
        env=_environment(upstream.url),
        preexec_fn=_limited,
    )
    assert done.returncode == 0, done.stderr.decode("utf-8", "replace")[-3000:]
    results = [json.loads(line) for line in done.stdout.decode("utf-8").splitlines()]
    return {(result["file"], result["reader"]): result for result in results}


def _shown_path(path: Path) -> str:
    return printable(str(path))


def test_every_reader_refuses_each_hostile_file_in_one_line_naming_it(
    corpus: Corpus, driven: dict[tuple[str, str], dict[str, Any]]
) -> None:
    for path in corpus.hostile:
        if path.name == "escapes.json":
            continue  # usable: shown, below
        for reader in ("show", "show --payloads", "show --json", "diff", "export", "replay"):
            result = driven[(str(path), reader)]
            assert (result["exception"], result["exit"]) == (None, 2), (path.name, reader, result)
            (line,) = result["stderr"].splitlines()
            assert line.startswith(
                f"Error: timetracer: cannot use cassette {_shown_path(path)}: "
            ), (path.name, reader, line)
        start = driven[(str(path), "replay start")]
        assert start["exit"] == 2 and start["stderr"].startswith(
            f"timetracer: cannot use cassette {path}: "
        ), (path.name, start)
        assert "\n" not in start["stderr"]
        imported = driven[(str(path), "import")]
        assert imported["exception"] is None and imported["exit"] in (0, 1, 2), (
            path.name,
            imported,
        )
        for line in (
            imported["stderr"].splitlines()[:-1]
            if imported["exit"] != 2
            else imported["stderr"].splitlines()
        ):
            assert _shown_path(path) in line, (path.name, line)


def test_what_each_problem_says(
    corpus: Corpus, driven: dict[tuple[str, str], dict[str, Any]]
) -> None:
    def problem(name: str) -> str:
        return driven[(str(corpus.directory / name), "replay start")]["stderr"].split(": ", 2)[2]

    assert problem("truncated.json").startswith("is truncated: the JSON ends early")
    assert problem("request.json") == "is not valid JSON at line 1 column 1: Expecting value"
    assert problem("empty.json") == "is empty"
    assert (
        problem("other.json")
        == "is JSON but not a timetracer cassette (it has no 'format' field, expected 'timetracer-cassette')"
    )
    assert (
        problem("list.json")
        == "is JSON but not a timetracer cassette (the top level is a list, expected an object)"
    )
    assert (
        problem("otlp.json")
        == "is OTLP JSON, not a cassette: turn it into cassettes with timetracer import"
    )
    assert (
        problem("huge-status.json")
        == "holds a number of 5000 digits at response.status; TIMETRACER_READ_MAX_DIGITS allows 4300"
    )
    assert (
        problem("huge-in-range.json")
        == "response.status is an integer of 13286 bits, expected an integer from 100 to 599"
    )
    assert problem("infinite.json") == "duration_ms is inf, expected a number >= 0 or null"
    assert (
        problem("deep.json") == "is nested 100000 levels deep; TIMETRACER_READ_MAX_DEPTH allows 256"
    )
    assert (
        problem("deep-body.json")
        == "is nested 100001 levels deep; TIMETRACER_READ_MAX_DEPTH allows 256"
    )
    assert (
        problem("bomb.json.gz")
        == "expands beyond TIMETRACER_READ_MAX_BYTES (67108864 bytes) when decompressed"
    )
    for bomb in ("body-bomb.json", "body-bomb-twice.json", "body-bomb-two-headers.json"):
        assert (
            problem(bomb)
            == "calls[0].response.body expands beyond TIMETRACER_READ_MAX_BYTES (67108864 bytes) when its Content-Encoding is undone"
        )
    assert problem("id-path.json") == (
        "id is '../../../etc/passwd', expected at most 64 letters, digits, '_', '.' or '-'"
    )
    assert problem("version-true.json") == (
        "format version true is not supported (this timetracer reads version 1)"
    )
    assert problem("version-float.json") == (
        "format version 1.0 is not supported (this timetracer reads version 1)"
    )
    assert problem("json-format.json") == (
        "request.body.json_format is 'weird', expected a JSON layout such as compact or indent2 (docs/cassette-format.md)"
    )
    assert (
        problem("header-split.json")
        == "calls[0].response.headers[0][1] holds a line break (not a folded line's) or NUL, which no parsed header value does"
    )
    assert problem("header-name.json") == (
        "request.headers[0][0] is 'x-colon:evil', expected a header name (letters, digits and !#$%&'*+-.^_`|~)"
    )
    assert (
        problem("oversized.json") == "is 68157440 bytes; TIMETRACER_READ_MAX_BYTES allows 67108864"
    )
    assert problem("fifo.json") == "cannot be read (not a regular file)"
    assert problem("random.json.gz") == "is not UTF-8 text (a binary file?)"


def test_each_wrong_typed_field_is_named_or_harmless(
    corpus: Corpus, driven: dict[tuple[str, str], dict[str, Any]]
) -> None:
    """A field of the wrong type is named by the error (``calls[0].request.url is 12345, expected ...``), or
    is one no reader relies on and the cassette is shown; nothing fails otherwise."""
    named = 0
    for path in corpus.wrong_types:
        start = driven[(str(path), "replay start")]
        for reader in ("show", "show --payloads", "show --json", "diff", "export"):
            result = driven[(str(path), reader)]
            assert result["exception"] is None and result["exit"] in (0, 1, 2), (
                path.name,
                reader,
                result,
            )
            # one line naming the file (export says what it could not write, too)
            if result["exit"] == 2:
                (line,) = result["stderr"].splitlines()
                assert line.startswith(
                    (
                        f"Error: timetracer: cannot use cassette {path}: ",
                        f"Error: {path}: cannot be exported",
                    )
                ), (path.name, reader, line)
        if start["exit"] == 2:
            field = (
                path.name.split("-", 1)[1].removesuffix(".json").removesuffix("-huge").split(".")
            )
            assert "\n" not in start["stderr"] and field[-1] in start["stderr"], (
                path.name,
                start["stderr"],
            )
            named += 1
    # most fields are used, and each of those is checked
    assert named > len(corpus.wrong_types) // 2


def test_valid_cassettes_beside_the_hostile_ones_are_listed_searched_and_replayed(
    corpus: Corpus, driven: dict[tuple[str, str], dict[str, Any]]
) -> None:
    where = str(corpus.directory)
    listed = json.loads(driven[(where, "list --json")]["stdout"])
    assert sorted(entry["id"] for entry in listed if "/" not in entry["key"]) == sorted(
        corpus.valid.values()
    )
    unusable = driven[(where, "list")]["stderr"].splitlines()
    # and the count line
    assert unusable[0] == f"timetracer: {len(unusable) - 2} file(s) are not usable cassettes:"
    assert len(unusable) - 2 == len(corpus.hostile) - 1 + sum(
        driven[(str(p), "replay start")]["exit"] == 2 for p in corpus.wrong_types
    )
    found = json.loads(driven[(where, "search --json")]["stdout"])
    assert sorted(entry["key"] for entry in found if "/" not in entry["key"]) == sorted(
        [_NOT_UTF8_VALID, "escapes.json", "valid-lookup.json.gz"]
    )
    start = driven[(where, "replay start")]
    replayable = [Path(path) for path in start["stdout"].splitlines()]
    assert start["exit"] == 0 and sorted(
        path.name for path in replayable if path.parent == corpus.directory
    ) == sorted(corpus.valid)
    replayed = driven[(where, "replay")]
    assert replayed["exit"] == 1, replayed["stderr"]  # unusable files were left out
    reports = {Path(report["cassette"]).name: report for report in json.loads(replayed["stdout"])}
    assert reports["valid.json"]["ok"] and reports["valid-lookup.json.gz"]["ok"], (
        reports["valid.json"],
        reports["valid-lookup.json.gz"],
    )
    assert all(
        line.endswith("; the replay goes on without it")
        for line in replayed["stderr"].splitlines()
        if "cannot use cassette" in line
    )


def test_no_recorded_value_reaches_the_terminal_unescaped(
    corpus: Corpus, driven: dict[tuple[str, str], dict[str, Any]]
) -> None:
    for (file, reader), result in driven.items():
        if reader == "replay start":
            continue  # no command: what the driver found
        for stream in ("stdout", "stderr"):
            unsafe = _UNSAFE.search(result[stream])
            assert unsafe is None, (
                file,
                reader,
                stream,
                result[stream][max(0, unsafe.start() - 60) : unsafe.start() + 20],
            )
    shown = driven[(str(corpus.directory / "escapes.json"), "show --payloads")]
    assert (
        shown["exit"] == 0 and "\\x1b]0;owned\\x07\\x1b[2J\\x9b31m\\u202etxt.exe" in shown["stdout"]
    )
    listing = driven[(str(corpus.directory), "list")]["stdout"]
    # the table shows ids, the name is in --json
    assert "\\xff\\xfe-valid.json" not in listing and "0000abcd" in listing
    as_json = json.loads(driven[(str(corpus.directory), "list --json")]["stdout"])
    # the name's bytes survive the JSON, as \udcff escapes
    assert _NOT_UTF8_VALID in {entry["key"] for entry in as_json}


def test_the_console_script_prints_names_that_are_not_utf8(corpus: Corpus) -> None:
    """Through the real standard streams (strict UTF-8), not a test runner's: no UnicodeEncodeError."""
    script = Path(sys.executable).with_name("timetracer")
    listing = subprocess.run(
        [script, "list", "--dir", corpus.directory, "--json"],
        capture_output=True,
        timeout=60,
        env=_environment(),
    )
    assert listing.returncode == 0, listing.stderr
    assert (
        b"broken-\\xe9.json: " in listing.stderr and b"\\udcff\\udcfe-valid.json" in listing.stdout
    )
    shown = subprocess.run(
        [script, "show", os.fsencode(corpus.directory / _NOT_UTF8_BROKEN)],
        capture_output=True,
        timeout=60,
        env=_environment(),
    )
    assert (
        shown.returncode == 2
        and shown.stderr.decode("ascii").startswith("Error: timetracer: cannot use cassette ")
        and b"broken-\\xe9.json" in shown.stderr
    )


@contextlib.contextmanager
def _dashboard(directory: Path) -> Iterator[str]:
    """``timetracer serve`` on any free port, under the memory limit; its URL, read from the line it prints once listening."""
    script = Path(sys.executable).with_name("timetracer")
    command = [script, "serve", "--dir", directory, "--port", "0"]
    process = subprocess.Popen(
        command,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        env=_environment(),
        preexec_fn=_limited,
    )
    assert process.stderr is not None
    first = process.stderr.readline().decode()
    drained: list[bytes] = []
    drain = threading.Thread(target=lambda: drained.extend(process.stderr), daemon=True)  # type: ignore[arg-type]
    drain.start()
    try:
        assert first.startswith("timetracer dashboard for "), first
        yield first.rsplit(" ", 1)[1].strip().rstrip("/")
    finally:
        process.terminate()
        process.wait(30)
        drain.join(30)
    assert process.returncode in (0, -signal.SIGTERM), b"".join(drained)[-3000:]


def test_the_dashboard_serves_the_valid_cassettes_and_names_each_hostile_file(
    corpus: Corpus,
) -> None:
    with _dashboard(corpus.directory) as url, httpx.Client(base_url=url, timeout=120) as client:
        table = client.get("/")
        assert table.status_code == 200
        assert _UNSAFE.search(table.text) is None
        for name, cassette_id in corpus.valid.items():
            assert cassette_id in table.text
            page = client.get(f"/cassettes/{quote(os.fsencode(name))}")
            assert page.status_code == 200, (name, page.text[-500:])
            assert _UNSAFE.search(page.text) is None
        assert "\\x1b]0;owned\\x07" in client.get("/cassettes/escapes.json").text
        keys = [path.name for path in corpus.hostile if path.name != "escapes.json"]
        keys += [f"wrong-types/{path.name}" for path in corpus.wrong_types]
        for key in keys:
            shown = printable(key)
            for target in (f"/cassettes/{quote(os.fsencode(key))}", f"/download/{quote(os.fsencode(key))}?part=response",
                           f"/diff?a={quote(os.fsencode(key))}&b=valid.json"):  # fmt: skip
                page = client.get(target)
                assert page.status_code in (200, 422), (target, page.status_code, page.text[-500:])
                if page.status_code == 422:
                    problem = page.text.split('<p class="problem" id="problem">', 1)[1].split(
                        "</p>", 1
                    )[0]
                    assert (
                        html.unescape(problem).startswith(f"cannot use cassette {shown}: ")
                        and "\n" not in problem
                    ), (target, problem)
                    assert (
                        f'<td class="mono">{html.escape(shown)}</td>' in table.text
                        or "wrong-types/" in key
                    ), key
        assert client.get("/", params={"text": "lookup"}).status_code == 200
