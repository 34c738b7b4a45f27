"""Cassettes as OTLP JSON: recorded through uvicorn, exported with ``timetracer export --otlp-json``,
scattered across lines as a collector would batch them, imported with ``timetracer import``, and
replayed with the upstream down: the same calls answer the same bytes."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _replay import Sent, assert_same_response, record, replay, replay_config
from conftest import load_cassettes, running_upstream
from test_cli import timetracer

from timetracer_otel.cassette.reader import cassette_files

_SENT: list[Sent] = [
    ("GET", "/mixed", {}),  # httpx and requests in one request
    ("GET", "/async/httpx", {}),  # JSON, form, a secret, binary, gzip, a 404, a stream
    ("GET", "/sync/requests", {}),
    ("POST", "/lookup", {"json": {"name": "ada"}}),
    ("GET", "/fail/httpx", {}),  # a call that failed: an error status and an exception event
]
_SERVER_KIND = 2  # SPAN_KIND_SERVER: OTLP JSON writes enums as integers


def _by_id(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {doc["id"]: doc for doc in docs}


def _scatter(lines: list[str]) -> list[str]:
    """The spans of every line, two per line, of all traces interleaved, last first: as a collector batches them."""
    spans = [
        (resource["resource"], span)
        for line in lines
        for resource in json.loads(line)["resourceSpans"]
        for scope in resource["scopeSpans"]
        for span in scope["spans"]
    ]
    spans.sort(key=lambda pair: pair[1]["spanId"][::-1])  # any order that is not the recorded one
    batches = [spans[i : i + 2] for i in range(0, len(spans), 2)]
    foreign = {
        "resource": {},
        "scopeSpans": [{"spans": [{"traceId": "ab" * 16, "spanId": "cd" * 8, "name": "not ours"}]}],
    }
    out = [
        json.dumps(
            {"resourceSpans": [{"resource": r, "scopeSpans": [{"spans": [s]}]} for r, s in batch]}
        )
        for batch in batches
    ]
    return [json.dumps({"resourceMetrics": []}), json.dumps({"resourceSpans": [foreign]}), *out]


def test_export_import_round_trip_replays_byte_for_byte(
    serve: Callable[..., Any], cassette_dir: Path, tmp_path: Path
) -> None:
    """Many traces in one file, spans scattered over lines: the imported cassettes equal the recorded ones and replay."""
    with running_upstream() as upstream:
        recorded = record(serve, upstream.url, cassette_dir, _SENT)
    originals = _by_id(load_cassettes(cassette_dir))
    assert len(originals) == len(_SENT) and all(doc["calls"] for doc in originals.values())
    assert any(
        span["events"] and span["status"]["description"]
        for doc in originals.values()
        for span in doc["spans"]
    )

    exported = tmp_path / "traces.json"
    done = timetracer("export", "--otlp-json", str(cassette_dir), "-o", str(exported))
    assert done.returncode == 0, done.stderr
    lines = exported.read_text("utf-8").splitlines()
    assert len(lines) == len(_SENT)
    first = json.loads(lines[0])["resourceSpans"][0]
    server = next(s for s in first["scopeSpans"][0]["spans"] if s["kind"] == _SERVER_KIND)
    doc = originals[server["spanId"][-8:]]
    assert server["traceId"] == doc["trace_id"] and server["startTimeUnixNano"] == str(
        doc["spans"][0]["start_time_unix_nano"]
    )
    assert {"key": "service.name", "value": {"stringValue": doc["service"]}} in first["resource"][
        "attributes"
    ]

    collector_file = tmp_path / "collector.json"
    collector_file.write_text("\n".join(_scatter(lines)) + "\n", "utf-8")
    imported_dir = tmp_path / "imported"
    done = timetracer("import", str(collector_file), "--dir", str(imported_dir))
    assert done.returncode == 0, done.stderr
    assert f"imported {len(_SENT)} cassette(s)" in done.stderr
    imported = _by_id(load_cassettes(imported_dir))
    # every field carried: request, response, typed calls, spans, events
    assert imported == originals
    # the same names
    assert sorted(p.relative_to(imported_dir) for p in imported_dir.rglob("*.json")) == sorted(
        p.relative_to(cassette_dir) for p in cassette_dir.rglob("*.json")
    )

    # The upstream is down: every call is answered from the imported cassettes.
    replayed, reports = replay(serve, upstream.url, replay_config(imported_dir), _SENT)
    for old, new in zip(recorded, replayed, strict=False):
        assert_same_response(old, new)
    assert all(r.ok and not r.unused and not r.unmatched for r in reports)
    assert sorted(r.cassette_id for r in reports) == sorted(originals)


def test_export_of_a_directory_names_each_cassette_it_cannot_read_and_exports_the_others(
    serve: Callable[..., Any], upstream: Any, cassette_dir: Path, tmp_path: Path
) -> None:
    record(serve, upstream.url, cassette_dir, _SENT[:2])
    mixed = tmp_path / "mixed"
    shutil.copytree(cassette_dir, mixed)
    (mixed / "broken.json").write_text('{"format": "timetracer-cassette"', "utf-8")
    exported = tmp_path / "traces.json"
    done = timetracer("export", "--otlp-json", str(mixed), "-o", str(exported))
    assert done.returncode == 2  # the export is not whole
    assert len(exported.read_text("utf-8").splitlines()) == 2
    assert f"timetracer: cannot use cassette {mixed / 'broken.json'}: " in done.stderr
    assert "; the export goes on without it" in done.stderr
    assert "1 cassette(s) could not be exported (named above)" in done.stderr


def test_import_writes_each_cassette_once_and_names_what_is_incomplete(
    serve: Callable[..., Any], upstream: Any, cassette_dir: Path, tmp_path: Path
) -> None:
    record(serve, upstream.url, cassette_dir, _SENT[:2])
    exported = tmp_path / "traces.json"
    assert (
        timetracer("export", "--otlp-json", str(cassette_dir), "-o", str(exported)).returncode == 0
    )
    target = tmp_path / "imported"
    assert timetracer("import", str(exported), "--dir", str(target)).returncode == 0
    again = timetracer("import", str(exported), "--dir", str(target))
    assert again.returncode == 0, again.stderr
    assert "imported 0 cassette(s)" in again.stderr and "(2 already there)" in again.stderr
    assert len(cassette_files(target)) == 2

    first, second = (json.loads(line) for line in exported.read_text("utf-8").splitlines())
    spans = first["resourceSpans"][0]["scopeSpans"][0]["spans"]
    lost = next(s for s in spans if s["kind"] != _SERVER_KIND)
    spans.remove(lost)
    partial = tmp_path / "partial.json"
    partial.write_text(
        "\n".join([json.dumps(first), json.dumps(second), '{"resourceSpans": [{"cut']) + "\n",
        "utf-8",
    )
    done = timetracer("import", str(partial), "--dir", str(tmp_path / "partial"))
    assert done.returncode == 1
    assert f"{partial} line 3 is truncated: the JSON ends early" in done.stderr
    assert f"trace {lost['traceId']} server span " in done.stderr
    assert f"incomplete cassette, {len(spans)} of {len(spans) + 1} spans" in done.stderr
    assert len(cassette_files(tmp_path / "partial")) == 1  # the complete one


def test_export_writes_otlp_json_unasked_and_needs_a_cassette_with_its_server_span(
    cassette_dir: Path, upstream: Any, serve: Callable[..., Any]
) -> None:
    record(serve, upstream.url, cassette_dir, _SENT[:1])
    (path,) = cassette_files(cassette_dir)
    unnamed, named = timetracer("export", str(path)), timetracer("export", "--otlp-json", str(path))
    assert unnamed.returncode == 0, unnamed.stderr
    assert unnamed.stdout == named.stdout and '"resourceSpans"' in unnamed.stdout
    doc = json.loads(Path(path).read_text("utf-8"))
    doc["spans"] = [s for s in doc["spans"] if s["kind"] != "SERVER"]
    orphan = cassette_dir.parent / "orphan.json"
    orphan.write_text(json.dumps(doc), "utf-8")
    done = timetracer("export", "--otlp-json", str(orphan))
    assert done.returncode == 2 and f"cassette {doc['id']} has no span {doc['id']}" in done.stderr
