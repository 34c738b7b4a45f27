"""The ``timetracer`` command, run as users run it (the installed console script, in a subprocess),
on cassettes this test records from the replay app against the real upstream."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from _mixed_deps import deps, mongo, record_crash_and_mixed  # noqa: F401 - fixtures
from _replay import (
    APPS_DIR,
    Sent,
    cassette_files,
    new_reports,
    record,
    replay_config,
    send,
    serving_process,
)
from apps.mixed_app import Deps
from apps.replay_app import create_app
from conftest import Upstream, load_cassettes

import timetracer_otel
from timetracer_otel.cli.index import CassetteIndex
from timetracer_otel.cli.views import body_text
from timetracer_otel.config import TraceConfig
from timetracer_otel.integrations.starlette import TimeTracerMiddleware

# the console script pip installed beside this python
TIMETRACER = Path(sys.executable).with_name("timetracer")
_SENT: list[Sent] = [
    ("GET", "/async/httpx", {}),  # seven calls: JSON, form, binary, gzip, a 404, a stream
    ("GET", "/fail/httpx", {}),  # the upstream port is closed: 502
    ("POST", "/lookup", {"json": {"name": "ada"}}),
    ("POST", "/lookup", {"json": {"name": "Grace"}}),
    ("GET", "/report", {}),  # answers a fresh timestamp: its replay differs
]
_APP = ["--app", "replay_app:create_app", "--factory", "--app-dir", str(APPS_DIR)]


def timetracer(*args: str, upstream: str = "", **extra_env: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "REPLAY_APP_UPSTREAM": upstream, **extra_env} if upstream else None
    return subprocess.run(
        [str(TIMETRACER), *args], capture_output=True, text=True, timeout=120, env=env
    )


def _recorded(
    serve: Callable[..., Any], upstream: Upstream, cassette_dir: Path
) -> dict[str, dict[str, Any]]:
    """Record :data:`_SENT`; the listing (``list --json``) by request, ``/lookup`` by the name it was sent."""
    record(serve, upstream.url, cassette_dir, _SENT)
    done = timetracer("list", "--dir", str(cassette_dir), "--json")
    assert done.returncode == 0, done.stderr
    by_request = {}
    for entry in json.loads(done.stdout):
        body = json.loads((cassette_dir / entry["key"]).read_text("utf-8"))["request"]["body"]
        name = body["json"]["name"] if entry["path"] == "/lookup" else ""
        by_request[f"{entry['method']} {entry['path']}{' ' + name if name else ''}"] = entry
    assert sorted(by_request) == [
        "GET /async/httpx",
        "GET /fail/httpx",
        "GET /report",
        "POST /lookup Grace",
        "POST /lookup ada",
    ]
    return by_request


def _ids(done: subprocess.CompletedProcess) -> list[str]:
    assert done.returncode == 0, done.stderr
    return [entry["id"] for entry in json.loads(done.stdout)]


def test_list_filters_sorts_and_prints_a_table(
    serve: Callable[..., Any], upstream: Upstream, cassette_dir: Path
) -> None:
    """Each filter keeps exactly the matching recordings; sorting orders them; the table names every one."""
    rec = _recorded(serve, upstream, cassette_dir)
    ids = {name: entry["id"] for name, entry in rec.items()}
    lookups = {ids["POST /lookup ada"], ids["POST /lookup Grace"]}
    where = ["--dir", str(cassette_dir), "--json"]
    assert set(_ids(timetracer("list", *where, "--method", "post"))) == lookups
    # the directory as an argument, and -d for --dir
    assert set(_ids(timetracer("list", str(cassette_dir), "--json"))) == set(ids.values())
    assert set(_ids(timetracer("list", "-d", str(cassette_dir), "--json"))) == set(ids.values())
    assert _ids(timetracer("list", *where, "--status", "5xx")) == [ids["GET /fail/httpx"]]
    assert _ids(timetracer("list", *where, "--errors")) == [ids["GET /fail/httpx"]]
    assert set(_ids(timetracer("list", *where, "--status", "200-299", "--path", "/*/httpx"))) == {
        ids["GET /async/httpx"]
    }
    assert set(_ids(timetracer("list", *where, "--route", "/look*"))) == lookups
    assert _ids(timetracer("list", *where, "--since", "2999-01-01")) == []
    # further back than the calendar goes: everything
    assert set(_ids(timetracer("list", *where, "--since", "99999999d"))) == set(ids.values())
    assert (
        len(
            _ids(
                timetracer(
                    "list",
                    *where,
                    "--until",
                    "2999-01-01",
                    "--service",
                    rec["GET /report"]["service"],
                )
            )
        )
        == 5
    )
    by_duration = [
        e["duration_ms"]
        for e in json.loads(timetracer("list", *where, "--sort", "duration", "--desc").stdout)
    ]
    assert by_duration == sorted(by_duration, reverse=True)
    by_time = [e["recorded_at"] for e in json.loads(timetracer("list", *where).stdout)]
    assert by_time == sorted(by_time)

    table = timetracer("list", "--dir", str(cassette_dir), "--sort", "status", "--limit", "4")
    header, *rows = table.stdout.splitlines()
    assert header.split() == [
        "RECORDED",
        "(UTC)",
        "ID",
        "METHOD",
        "PATH",
        "STATUS",
        "MS",
        "CALLS",
        "SERVICE",
    ]
    # the 502 sorts last, past the limit
    assert [row.split()[5] for row in rows] == [
        "200",
        "200",
        "200",
        "200",
    ]
    assert table.stderr.strip() == "4 of 5 cassettes"
    bad = timetracer("list", "--dir", str(cassette_dir), "--status", "2x")
    assert bad.returncode == 2 and "invalid status '2x'" in bad.stderr


def test_a_path_with_a_sealed_token_does_not_widen_every_line_of_the_listing() -> None:
    """A reset link's token is sealed in the cassette's path (some 900 characters): the
    listing cuts that path, rather than padding every line to it."""
    from timetracer_otel.cli._render import list_lines

    entry = {"recorded_at": "2026-12-07T10:00:00", "id": "a1b2c3d4", "method": "GET",
             "query": "", "status": 200, "error": False, "duration_ms": 3.5, "calls": 1,
             "service": "fief"}  # fmt: skip
    sealed = {**entry, "path": "/reset/" + "[SEALED:" + "x" * 900 + "]"}
    header, first, second = list_lines([{**entry, "path": "/login"}, sealed])
    assert max(map(len, (header, first, second))) < 200
    assert second.split()[4].endswith("…") and first.split()[4] == "/login"


def test_the_index_follows_added_changed_and_removed_cassettes(
    serve: Callable[..., Any], upstream: Upstream, cassette_dir: Path
) -> None:
    """After the first listing builds the index, later ones see every change on disk."""
    rec = _recorded(serve, upstream, cassette_dir)
    index_file = CassetteIndex(cassette_dir).index_file
    assert (
        index_file is not None and index_file.is_file() and cassette_dir not in index_file.parents
    )
    assert [
        path.name for path in cassette_dir.rglob("*") if path.name.startswith(".")
    ] == []  # nothing for git status to show
    report = cassette_dir / rec["GET /report"]["key"]
    doc = json.loads(report.read_text("utf-8"))
    doc["response"]["status"] = 503
    # a changed cassette (other size, other mtime)
    report.write_text(json.dumps(doc, indent=2), "utf-8")
    (cassette_dir / rec["GET /fail/httpx"]["key"]).unlink()
    broken = cassette_dir / "broken.json"
    broken.write_text('{"format": "timetracer-cassette", "vers', "utf-8")
    done = timetracer("list", "--dir", str(cassette_dir), "--json")
    broken.unlink()  # not a cassette: the schema check after the test would refuse it
    listed = {e["id"]: e["status"] for e in json.loads(done.stdout)}
    assert listed == {
        e["id"]: (503 if name == "GET /report" else 200)
        for name, e in rec.items()
        if name != "GET /fail/httpx"
    }
    assert "1 file(s) are not usable cassettes" in done.stderr
    assert "broken.json: is truncated: the JSON ends early" in done.stderr


def test_show_prints_request_response_calls_and_the_span_waterfall(
    serve: Callable[..., Any], upstream: Upstream, cassette_dir: Path
) -> None:
    rec = _recorded(serve, upstream, cassette_dir)
    entry = rec["GET /async/httpx"]
    done = timetracer("show", entry["id"], "--dir", str(cassette_dir))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(
        f"GET /async/httpx  200  {entry['duration_ms']} ms  id={entry['id']}"
    )
    assert lines[1] == f"cassette: {cassette_dir / entry['key']}"
    host = upstream.url.removeprefix("http://")
    for path in (
        "POST {}/echo?via=json",
        "GET {}/binary",
        "GET {}/gzip",
        "GET {}/status/404",
        "GET {}/stream?chunks=3",
    ):
        # one row per call: its library, method and target
        assert f"httpx {path.format(host)}" in done.stdout
    spans = [
        line
        for line in lines[lines.index(next(line for line in lines if line.startswith("spans"))) :]
        if "│" in line
    ]
    # the server span spans the request
    assert spans[0].split("│")[0].strip() == "GET /async/httpx" and "████" in spans[0]
    assert [s.split("│")[1].strip() for s in spans[1:]] == ["CLIENT"] * 7
    # children, indented, tied to their call
    assert all(s.startswith("  ") and "(call #" in s for s in spans[1:])
    assert "chunk-0;chunk-1;chunk-2;" not in done.stdout  # a call's body only on demand
    full = timetracer("show", str(cassette_dir / entry["key"]), "--payloads")
    assert (
        f"call #6: httpx GET {host}/stream?chunks=3" in full.stdout
        and "chunk-0;chunk-1;chunk-2;" in full.stdout
    )
    assert (
        timetracer("show", entry["key"], "--dir", str(cassette_dir), "--json").stdout.strip()
        == (cassette_dir / entry["key"]).read_text("utf-8").strip()
    )


def test_show_names_each_call_by_library_and_target_and_prints_a_failure_with_its_traceback(
    serve: Callable[..., Any], upstream: Upstream, deps: Deps, cassette_dir: Path
) -> None:
    record_crash_and_mixed(serve, upstream, deps, cassette_dir)
    (crash,) = cassette_dir.rglob("GET__crash__*.json")
    done = timetracer("show", str(crash))
    lines = done.stdout.splitlines()
    assert lines[3:5] == [
        "error: LookupError: no profile page for octocat",
        "Traceback (most recent call last):",
    ]
    assert (
        '    raise LookupError(f"no profile page for {login}")' in lines
        and "LookupError: no profile page for octocat" in lines[5:]
    )
    (sequence,) = cassette_dir.rglob("GET__mixed_sequence__*.json")
    full = timetracer("show", str(sequence), "--payloads").stdout
    table, key = f"tt_mixed_{deps.suffix}", f"tt-mixed:{deps.suffix}"
    for label in (f"sql INSERT INTO {table}  (call #2)", f"redis INCRBY {key}:hits  (call #4)", "redis MULTI/EXEC SET, GET, INCRBYFLOAT  (call #7)",
                  f"pymongo find mixed.events_{deps.suffix}  (call #9)", "sql SELECT FROM items  (call #13)"):  # fmt: skip
        assert label in full  # each span named by its call
    inserted = [
        line.rstrip()
        for line in full.split(f"call #2: sql INSERT INTO {table}\n", 1)[1]
        .split("\n\n", 1)[0]
        .splitlines()
    ]
    assert inserted[-4:] == [
        "id ┃ amount        ┃ at", "━━━╇━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━",
        "1  │ 12.50 Decimal │ 2026-01-22 10:30:00.123000+00:00 datetime", "{'rowcount': 1, 'lastrowid': None}",
    ]  # fmt: skip
    assert (
        f"call #4: redis INCRBY {key}:hits\nrequest\nINCRBY {key}:hits 1\nresponse\n{{'reply': 1}}"
        in full
    )


def test_diff_names_each_difference_and_exits_1_unless_ignored(
    serve: Callable[..., Any], upstream: Upstream, cassette_dir: Path
) -> None:
    rec = _recorded(serve, upstream, cassette_dir)
    a, b = rec["POST /lookup ada"]["id"], rec["POST /lookup Grace"]["id"]
    done = timetracer("diff", a, b, "--dir", str(cassette_dir))
    assert done.returncode == 1, done.stderr
    assert 'request.body.name: "ada" -> "Grace"' in done.stdout.splitlines()
    assert (
        f'calls[0].request.url: "{upstream.url}/echo?name=ada" -> "{upstream.url}/echo?name=Grace"'
        in done.stdout
    )
    assert done.stdout.splitlines()[-1] == "7 differences"
    same = timetracer("diff", a, a, "--dir", str(cassette_dir))
    assert (same.returncode, same.stdout.splitlines()[-1]) == (0, "no differences")
    ignoring = [
        "--ignore",
        "name",
        "--ignore",
        "query",
        "--ignore",
        "content-length",
        "--ignore",
        "calls[0].request.url",
    ]
    quiet = timetracer("diff", a, b, "--dir", str(cassette_dir), *ignoring, "--json")
    assert (quiet.returncode, json.loads(quiet.stdout)["differences"]) == (0, [])
    strict = timetracer(
        "diff", a, b, "--dir", str(cassette_dir), *ignoring, "--no-default-ignores", "--json"
    )
    # each call carries its own span id in traceparent; the upstream's Date may or may not have ticked
    assert strict.returncode == 1 and "calls[0].request.headers.traceparent" in {
        d["where"] for d in json.loads(strict.stdout)["differences"]
    }


def test_diff_compares_sealed_secrets_by_what_they_seal_and_never_shows_them(
    serve: Callable[..., Any], upstream: Upstream, cassette_dir: Path, tmp_path: Path
) -> None:
    """Each value is sealed with its own nonce: two requests with the same token are the same
    with the key, another token differs as two digests; without the key neither is told apart."""
    tokens = ["tok-" + os.urandom(8).hex(), "tok-" + os.urandom(8).hex()]
    sent: list[Sent] = [
        (
            "POST",
            "/lookup",
            {"json": {"name": "ada"}, "headers": {"authorization": f"Bearer {token}"}},
        )
        for token in (tokens[0], tokens[0], tokens[1])
    ]
    record(serve, upstream.url, cassette_dir, sent)
    listed = timetracer("list", "--dir", str(cassette_dir), "--json")  # in recording order
    first, again, other = (entry["id"] for entry in json.loads(listed.stdout))
    where = ["--dir", str(cassette_dir)]
    same = timetracer("diff", first, again, *where)
    assert (same.returncode, same.stdout.splitlines()[-1]) == (0, "no differences"), same.stdout
    differs = timetracer("diff", first, other, *where, "--json")
    (difference,) = json.loads(differs.stdout)["differences"]
    assert difference["where"] == "request.headers.authorization"
    assert difference["a"].startswith("[SEALED #") and difference["a"] != difference["b"]
    assert not any(token in differs.stdout for token in tokens)
    env = {**os.environ, "TIMETRACER_KEY_FILE": str(tmp_path / "absent-key")}
    keyless = subprocess.run(
        [str(TIMETRACER), "diff", first, other, *where], capture_output=True, text=True, env=env
    )
    assert (keyless.returncode, keyless.stdout.splitlines()[-1]) == (0, "no differences")


def test_show_says_an_empty_body_was_not_read_to_its_end() -> None:
    """A response that failed as it started (the server refused its headers) stored no bytes and
    ``complete: false``: shown as not read to its end, not as a body that was empty."""
    assert body_text({"encoding": "empty", "complete": False}).text == "(not read to its end)"
    assert body_text({"encoding": "empty"}).text == ""


def test_search_finds_text_in_bodies_headers_and_urls(
    serve: Callable[..., Any], upstream: Upstream, cassette_dir: Path
) -> None:
    rec = _recorded(serve, upstream, cassette_dir)
    where = ["--dir", str(cassette_dir), "--json"]
    (found,) = json.loads(timetracer("search", "grace", *where).stdout)
    assert found["id"] == rec["POST /lookup Grace"]["id"]
    assert found["matches"] == [
        "request.body",
        "response.body",
        "calls[0].request.url",
        "calls[0].response.body",
        "spans[1]",  # the client span's URL
    ]
    assert json.loads(timetracer("search", "grace", "--case-sensitive", *where).stdout) == []
    by_header = {
        e["id"] for e in json.loads(timetracer("search", "application/octet-stream", *where).stdout)
    }
    assert by_header == {rec["GET /async/httpx"]["id"]}  # the /binary call's response header
    post_only = json.loads(timetracer("search", "python-httpx", "--method", "POST", *where).stdout)
    assert {e["method"] for e in post_only} == {"POST"} and len(post_only) == 2
    table = timetracer("search", "Grace", "--dir", str(cassette_dir))
    assert table.stdout.splitlines()[1].endswith(
        "request.body, response.body, calls[0].request.url, calls[0].response.body, spans[1]"
    )


def test_replay_answers_from_the_cassette_and_exits_1_when_the_response_differs(
    serve: Callable[..., Any], upstream: Upstream, cassette_dir: Path
) -> None:
    """One cassette, then the directory: no call reaches the upstream; only /report's timestamp differs."""
    rec = _recorded(serve, upstream, cassette_dir)
    before = len(upstream.requests)
    one = timetracer(
        "replay",
        rec["GET /async/httpx"]["id"],
        "--dir",
        str(cassette_dir),
        *_APP,
        upstream=upstream.url,
    )
    assert one.returncode == 0, one.stderr
    assert one.stdout.splitlines()[0].startswith("timetracer [OK] replayed GET /async/httpx  id=")
    assert "calls=7/7  unused=0  response=same" in one.stdout

    # the clock left real: /report's timestamp is new
    real_clock = {"TIMETRACER_DRAWS": "none"}
    every = timetracer(
        "replay", str(cassette_dir), *_APP, "--json", upstream=upstream.url, **real_clock
    )
    assert every.returncode == 1, every.stderr
    reports = {(r["path"], r["cassette_id"]): r for r in json.loads(every.stdout)}
    # each request answered by its own cassette
    assert set(reports) == {(e["path"], e["id"]) for e in rec.values()}
    assert [k for k, r in reports.items() if not r["ok"]] == [("/report", rec["GET /report"]["id"])]
    assert reports[("/report", rec["GET /report"]["id"])]["differences"][0].startswith(
        "body $.timestamp: recorded "
    )
    assert reports[("/fail/httpx", rec["GET /fail/httpx"]["id"])]["status"] == 502

    ignoring = timetracer(
        "replay",
        str(cassette_dir),
        *_APP,
        "--ignore",
        "timestamp",
        upstream=upstream.url,
        **real_clock,
    )
    assert ignoring.returncode == 0, ignoring.stdout + ignoring.stderr
    assert ignoring.stdout.splitlines()[-1] == "replayed 5 cassettes: 5 ok, 0 differ"
    assert len(upstream.requests) == before


def test_replay_sends_each_request_with_its_recorded_cookies_only(
    serve: Callable[..., Any], upstream: Upstream, cassette_dir: Path
) -> None:
    """A browser signs in (``/token`` sets a session cookie) and asks ``/whoami``; a fresh one asks
    without a cookie. Replayed through one client, the cookie the replayed ``/token`` set must not
    ride along with the fresh browser's request: each cassette answers its own request."""
    server = serve(
        create_app(upstream.url, TraceConfig(mode="record", cassette_dir=str(cassette_dir)))
    )
    with httpx.Client(base_url=server.url) as browser:
        browser.get("/token")
        assert browser.get("/whoami").json() == {"signed_in": True}
    assert httpx.get(f"{server.url}/whoami").json() == {"signed_in": False}
    assert timetracer_otel.flush(30)
    every = timetracer("replay", str(cassette_dir), *_APP, "--json", upstream=upstream.url)
    reports = json.loads(every.stdout)
    assert [r["path"] for r in reports] == ["/token", "/whoami", "/whoami"]
    assert [r["verdict"] for r in reports[1:]] == ["ok", "ok"], every.stdout
    assert len({r["cassette_id"] for r in reports}) == 3


def test_replay_reads_the_middleware_entry_of_starlette_before_0_35() -> None:
    """An app pinning an older FastAPI gets Starlette's earlier ``Middleware``, whose arguments
    are its ``options``: the replay reads and sets the config there."""
    from timetracer_otel.cli.replay import _arguments, _set_arguments

    class EarlierMiddleware:  # Starlette 0.27's entry: the class and its options
        def __init__(self, cls: type, **options: Any) -> None:
            self.cls, self.options = cls, options

    entry = EarlierMiddleware(TimeTracerMiddleware, config="recorded")
    assert _arguments(entry) == ((), {"config": "recorded"})
    _set_arguments(entry, {"config": "replayed"})
    assert entry.options == {"config": "replayed"}


def test_replay_of_a_directory_sends_requests_only_not_the_cassettes_of_tests(
    serve: Callable[..., Any], upstream: Upstream, cassette_dir: Path
) -> None:
    """A pytest cassette beside the server's (one cassettes/ directory, as a quick start makes
    it) has no request to send: the pytest plugin replays it, timetracer replay leaves it out."""
    from timetracer_otel._standalone import record_block

    record(serve, upstream.url, cassette_dir, [("GET", "/async/httpx", {})])
    with record_block(cassette_dir / "home.json", "test_app.py::test_home"):
        httpx.get(f"{upstream.url}/json")
    assert timetracer_otel.flush(30)
    listed = timetracer("list", "--dir", str(cassette_dir), "--json")
    assert sorted(entry["method"] for entry in json.loads(listed.stdout)) == ["GET", "PYTEST"]
    done = timetracer("replay", str(cassette_dir), *_APP, "--json", upstream=upstream.url)
    assert done.returncode == 0, done.stdout
    assert [r["path"] for r in json.loads(done.stdout)] == ["/async/httpx"]


def test_replay_gives_the_app_the_peer_scheme_and_root_path_it_was_recorded_with(
    serve: Callable[..., Any], upstream: Upstream, cassette_dir: Path
) -> None:
    """Recorded behind a proxy (uvicorn trusting X-Forwarded-For and -Proto, mounted under /api),
    replayed through the command's test client (peer "testclient", http, no root path): the app
    sees what it saw, so its call keyed by the peer matches, its route is found and its links are
    the recorded ones."""
    app = create_app(upstream.url, TraceConfig(mode="record", cassette_dir=str(cassette_dir)))
    server = serve(app, proxy_headers=True, forwarded_allow_ips="*", root_path="/api")
    proxied = {"x-forwarded-for": "203.0.113.7", "x-forwarded-proto": "https"}
    recorded = httpx.get(f"{server.url}/visitor", headers=proxied, timeout=30)
    assert timetracer_otel.flush(30)
    assert recorded.json()["visitor"] == "203.0.113.7"
    assert (
        recorded.json()["link"].startswith("https://") and "/api/visitor" in recorded.json()["link"]
    )
    (cassette,) = load_cassettes(cassette_dir)
    request = cassette["request"]
    assert (request["client"][0], request["scheme"], request["root_path"]) == (
        "203.0.113.7",
        "https",
        "/api",
    )
    done = timetracer("replay", str(cassette_dir), *_APP, "--json", upstream=upstream.url)
    assert done.returncode == 0, done.stdout + done.stderr
    (report,) = json.loads(done.stdout)
    assert (report["ok"], report["answered"]) == (
        True,
        [f"GET {upstream.url}/echo?visitor=203.0.113.7"],
    ), report


def test_replay_sends_the_recorded_headers_and_no_others(
    serve: Callable[..., Any], upstream: Upstream, cassette_dir: Path
) -> None:
    """A request recorded from a client that sent no Accept-Encoding (curl) is replayed without
    one: the test client's defaults (accept-encoding: gzip, its user-agent) would get another
    response from an app that negotiates (GZipMiddleware)."""
    app = create_app(upstream.url, TraceConfig(mode="record", cassette_dir=str(cassette_dir)))
    server = serve(app)
    with httpx.Client() as bare:
        bare.headers.clear()
        recorded = bare.get(f"{server.url}/header-names", headers={"x-trace": "1"})
    assert timetracer_otel.flush(30)
    assert "x-trace" in recorded.json() and "accept-encoding" not in recorded.json()
    done = timetracer("replay", str(cassette_dir), *_APP, "--json", upstream=upstream.url)
    assert done.returncode == 0, done.stdout + done.stderr
    (report,) = json.loads(done.stdout)
    assert report["ok"], report


def test_replay_of_a_directory_sends_the_requests_in_recording_order(
    serve: Callable[..., Any], upstream: Upstream, cassette_dir: Path
) -> None:
    """Two signatures interleaved, files named in the reverse of recording order: the command goes by
    recorded_at, and each request is answered by the cassette it was sent from."""
    record(
        serve,
        upstream.url,
        cassette_dir,
        [("POST", "/lookup", {"json": {"name": name}}) for name in ["ada", "bob", "ada"]],
    )
    found = [(json.loads(path.read_text("utf-8")), path) for path in cassette_dir.rglob("*.json")]
    found.sort(
        key=lambda item: datetime.fromisoformat(item[0]["recorded_at"].replace("Z", "+00:00"))
    )
    renamed = [
        path.rename(path.with_name(f"{len(found) - n}.json")) for n, (_, path) in enumerate(found)
    ]
    done = timetracer("replay", str(cassette_dir), *_APP, "--json", upstream=upstream.url)
    assert done.returncode == 0, done.stdout + done.stderr
    reports = json.loads(done.stdout)
    assert [(r["cassette"], r["cassette_id"], r["ok"]) for r in reports] == [
        (str(p), doc["id"], True) for (doc, _), p in zip(found, renamed, strict=False)
    ]


def test_replay_of_a_directory_answers_a_request_whose_body_was_cut_from_its_own_cassette(
    serve: Callable[..., Any], upstream: Upstream, cassette_dir: Path
) -> None:
    """A body cut at the size limit fits no recorded request by its content: the command
    still answers it from the cassette it replays (a difference, reported under that
    cassette), never from another of the same path."""
    config = TraceConfig(mode="record", cassette_dir=str(cassette_dir), max_body_bytes=1000)
    sent: list[Sent] = [
        ("POST", "/lookup", {"json": {"name": "ada"}}),
        ("POST", "/lookup", {"json": {"name": "x" * 2000}}),
    ]
    send(serve(create_app(upstream.url, config)).url, sent)
    assert timetracer_otel.flush(30), "cassette writer did not drain"
    found = sorted(
        (json.loads(path.read_text("utf-8")) for path in cassette_dir.rglob("*.json")),
        key=lambda doc: doc["recorded_at"],
    )
    assert [doc["request"]["body"].get("truncated", False) for doc in found] == [False, True]

    done = timetracer("replay", str(cassette_dir), *_APP, "--json", upstream=upstream.url)
    reports = json.loads(done.stdout)
    assert [(r["cassette_id"], r["ok"]) for r in reports] == [
        (found[0]["id"], True),
        (found[1]["id"], False),
    ], [r["differences"] for r in reports]
    assert reports[0]["notes"] == []
    # the difference follows from the cut, which the report says
    size = found[1]["request"]["body"]["size"]
    assert reports[1]["notes"] == [
        f"the recording kept 1000 of the request body's {size} bytes"
        " (TIMETRACER_MAX_BODY_BYTES): the app was sent only those"
    ]


_PLAIN_APP = """
import os

import httpx
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route


async def lookup(request):
    name = (await request.json())["name"]
    async with httpx.AsyncClient() as client:
        answer = await client.get(os.environ["REPLAY_APP_UPSTREAM"] + "/echo", params={"name": name})
    return JSONResponse(answer.json())


app = Starlette(routes=[Route("/lookup", lookup, methods=["POST"])])
"""


_STARTING_APP = """
import contextlib
import os

import anyio
import httpx
from starlette.applications import Starlette


async def warm_up():
    async with httpx.AsyncClient() as client:  # a call no process cassette holds
        await client.get(os.environ["REPLAY_APP_UPSTREAM"] + "/json?warm=1")


@contextlib.asynccontextmanager
async def lifespan(app):
    if {in_a_task_group}:  # as a scheduler started at start-up runs it: the error comes in a group
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(warm_up)
    else:
        await warm_up()
    yield


app = Starlette(lifespan=lifespan)
"""


@pytest.mark.parametrize("in_a_task_group", [False, True], ids=["awaited", "in-a-task-group"])
def test_replay_of_an_app_that_fails_to_start_is_one_message_naming_the_call(
    serve: Callable[..., Any],
    upstream: Upstream,
    cassette_dir: Path,
    tmp_path: Path,
    in_a_task_group: bool,
) -> None:
    """Its lifespan makes a call that nothing recorded: exit status 2 and the mismatch, call and
    advice, on stderr, also where a task group raised it; no traceback, nothing on standard
    output (``--json`` readers get no half list)."""
    record(serve, upstream.url, cassette_dir, [("GET", "/json", {})])
    app = _STARTING_APP.format(in_a_task_group=in_a_task_group)
    (tmp_path / "starting_app.py").write_text(app, "utf-8")
    done = timetracer(
        "replay", str(cassette_dir), "--app", "starting_app:app", "--app-dir", str(tmp_path), "--json",
        upstream=upstream.url,
    )  # fmt: skip
    assert (done.returncode, done.stdout) == (2, ""), done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith(
        "Error: the app failed to start: ReplayMismatchError: timetracer replay: no recorded call "
        f"matches GET {upstream.url}/json?warm=1 (httpx)\ncassette: (no process cassette)\n"
    ), done.stderr


# An app that sends what it buffered as the process exits (sentry-sdk's flush of its events,
# from an atexit handler), and swallows any failure doing so, as such clients do.
_FLUSHING_APP = """
import atexit
import os

import urllib3
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route


def flush():
    try:
        urllib3.request("POST", os.environ["REPLAY_APP_UPSTREAM"] + "/echo?flushed=1", retries=False)
    except Exception as exc:
        print("flush failed:", type(exc).__name__)


atexit.register(flush)


async def json(request):
    return JSONResponse({"ok": True})


app = Starlette(routes=[Route("/json", json)])
"""


def test_replay_sends_nothing_the_app_calls_as_the_process_exits(
    serve: Callable[..., Any], upstream: Upstream, cassette_dir: Path, tmp_path: Path
) -> None:
    """The command's process replays until it ends: a call the app makes at exit, after the
    last request, is refused, not sent to the network."""
    record(serve, upstream.url, cassette_dir, [("GET", "/json", {})])
    before = len(upstream.requests)
    (tmp_path / "flushing_app.py").write_text(_FLUSHING_APP, "utf-8")
    done = timetracer(
        "replay", str(cassette_dir), "--app", "flushing_app:app", "--app-dir", str(tmp_path),
        upstream=upstream.url,
    )  # fmt: skip
    assert "flush failed: ReplayMismatchError" in done.stdout + done.stderr, (
        done.stdout + done.stderr
    )
    assert len(upstream.requests) == before


# An app whose lifespan shutdown raises (a background task it awaits there failed): every
# request was answered before, and its report is what the replay is for.
_STOPPING_APP = """
import contextlib

from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from timetracer_otel.integrations.starlette import auto_setup


async def ping(request):
    return JSONResponse({"pong": request.query_params.get("n")})


@contextlib.asynccontextmanager
async def lifespan(app):
    yield
    raise RuntimeError("the heartbeat task failed")


app = Starlette(routes=[Route("/ping", ping)], lifespan=lifespan)
auto_setup(app, plugins=[])
"""


def test_replay_of_an_app_whose_shutdown_fails_reports_every_request_and_the_failure(
    cassette_dir: Path, tmp_path: Path
) -> None:
    (tmp_path / "stopping_app.py").write_text(_STOPPING_APP, "utf-8")
    command = [sys.executable, "-m", "uvicorn", "--app-dir", str(tmp_path), "stopping_app:app"]
    env = {**os.environ, "TIMETRACER_MODE": "record", "TIMETRACER_DIR": str(cassette_dir)}
    with serving_process([*command, "--log-level", "warning"], env) as server:
        sent: list[Sent] = [("GET", "/ping", {"params": {"n": n}}) for n in ("1", "2")]
        assert [r.json() for r in send(server.url, sent)] == [{"pong": "1"}, {"pong": "2"}]
    done = timetracer(
        "replay", str(cassette_dir), "--app", "stopping_app:app", "--app-dir", str(tmp_path)
    )
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split()[:4] for line in lines if line.startswith("timetracer")] == [
        ["timetracer", "[OK]", "replayed", "GET"]
    ] * 2
    assert lines[-2:] == [
        "replayed 2 cassettes: 2 ok, 0 differ",
        "the app's shutdown failed: RuntimeError: the heartbeat task failed",
    ]


# An app whose worker, started with the app, reports to the upstream once the first request
# came, naming the run it belongs to; it logs a failure and goes on, as pollers and heartbeats do.
_WORKER_APP = """
import asyncio
import contextlib
import logging
import os

import httpx
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from timetracer_otel.integrations.starlette import auto_setup

came = asyncio.Event()


async def report():
    await came.wait()
    try:
        async with httpx.AsyncClient() as client:
            await client.get(os.environ["WORKER_UPSTREAM"] + "/json", params={"run": os.environ["WORKER_RUN"]})
    except Exception:
        logging.getLogger("worker").exception("the report failed")


async def ping(request):
    came.set()
    return JSONResponse({"pong": True})


@contextlib.asynccontextmanager
async def lifespan(app):
    task = asyncio.create_task(report())
    yield
    await task


app = Starlette(routes=[Route("/ping", ping)], lifespan=lifespan)
auto_setup(app, plugins=["httpx"])
"""


def test_replay_fails_when_a_call_outside_requests_went_unanswered(
    cassette_dir: Path, tmp_path: Path, upstream: Upstream
) -> None:
    """A worker started with the app makes a call the process cassette does not answer (it
    names another run): the worker logs the error and goes on, every request replays as
    recorded, and the command still names the call and exits 1."""
    (tmp_path / "worker_app.py").write_text(_WORKER_APP, "utf-8")
    command = [sys.executable, "-m", "uvicorn", "--app-dir", str(tmp_path), "worker_app:app"]
    env = {**os.environ, "TIMETRACER_MODE": "record", "TIMETRACER_DIR": str(cassette_dir)}
    env.update(WORKER_UPSTREAM=upstream.url, WORKER_RUN="first")
    before = len(upstream.requests)  # the upstream serves the module's other tests too
    with serving_process([*command, "--log-level", "warning"], env) as server:
        assert send(server.url, [("GET", "/ping", {})])[0].json() == {"pong": True}
    assert [r["query"] for r in upstream.requests[before:]] == ["run=first"]

    def replayed(run: str) -> subprocess.CompletedProcess:
        """``timetracer replay`` of the recording, the worker naming ``run``."""
        app = ["--app", "worker_app:app", "--app-dir", str(tmp_path)]
        worker = {"WORKER_UPSTREAM": upstream.url, "WORKER_RUN": run}
        return timetracer("replay", str(cassette_dir), *app, upstream=upstream.url, **worker)

    same_run = replayed("first")
    assert same_run.returncode == 0, same_run.stdout + same_run.stderr
    other_run = replayed("second")
    assert other_run.returncode == 1, other_run.stdout + other_run.stderr
    lines = other_run.stdout.splitlines()
    assert lines[0].startswith("timetracer [OK] replayed GET /ping"), other_run.stdout
    assert lines[-2:] == [
        "1 call(s) made outside requests (background work, the app's start or shutdown) were not"
        " answered by the process cassette:",
        f"  timetracer replay: no recorded call matches GET {upstream.url}/json?run=second (httpx)",
    ]
    assert len(upstream.requests) == before + 1


# An app that logs at INFO, as many configure their logging (fief, and any
# ``logging.basicConfig(level=logging.INFO)``): an httpx client sending it a request logs the URL.
_LOGGING_APP = """
import logging

from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from timetracer_otel.integrations.starlette import auto_setup

logging.basicConfig(level=logging.INFO)


async def reset(request):
    return JSONResponse({"length": len(request.query_params["token"])})


app = Starlette(routes=[Route("//reset", reset)])
auto_setup(app, plugins=[])
"""


def test_replay_sends_the_path_as_recorded_and_never_logs_a_secret_the_key_opened_in_it(
    cassette_dir: Path, tmp_path: Path
) -> None:
    """A password reset link's token is sealed in the cassette's query and opened with the key to
    be sent again; the command's own request is no client's, so nothing logs its URL, and its
    path (``//reset``, which a client reads as host ``reset``) reaches the app as recorded."""
    (tmp_path / "logging_app.py").write_text(_LOGGING_APP, "utf-8")
    command = [sys.executable, "-m", "uvicorn", "--app-dir", str(tmp_path), "logging_app:app"]
    env = {**os.environ, "TIMETRACER_MODE": "record", "TIMETRACER_DIR": str(cassette_dir)}
    token = secrets.token_urlsafe(24)
    with serving_process([*command, "--log-level", "warning"], env) as server:
        with httpx.Client() as client:
            got = client.get(f"{server.url}//reset", params={"token": token})
        assert got.json() == {"length": len(token)}
    done = timetracer(
        "replay", str(cassette_dir), "--app", "logging_app:app", "--app-dir", str(tmp_path)
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[OK] replayed GET //reset" in done.stdout, done.stdout
    assert token not in done.stdout + done.stderr


# An app keeping, as Celery keeps its current app, a value per thread set as its module is
# imported: uvicorn imports it on the thread that serves it.
_THREAD_LOCAL_APP = """
import threading

from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from timetracer_otel.integrations.starlette import auto_setup

_current = threading.local()
_current.app = "set at import"


def which(request):  # sync: Starlette runs it in a worker thread, as Celery's apps run
    return JSONResponse({"current": getattr(_current, "app", None)})


async def which_async(request):
    return JSONResponse({"current": getattr(_current, "app", None)})


app = Starlette(routes=[Route("/sync", which), Route("/async", which_async)])
auto_setup(app, plugins=[])
"""


def test_replay_imports_the_app_on_the_thread_serving_it_as_uvicorn_does(
    cassette_dir: Path, tmp_path: Path
) -> None:
    (tmp_path / "thread_local_app.py").write_text(_THREAD_LOCAL_APP, "utf-8")
    command = [sys.executable, "-m", "uvicorn", "--app-dir", str(tmp_path), "thread_local_app:app"]
    env = {**os.environ, "TIMETRACER_MODE": "record", "TIMETRACER_DIR": str(cassette_dir)}
    with serving_process([*command, "--log-level", "warning"], env) as server:
        recorded = send(server.url, [("GET", "/async", {}), ("GET", "/sync", {})])
    assert [r.json() for r in recorded] == [{"current": "set at import"}, {"current": None}]
    done = timetracer(
        "replay", str(cassette_dir), "--app", "thread_local_app:app", "--app-dir", str(tmp_path)
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1] == "replayed 2 cassettes: 2 ok, 0 differ"


# An app keeping a client in its lifespan's state (``request.state``) and a count of its requests
# in memory, and a bare ASGI app that ignores the lifespan (it returns without answering, as
# many hand-written ones do).
_STATEFUL_APPS = """
import asyncio
import contextlib

from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from timetracer_otel.integrations.starlette import TimeTracerMiddleware, auto_setup


async def greet(request):
    return JSONResponse({"greeting": request.state.greeting, "n": request.query_params["n"]})


hits = {"count": 0}


async def hit(request):
    hits["count"] += 1
    return JSONResponse({"hits": hits["count"]})


async def heartbeat():
    while True:
        await asyncio.sleep(3600)


@contextlib.asynccontextmanager
async def lifespan(app):
    asyncio.get_running_loop().create_task(heartbeat())  # left running, as some apps do
    yield {"greeting": "hello from the lifespan"}


async def subject(request):  # a header name a server refuses (full-stack-fastapi-template's "subject:")
    return JSONResponse({"sent": True}, headers={"subject:": "Password recovery"})


stateful = Starlette(
    routes=[Route("/greet", greet), Route("/subject", subject), Route("/hit/{name}", hit)], lifespan=lifespan
)
auto_setup(stateful, plugins=[])


async def bare(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": scope["path"].encode()})


bare_recorded = TimeTracerMiddleware(bare)  # configured by TIMETRACER_*
"""


def _recording_stateful(
    tmp_path: Path, cassette_dir: Path, app: str, log_level: str = "warning"
) -> contextlib.AbstractContextManager[Any]:
    """uvicorn serving ``stateful_apps:<app>`` in record mode, in a process of its own."""
    (tmp_path / "stateful_apps.py").write_text(_STATEFUL_APPS, "utf-8")
    command = [sys.executable, "-m", "uvicorn", "--app-dir", str(tmp_path), f"stateful_apps:{app}"]
    env = {**os.environ, "TIMETRACER_MODE": "record", "TIMETRACER_DIR": str(cassette_dir)}
    return serving_process([*command, "--log-level", log_level], env)


def _replayed_stateful(tmp_path: Path, cassette_dir: Path, app: str) -> tuple[dict[str, Any], str]:
    """The report of ``timetracer replay`` of the one cassette by ``stateful_apps:<app>``, and its stderr."""
    done = timetracer(
        "replay", str(cassette_dir), "--app", f"stateful_apps:{app}", "--app-dir", str(tmp_path), "--json"
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    (report,) = json.loads(done.stdout)
    return report, done.stderr


@pytest.mark.parametrize(
    ("recorded_app", "replayed_app", "target"),
    [("stateful", "stateful", "/greet?n=1"), ("bare_recorded", "bare", "/bare")],
)
def test_replay_runs_the_app_as_a_server_does_with_its_lifespan_state_or_none(
    cassette_dir: Path, tmp_path: Path, recorded_app: str, replayed_app: str, target: str
) -> None:
    """The command runs the app's lifespan once and gives each request a copy of the state it
    keeps; an app that returns from the lifespan without answering has none, as uvicorn takes it.
    A task the app left running is ended with the command."""
    with _recording_stateful(tmp_path, cassette_dir, recorded_app) as server:
        (recorded,) = send(server.url, [("GET", target, {})])
    assert recorded.status_code == 200
    report, stderr = _replayed_stateful(tmp_path, cassette_dir, replayed_app)
    assert report["ok"] and report["status"] == 200, report
    assert "Task was destroyed" not in stderr, stderr  # a task left running ends with it


def test_replay_in_another_order_or_each_alone_shows_what_a_request_took_from_earlier_ones(
    cassette_dir: Path, tmp_path: Path
) -> None:
    """Three requests to an app counting them in memory replay as recorded in recording order;
    reversed, shuffled (by a seed printed, the same order again with it) and each in a process
    of its own, each request sent after a count it was not recorded after differs."""
    with _recording_stateful(tmp_path, cassette_dir, "stateful") as server:
        recorded = send(server.url, [("GET", f"/hit/{name}", {}) for name in "abc"])
    assert [r.json()["hits"] for r in recorded] == [1, 2, 3]

    def replayed(*options: str) -> tuple[list[tuple[str, bool]], subprocess.CompletedProcess]:
        done = timetracer(
            "replay", str(cassette_dir), "--app", "stateful_apps:stateful", "--app-dir", str(tmp_path),
            "--json", *options,
        )  # fmt: skip
        assert done.returncode in (0, 1), done.stdout + done.stderr
        return [(r["path"][-1], r["ok"]) for r in json.loads(done.stdout)], done

    in_order, done = replayed()
    assert (in_order, done.returncode) == ([("a", True), ("b", True), ("c", True)], 0)
    reversed_, done = replayed("--order", "reversed")
    assert (reversed_, done.returncode) == ([("c", False), ("b", True), ("a", False)], 1)
    alone, done = replayed("--alone")
    assert (alone, done.returncode) == ([("a", True), ("b", False), ("c", False)], 1)

    shuffled, done = replayed("--order", "shuffled")
    seed = done.stderr.split("--seed ")[1].split()[0]
    again, _ = replayed("--order", "shuffled", "--seed", seed)
    assert sorted(again) == sorted(shuffled) and [p for p, _ in again] == [p for p, _ in shuffled]
    assert [ok for _, ok in shuffled] == [path == "abc"[n] for n, (path, _) in enumerate(shuffled)]


# An app naming a temporary file as it is imported (Dagster names its code server's socket so)
_TEMP_NAME_APP = """
import tempfile

from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from timetracer_otel.integrations.starlette import auto_setup

with tempfile.NamedTemporaryFile(dir={folder!r}) as file:
    NAME = file.name


async def name(request):
    return JSONResponse({{"name": NAME}})


app = Starlette(routes=[Route("/name", name)])
auto_setup(app, plugins=[])
"""


def test_replay_names_who_drew_values_outside_requests_beyond_those_recorded(
    cassette_dir: Path, tmp_path: Path
) -> None:
    """The app names a temporary file as it starts, from values the process cassette holds; a
    file of that name left behind makes tempfile draw another name, real: the command says who
    drew beyond the recording, after the report of the request that differs."""
    folder = tmp_path / "files"
    folder.mkdir()
    (tmp_path / "temp_name_app.py").write_text(_TEMP_NAME_APP.format(folder=str(folder)), "utf-8")
    command = [sys.executable, "-m", "uvicorn", "--app-dir", str(tmp_path), "temp_name_app:app"]
    env = {**os.environ, "TIMETRACER_MODE": "record", "TIMETRACER_DIR": str(cassette_dir)}
    with serving_process([*command, "--log-level", "warning"], env) as server:
        (recorded,) = send(server.url, [("GET", "/name", {})])
    replay = ["replay", str(cassette_dir), "--app", "temp_name_app:app", "--app-dir", str(tmp_path)]
    done = timetracer(*replay)
    assert done.returncode == 0 and "drew values beyond" not in done.stderr, (
        done.stdout + done.stderr
    )

    Path(recorded.json()["name"]).touch()  # left behind: tempfile takes another name
    done = timetracer(*replay)
    assert done.returncode == 1 and "body $.name" in done.stdout, done.stdout
    assert "drew values beyond those recorded" in done.stderr, done.stderr
    assert "tempfile:__next__ (" in done.stderr


def test_replay_refuses_the_header_names_and_values_a_server_refuses(
    cassette_dir: Path, tmp_path: Path
) -> None:
    """uvicorn raises in the app's ``send`` of a header named ``subject:``: the app raised and
    the client got no response, as the cassette says. The command runs the app as a server
    does, so its replay raises there too and is the same."""
    with _recording_stateful(tmp_path, cassette_dir, "stateful", log_level="critical") as server:
        with pytest.raises(httpx.RemoteProtocolError):
            httpx.get(f"{server.url}/subject", timeout=30)
    report, _ = _replayed_stateful(tmp_path, cassette_dir, "stateful")
    assert report["ok"] and not report["differences"], report
    assert report["error"]["message"] in (
        "Invalid HTTP header name.",
        "Illegal header name b'subject:'",
    )


def test_replay_wraps_an_app_that_never_set_timetracer_up(
    serve: Callable[..., Any], upstream: Upstream, cassette_dir: Path, tmp_path: Path
) -> None:
    """An app with no timetracer code at all is replayed too: the command puts the replay middleware around it."""
    rec = _recorded(serve, upstream, cassette_dir)
    (tmp_path / "plain_app.py").write_text(_PLAIN_APP, "utf-8")
    before = len(upstream.requests)
    done = timetracer(
        "replay", rec["POST /lookup Grace"]["id"], "--dir", str(cassette_dir), "--app", "plain_app:app", "--app-dir", str(tmp_path),
        "--json", upstream=upstream.url,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    (report,) = json.loads(done.stdout)
    assert (report["ok"], report["answered"]) == (True, [f"GET {upstream.url}/echo?name=Grace"])
    assert len(upstream.requests) == before


def test_unusable_input_is_refused_with_exit_status_2(
    serve: Callable[..., Any], upstream: Upstream, cassette_dir: Path, tmp_path: Path
) -> None:
    rec = _recorded(serve, upstream, cassette_dir)
    missing = timetracer("show", "feedbeef", "--dir", str(cassette_dir))
    assert (missing.returncode, missing.stderr.strip()) == (
        2,
        f"Error: 'feedbeef' matches no cassette in {cassette_dir}",
    )
    ambiguous = timetracer("show", "POST__lookup", "--dir", str(cassette_dir))
    assert ambiguous.returncode == 2 and "matches 2 cassettes" in ambiguous.stderr
    cut = tmp_path / "cut.json"
    cut.write_text((cassette_dir / rec["GET /report"]["key"]).read_text("utf-8")[:200], "utf-8")
    for args in (
        ["show", str(cut)],
        ["diff", str(cut), rec["GET /report"]["id"], "--dir", str(cassette_dir)],
    ):
        done = timetracer(*args)
        assert done.returncode == 2 and f"cannot use cassette {cut}: is truncated" in done.stderr
    wrong_app = timetracer(
        "replay",
        rec["GET /report"]["id"],
        "--dir",
        str(cassette_dir),
        "--app",
        "no_such_module:app",
    )
    assert (wrong_app.returncode, wrong_app.stderr.strip()) == (
        2,
        f"Error: cannot import the app 'no_such_module:app' from {os.getcwd()}: "
        "No module named 'no_such_module'",
    )
    # an app importing what this environment lacks: the import that failed, and where
    (tmp_path / "needs_a_dependency.py").write_text("import aiosql_not_installed\n", "utf-8")
    missing_dependency = timetracer(
        "replay", str(cassette_dir), "--app", "needs_a_dependency:app", "--app-dir", str(tmp_path)
    )
    assert (missing_dependency.returncode, missing_dependency.stderr.strip()) == (
        2,
        "Error: importing the app 'needs_a_dependency:app' failed: ModuleNotFoundError: "
        f"No module named 'aiosql_not_installed' (imported at {tmp_path}/needs_a_dependency.py:1)",
    )


def test_each_unusable_input_gets_one_line_that_says_what_is_wrong(tmp_path: Path) -> None:
    """As a new user meets them: a file that is not there, no cassette directory, a file that is not
    JSON, JSON that is no cassette, a search that finds nothing."""
    (tmp_path / "notes.json").write_text("hello world\n", "utf-8")
    (tmp_path / "other.json").write_text('{"hello": "world"}', "utf-8")
    missing_dir = str(tmp_path / "nowhere")
    damaged = tmp_path / "cassettes" / "2026-12-05" / "GET__orders__5eedbeef.json"
    damaged.parent.mkdir(parents=True)
    damaged.write_text('{"format": "timetracer-cassette", "id": "5eedbeef"', "utf-8")
    # asked for by the id its name carries: why it is unusable, not "matches no cassette"
    by_id = timetracer("show", "5eedbeef", "--dir", str(damaged.parents[1]))
    assert by_id.returncode == 2 and by_id.stderr.endswith(
        f"Error: timetracer: cannot use cassette {damaged}: is truncated: the JSON ends early "
        "(line 1 column 51: Expecting ',' delimiter)\n"
    ), by_id.stderr
    damaged.unlink()
    expected = {
        ("show", "missing.json", "--dir", missing_dir): "timetracer: cannot use cassette missing.json: no such file",
        ("show", "feedbeef", "--dir", missing_dir):
            f"timetracer: 'feedbeef' is no file, and the cassette directory {missing_dir} does not exist: name one with --dir DIR or TIMETRACER_DIR",
        ("list", "--dir", missing_dir): f"timetracer: the cassette directory {missing_dir} does not exist: name one with --dir DIR or TIMETRACER_DIR",
        ("show", str(tmp_path / "notes.json")): f"timetracer: cannot use cassette {tmp_path / 'notes.json'}: is not valid JSON at line 1 column 1: Expecting value",
        ("show", str(tmp_path / "other.json")):
            f"timetracer: cannot use cassette {tmp_path / 'other.json'}: is JSON but not a timetracer cassette (it has no 'format' field, expected 'timetracer-cassette')",
    }  # fmt: skip
    for args, message in expected.items():
        done = timetracer(*args)
        assert (done.returncode, done.stderr) == (2, f"Error: {message}\n"), args
    limited = subprocess.run(
        [str(TIMETRACER), "show", str(tmp_path / "other.json")], capture_output=True, text=True, timeout=120,
        env={**os.environ, "TIMETRACER_READ_MAX_BYTES": "10"},
    )  # fmt: skip
    assert (
        limited.stderr
        == f"Error: timetracer: cannot use cassette {tmp_path / 'other.json'}: is 18 bytes; TIMETRACER_READ_MAX_BYTES allows 10\n"
    )
    (tmp_path / "other.json").unlink()
    (tmp_path / "notes.json").unlink()
    nothing = timetracer("search", "needle", "--dir", str(tmp_path))
    # as grep
    assert (nothing.returncode, nothing.stdout, nothing.stderr) == (
        1,
        "",
        "0 of 0 cassettes contain 'needle'\n",
    )


def test_serve_listens_before_it_prints_its_url_and_names_a_free_port_when_its_own_is_taken(
    tmp_path: Path,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = timetracer("serve", "--dir", str(tmp_path), "--port", str(port))
    assert done.returncode == 2 and done.stdout == ""
    (line,) = done.stderr.splitlines()
    prefix = f"Error: timetracer: port {port} is in use on 127.0.0.1: try --port "
    assert line.startswith(prefix), line
    with socket.socket() as suggested:
        suggested.bind(("127.0.0.1", int(line.removeprefix(prefix))))  # free, as it says


def test_show_cuts_a_long_body_and_payloads_shows_it_all(
    tmp_path: Path, upstream: Upstream, serve: Callable[..., Any]
) -> None:
    record(serve, upstream.url, tmp_path, [("POST", "/lookup", {"json": {"name": "x" * 5000}})])
    (path,) = tmp_path.rglob("*.json")
    env = {**os.environ, "TIMETRACER_SHOW_MAX_BODY_BYTES": "1000"}
    short = subprocess.run(
        [str(TIMETRACER), "show", str(path)], capture_output=True, text=True, timeout=120, env=env
    )
    unwrapped = short.stdout.replace("\n", "")  # long lines are wrapped at 160 columns
    assert short.returncode == 0 and "x" * 900 in unwrapped and "x" * 1000 not in unwrapped
    # the request's body and the response's
    assert short.stdout.count("… the rest is cut (--payloads shows all)") == 2
    full = subprocess.run(
        [str(TIMETRACER), "show", str(path), "--payloads"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert "x" * 5000 in full.stdout.replace("\n", "") and "the rest is cut" not in full.stdout


def test_a_recent_index_reads_again_only_the_directories_that_changed(
    serve: Callable[..., Any],
    upstream: Upstream,
    cassette_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As the dashboard refreshes: added, removed and broken cassettes are seen at once, and no other is read again."""
    from timetracer_otel.cli import index as index_module

    record(serve, upstream.url, cassette_dir, _SENT[2:4])
    index = CassetteIndex(cassette_dir).refresh()
    (day,) = [path for path in cassette_dir.iterdir() if path.is_dir()]
    first, second = sorted(day.iterdir())
    reads: list[str] = []
    original = index_module.load_cassette
    monkeypatch.setattr(
        index_module,
        "load_cassette",
        lambda path, **limits: reads.append(Path(path).name) or original(path, **limits),
    )
    doc = json.loads(first.read_text("utf-8"))
    (cassette_dir / "later" / "deeper").mkdir(parents=True)
    (cassette_dir / "later" / "deeper" / "copy.json").write_text(
        json.dumps({**doc, "id": "0000c0de"}), "utf-8"
    )
    (day / "broken.json").write_text('{"format": "timetracer-cassette"', "utf-8")
    second.unlink()
    index.refresh(recent=60)
    assert sorted(reads) == ["broken.json", "copy.json"]
    assert sorted(index.entries) == sorted([f"{day.name}/{first.name}", "later/deeper/copy.json"])
    assert list(index.problems) == [f"{day.name}/broken.json"]
    shutil.rmtree(cassette_dir / "later")
    (day / "broken.json").unlink()
    index.refresh(recent=60)
    assert (
        list(index.entries) == [f"{day.name}/{first.name}"]
        and index.problems == {}
        and sorted(reads) == ["broken.json", "copy.json"]
    )


def test_an_index_another_release_saved_is_read_anew(
    serve: Callable[..., Any], upstream: Upstream, cassette_dir: Path
) -> None:
    """A cassette an earlier release found unusable may be one this release reads: the verdict
    kept for a file whose time and size did not change is not trusted across releases."""
    record(serve, upstream.url, cassette_dir, _SENT[2:3])
    index = CassetteIndex(cassette_dir).refresh()
    (key,) = index.entries
    saved_file = index.index_file
    assert saved_file is not None
    saved = json.loads(saved_file.read_bytes())
    saved["files"][key][2] = "is not a cassette this release could read"
    saved_file.write_text(json.dumps(saved), "utf-8")
    assert list(CassetteIndex(cassette_dir).refresh().problems) == [
        key
    ]  # the same release trusts it
    saved["by"] = "0.0.1"
    saved_file.write_text(json.dumps(saved), "utf-8")
    again = CassetteIndex(cassette_dir).refresh()
    assert list(again.entries) == [key] and again.problems == {}


def _unusable_copies(cassette: Path) -> dict[str, dict[str, Any]]:
    """Copies of a real cassette that pass the format's check but that no replay here can use
    whole: one holding a value sealed with another key, one whose draws are no values (a decimal
    that is none, a timedelta beyond its range: left out, the draws are answered without them)."""
    doc = json.loads(cassette.read_text("utf-8"))
    other_key = copy.deepcopy(doc)
    other_key["request"]["headers"].append(
        ["authorization", "[SEALED:0badc0de:AAAAAAAAAAAAAAAAAAAAAAAA]"]
    )
    draws = copy.deepcopy(doc)
    draws["draws"] += [
        {"source": "clock", "kind": "time", "caller": "x", "value": {"$type": "decimal", "value": "zz"}},
        {"source": "clock", "kind": "time", "caller": "x", "value": {"$type": "timedelta", "days": 10**12, "seconds": 0, "microseconds": 0}},
    ]  # fmt: skip
    return {"other-key": other_key, "draws": draws}


def test_replay_names_each_cassette_it_cannot_use_and_replays_the_others(
    serve: Callable[..., Any], upstream: Upstream, cassette_dir: Path, tmp_path: Path
) -> None:
    """One cassette replay cannot use does not stop the others: the CLI reports it under its
    request and goes on; uvicorn answers its request with a 500 naming it."""
    record(serve, upstream.url, cassette_dir, [("GET", "/async/httpx", {})])
    (valid,) = cassette_files(cassette_dir)
    unusable = tmp_path / "unusable"
    unusable.mkdir()
    for name, doc in _unusable_copies(valid).items():
        (unusable / f"{name}.json").write_text(json.dumps(doc), "utf-8")
    (unusable / "empty.json").write_text("", "utf-8")
    every = timetracer("replay", str(unusable), *_APP, "--json", upstream=upstream.url)
    assert every.returncode == 1 and "Traceback" not in every.stderr, every.stderr
    # named once, though the command and the app it starts both read the directory
    assert every.stderr.count("empty.json: is empty; the replay goes on without it") == 1
    reports = {Path(r["cassette"]).name: r for r in json.loads(every.stdout)}
    assert reports["draws.json"]["ok"], reports["draws.json"]
    refused = reports["other-key.json"]
    assert (refused["path"], refused["ok"]) == ("/async/httpx", False)
    assert "it is sealed with key 0badc0de" in refused["differences"][0], refused

    with new_reports():
        server = serve(create_app(upstream.url, replay_config(unusable / "other-key.json")))
        answered = httpx.get(f"{server.url}/async/httpx")
        server.stop()
    assert answered.status_code == 500
    assert answered.text.startswith(
        f"timetracer: cannot use cassette {unusable / 'other-key.json'}: holds sealed secrets"
    ), answered.text


def test_show_lays_out_a_hundred_headers_and_a_thousand_spans_and_counts_the_rest(
    serve: Callable[..., Any], upstream: Upstream, cassette_dir: Path, tmp_path: Path
) -> None:
    """A hostile file of a million headers took two minutes to show, 100,000 spans 90 s."""
    record(serve, upstream.url, cassette_dir, [("GET", "/async/httpx", {})])
    (recorded,) = cassette_dir.rglob("*.json")
    doc = json.loads(recorded.read_text("utf-8"))
    doc["request"]["headers"] += [["x-long", "y" * 300_000]]  # a 50 MB one printed 50 MB
    doc["request"]["headers"] += [[f"x-extra-{n}", "v"] for n in range(150)]
    span = doc["spans"][-1]
    doc["spans"] += [dict(span, span_id=f"{n + 1:016x}", name=f"extra {n}") for n in range(1200)]
    heavy = tmp_path / "heavy.json"
    heavy.write_text(json.dumps(doc), "utf-8")
    headers = len(doc["request"]["headers"])
    shown = timetracer("show", str(heavy), COLUMNS="200")
    assert shown.returncode == 0, shown.stderr
    assert f"… {headers - 100} more headers (--payloads shows all)" in shown.stdout
    assert "x-long:" in shown.stdout and 4096 <= shown.stdout.count("y") < 4200
    spans = len(doc["spans"])
    assert f"… {spans - 1000} more spans (show --json has them all)" in shown.stdout
    everything = timetracer("show", str(heavy), "--payloads", COLUMNS="200")
    assert "x-extra-149: v" in everything.stdout and "more headers" not in everything.stdout
    assert everything.stdout.count("y") > 300_000
