"""Whatever a cassette file holds, ``load_cassette`` gives a checked document or ``CassetteError``, nothing else.

Inputs (hypothesis, bounded): random bytes, gzip of random bytes, JSON-like token soup,
very deep nesting, and mutations of a real cassette recorded here: bytes flipped,
inserted, deleted or cut (plain and gzip-compressed), and JSON nodes replaced or removed.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from timetracer_otel._standalone import record_block
from timetracer_otel.cassette.reader import CassetteError, load_cassette

_FUZZ = settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


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


def _only_cassette_error(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path``; loading it must give a document or :class:`CassetteError`."""
    path.write_bytes(data)
    try:
        document = load_cassette(path)
    except CassetteError as exc:
        assert exc.path == str(path) and exc.problem
    else:
        assert isinstance(document, dict) and isinstance(document["calls"], list)


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
@given(st.one_of(st.binary(max_size=4096), st.binary(max_size=512).map(gzip.compress), _soups, _deep))
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
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
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
def test_mutated_real_cassettes_give_a_document_or_cassette_error(real_cassette: bytes, target: Path, data: st.DataObject) -> None:
    _only_cassette_error(target, data.draw(_byte_mutations(real_cassette) | _tree_mutations(real_cassette)))
