"""Where cassettes are kept: gzip-compressed files and an S3 bucket (a moto server on 127.0.0.1),
recorded through uvicorn, listed and shown by the ``timetracer`` command, replayed with the upstream down."""

from __future__ import annotations

import gzip
import json
import logging
import os
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from _replay import Sent, assert_same_response, replay, replay_config, send, uvicorn_process
from apps.replay_app import create_app
from conftest import running_upstream
from moto.server import ThreadedMotoServer
from test_cli import timetracer

import timetracer_otel
from timetracer_otel import _diagnostics
from timetracer_otel.cassette.location import read_bytes
from timetracer_otel.cassette.reader import CassetteError, cassette_files, load_cassette
from timetracer_otel.cassette.storage import encode, write_new
from timetracer_otel.config import TraceConfig
from timetracer_otel.replayers.selection import CassetteLibrary

_SENT: list[Sent] = [
    ("GET", "/mixed", {}),  # httpx and requests
    ("POST", "/lookup", {"json": {"name": "ada"}}),
    ("GET", "/async/httpx", {}),  # JSON, form, binary, gzip, a 404, a stream
]


def _record(
    serve: Callable[..., Any], upstream_url: str, config: TraceConfig, sent: list[Sent]
) -> list[httpx.Response]:
    responses = send(serve(create_app(upstream_url, config)).url, sent)
    assert timetracer_otel.flush(30), "cassette writer did not drain"
    return responses


def _listed(where: str) -> dict[str, dict[str, Any]]:
    """``timetracer list --json`` of ``where``, by cassette id."""
    done = timetracer("list", "--dir", where, "--json")
    assert done.returncode == 0, done.stderr
    return {entry["id"]: entry for entry in json.loads(done.stdout)}


def _replays_identically(
    serve: Callable[..., Any],
    upstream_url: str,
    config: TraceConfig,
    recorded: list,
    sent: list[Sent],
) -> None:
    replayed, reports = replay(serve, upstream_url, config, sent)
    for old, new in zip(recorded, replayed, strict=False):
        assert_same_response(old, new)
    assert len(reports) == len(sent) and all(r.ok and not r.unused for r in reports)


# --------------------------------------------------------------------------- gzip
def test_gzip_cassettes_are_written_atomically_and_read_everywhere(
    serve: Callable[..., Any], cassette_dir: Path
) -> None:
    """``compression="gzip"`` writes ``.json.gz``; replay, the index, list, show and search read it beside plain ``.json``."""
    with running_upstream() as upstream:
        packed = _record(
            serve,
            upstream.url,
            TraceConfig(mode="record", cassette_dir=str(cassette_dir), compression="gzip"),
            _SENT,
        )
        plain = _record(
            serve,
            upstream.url,
            TraceConfig(mode="record", cassette_dir=str(cassette_dir)),
            [("GET", "/sync/requests", {})],
        )
    files = cassette_files(cassette_dir)
    assert sorted(Path(f).name.split(".", 1)[1] for f in files) == [
        "json",
        "json.gz",
        "json.gz",
        "json.gz",
    ]
    assert not list(cassette_dir.rglob(".tmp-*"))  # written through a temporary file, then linked
    for file in files:
        raw = Path(file).read_bytes()
        text = gzip.decompress(raw) if Path(file).name.endswith(".gz") else raw
        assert load_cassette(file) == json.loads(text)

    listed = _listed(str(cassette_dir))
    assert (
        len(listed) == 4
        and sum(entry["key"].endswith(".json.gz") for entry in listed.values()) == 3
    )
    lookup = next(entry for entry in listed.values() if entry["path"] == "/lookup")
    shown = timetracer("show", lookup["id"], "--dir", str(cassette_dir))
    assert shown.returncode == 0 and "POST /lookup" in shown.stdout, shown.stderr
    found = timetracer("search", "name=ada", "--dir", str(cassette_dir), "--json")
    assert [entry["id"] for entry in json.loads(found.stdout)] == [lookup["id"]]

    _replays_identically(
        serve,
        upstream.url,
        replay_config(cassette_dir),
        packed + plain,
        [*_SENT, ("GET", "/sync/requests", {})],
    )


def test_gzip_from_the_environment_and_a_cut_gzip_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TIMETRACER_COMPRESSION", "GZIP")
    assert (
        TraceConfig().compression == "gzip"
        and TraceConfig(compression="none").compression == "none"
    )
    monkeypatch.setenv("TIMETRACER_COMPRESSION", "zip")
    with pytest.raises(
        ValueError,
        match="TIMETRACER_COMPRESSION: invalid compression 'zip'; allowed values: none, gzip",
    ):
        TraceConfig()
    cut = tmp_path / "cut.json.gz"
    cut.write_bytes(gzip.compress(b'{"format": "timetracer-cassette"}')[:20])
    with pytest.raises(CassetteError, match="is a truncated gzip file"):
        load_cassette(cut)
    done = timetracer("show", str(cut))
    assert (
        done.returncode == 2
        and f"cannot use cassette {cut}: is a truncated gzip file" in done.stderr
    )


def test_the_pytest_fixture_replays_a_gzip_cassette(
    serve: Callable[..., Any], cassette_dir: Path, timetracer_replay: Callable[..., Any]
) -> None:
    with running_upstream() as upstream:
        _record(
            serve,
            upstream.url,
            TraceConfig(mode="record", cassette_dir=str(cassette_dir), compression="gzip"),
            _SENT[1:2],
        )
    (cassette,) = cassette_files(cassette_dir)
    with timetracer_replay(
        cassette, strict=True
    ) as session:  # the upstream is down: only the cassette can answer
        answer = httpx.get(f"{upstream.url}/echo", params={"name": "ada"})
    assert answer.json()["query"] == "name=ada"
    assert [call.view.label for _, call in session.answered] == [
        f"GET {upstream.url}/echo?name=ada"
    ]


# --------------------------------------------------------------------------- S3
@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def bucket(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """A new bucket on the local moto server; the AWS variables point there, with dummy credentials."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    name = f"cassettes-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name


def test_record_to_s3_list_show_and_replay_from_it(
    serve: Callable[..., Any], bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``TIMETRACER_DIR=s3://...`` records there; ``list``/``show`` read it; ``TIMETRACER_CASSETTE=s3://...`` replays a prefix or one object."""
    prefix = f"s3://{bucket}/recorded"
    monkeypatch.setenv("TIMETRACER_DIR", prefix)
    with running_upstream() as upstream:
        recorded = _record(serve, upstream.url, TraceConfig(mode="record"), _SENT)
        packed = _record(
            serve,
            upstream.url,
            TraceConfig(mode="record", compression="gzip"),
            [("GET", "/sync/requests", {})],
        )
    files = cassette_files(prefix)
    assert len(files) == 4 and all(isinstance(f, str) and f.startswith(f"{prefix}/") for f in files)
    assert sum(f.endswith(".json.gz") for f in files) == 1

    listed = _listed(prefix)
    assert {entry["path"] for entry in listed.values()} == {
        "/mixed",
        "/lookup",
        "/async/httpx",
        "/sync/requests",
    }
    mixed = next(entry for entry in listed.values() if entry["path"] == "/mixed")
    assert f"{prefix}/{mixed['key']}" in files
    by_id = timetracer("show", mixed["id"], "--dir", prefix)
    by_url = timetracer("show", f"{prefix}/{mixed['key']}", "--json")
    assert by_id.returncode == 0 and "GET /mixed" in by_id.stdout, by_id.stderr
    assert by_url.returncode == 0 and json.loads(by_url.stdout)["id"] == mixed["id"], by_url.stderr

    # The upstream is down: every call answers from S3, in a process started to replay, as users run it.
    env = {
        "TIMETRACER_MODE": "replay",
        "TIMETRACER_CASSETTE": prefix,
        "REPLAY_APP_UPSTREAM": upstream.url,
    }
    with uvicorn_process(env) as process:
        replayed = send(process.url, [*_SENT, ("GET", "/sync/requests", {})])
    for old, new in zip(recorded + packed, replayed, strict=False):
        assert_same_response(old, new)
    assert process.stderr.count("timetracer [OK] replayed") == 4, process.stderr
    monkeypatch.setenv("TIMETRACER_CASSETTE", f"{prefix}/{mixed['key']}")
    _replays_identically(serve, upstream.url, TraceConfig(mode="replay"), recorded[:1], _SENT[:1])

    with pytest.raises(CassetteError, match="holds no cassettes"):
        CassetteLibrary(f"s3://{bucket}/nothing-here")


def test_s3_never_overwrites_a_cassette(bucket: str) -> None:
    """A taken name gets ``-2`` (a conditional PUT), as on disk: another process's cassette is never replaced."""
    root = f"s3://{bucket}/taken"
    first = write_new(root, "2026-01-22/GET____a7f2.json.gz", encode(b'{"first": 1}', ".gz"))
    second = write_new(root, "2026-01-22/GET____a7f2.json.gz", encode(b'{"second": 2}', ".gz"))
    assert (first, second) == (
        f"{root}/2026-01-22/GET____a7f2.json.gz",
        f"{root}/2026-01-22/GET____a7f2-2.json.gz",
    )
    assert [gzip.decompress(read_bytes(url)) for url in (first, second)] == [
        b'{"first": 1}',
        b'{"second": 2}',
    ]


def test_on_disk_a_taken_name_gets_a_suffix_and_a_forked_child_writes_its_own_file(
    tmp_path: Path,
) -> None:
    """Written whole, then named (an unnamed file where the file system has them): no temporary
    file is left, a taken name is never replaced, and a child forked after the parent wrote links
    its own file, not one of the parent's."""
    relpath = "2026-01-22/GET____a7f2.json"
    first = write_new(tmp_path, relpath, b'{"first": 1}')
    child = os.fork()
    if child == 0:  # pragma: no cover - the child's outcome is its exit status
        try:
            written = write_new(tmp_path, relpath, b'{"child": 2}')
            os._exit(0 if Path(written).read_bytes() == b'{"child": 2}' else 1)
        finally:
            os._exit(2)
    assert os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]) == 0
    third = write_new(tmp_path, relpath, b'{"third": 3}')
    folder = tmp_path / "2026-01-22"
    assert sorted(p.name for p in folder.iterdir()) == [
        "GET____a7f2-2.json",
        "GET____a7f2-3.json",
        "GET____a7f2.json",
    ]
    assert (Path(first).read_bytes(), Path(third).read_bytes()) == (
        b'{"first": 1}',
        b'{"third": 3}',
    )
    assert (folder / "GET____a7f2-2.json").read_bytes() == b'{"child": 2}'


@pytest.mark.parametrize("where", ["s3", "disk"])
def test_a_failed_write_is_counted_logged_once_and_never_fails_the_request(
    where: str,
    serve: Callable[..., Any],
    upstream: Any,
    bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A missing bucket behaves as an unwritable directory: the app answers, the failure is counted and logged once a minute."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    target = f"s3://{bucket}-missing/recorded" if where == "s3" else str(blocker / "cassettes")
    # no report held back by an earlier test
    monkeypatch.setattr(_diagnostics, "errors", _diagnostics._RateLimitedErrors())
    before = timetracer_otel.stats().get("errors.write", 0)
    with caplog.at_level(logging.ERROR, logger="timetracer"):
        responses = _record(
            serve, upstream.url, TraceConfig(mode="record", cassette_dir=target), _SENT[1:2] * 2
        )
    assert [r.json()["query"] for r in responses] == ["name=ada", "name=ada"]
    assert timetracer_otel.stats().get("errors.write", 0) - before == 2
    (logged,) = [r.getMessage() for r in caplog.records if "write failed" in r.getMessage()]
    if where == "s3":
        assert "bucket does not exist" in logged
    else:  # the day's directory is named, not a temporary file in it
        assert re.search(
            rf"Not a directory: '{re.escape(str(blocker / 'cassettes'))}/\d{{4}}-\d{{2}}-\d{{2}}'",
            logged,
        ), logged
