"""Replay outside the recording process: ``TIMETRACER_MODE=replay uvicorn ...`` in a fresh process,
and Starlette's TestClient, answer as the recording did without reaching the upstream."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from _replay import (
    APPS_DIR,
    CONNECTS,
    assert_same_response,
    audited_uvicorn_process,
    cassette_files,
    new_reports,
    record,
    replay_config,
    send,
    uvicorn_process,
)
from apps.replay_app import HTTPX_CLIENTS, create_app
from conftest import Upstream, load_cassettes
from starlette.testclient import TestClient

from timetracer_otel.cassette.reader import load_cassette

_SENT = [
    ("GET", "/sync/requests", {}),
    *(("GET", f"/{way}/{client}", {}) for client in HTTPX_CLIENTS for way in ("async", "fail")),
]


def _recorded(
    serve: Callable[..., Any], upstream: Upstream, cassette_dir: Path
) -> list[httpx.Response]:
    responses = record(serve, upstream.url, cassette_dir, _SENT)
    assert [r.status_code for r in responses] == [200, *[200, 502] * len(HTTPX_CLIENTS)]
    return responses


@pytest.mark.parametrize("single_file", [True, False], ids=["file", "directory"])
def test_fresh_uvicorn_process_replays_from_the_environment(
    single_file: bool, serve: Callable[..., Any], upstream: Upstream, cassette_dir: Path
) -> None:
    """One cassette answers the request it was recorded for; a directory answers them all, with
    no socket connected. Each logs its report."""
    recorded = _recorded(serve, upstream, cassette_dir)
    sent, expected, cassette = _SENT, recorded, cassette_dir
    if single_file:
        (doc,) = [d for d in load_cassettes(cassette_dir) if d["request"]["path"] == "/async/httpx"]
        (cassette,) = [p for p in cassette_files(cassette_dir) if doc["id"] in p.name]
        sent, expected = _SENT[1:2], recorded[1:2]
    before = len(upstream.requests)
    env = {
        "TIMETRACER_MODE": "replay",
        "TIMETRACER_CASSETTE": str(cassette),
        "REPLAY_APP_UPSTREAM": upstream.url,
    }
    with audited_uvicorn_process(env, "replay_app:create_app") as server:
        replayed = send(server.url, sent)
    assert len(upstream.requests) == before
    assert CONNECTS.findall(server.stderr) == [], server.stderr
    for old, new in zip(expected, replayed, strict=False):
        assert_same_response(old, new)
    reported = re.findall(
        r"^timetracer \[OK\] replayed GET (\S+)  id=\w+  status=\d+  calls=(\d+)/\2  unused=0  response=same$",
        server.stderr,
        re.M,
    )
    assert [path for path, _ in reported] == [path for _, path, _ in sent], server.stderr


def test_testclient_replays_in_process(
    serve: Callable[..., Any], upstream: Upstream, cassette_dir: Path
) -> None:
    recorded = _recorded(serve, upstream, cassette_dir)
    before = len(upstream.requests)
    with (
        new_reports() as reports,
        TestClient(create_app(upstream.url, replay_config(cassette_dir))) as client,
    ):
        replayed = [client.request(method, path, **options) for method, path, options in _SENT]
    assert len(upstream.requests) == before
    for old, new in zip(recorded, replayed, strict=False):
        assert_same_response(old, new)
    assert [(r.path, r.ok) for r in reports] == [(path, True) for _, path, _ in _SENT]


def test_a_replaying_process_refuses_calls_outside_any_replayed_request(
    serve: Callable[..., Any], upstream: Upstream, cassette_dir: Path
) -> None:
    """A thread loses the request's replay session: under TIMETRACER_MODE=replay its call goes to the process
    session, and with no process cassette (recorded in a process not started to record) it is refused, not sent."""
    record(serve, upstream.url, cassette_dir, [("GET", "/thread", {})])
    before = len(upstream.requests)
    env = {
        "TIMETRACER_MODE": "replay",
        "TIMETRACER_CASSETTE": str(cassette_dir),
        "REPLAY_APP_UPSTREAM": upstream.url,
    }
    with uvicorn_process(env) as server:
        (outcome,) = send(server.url, [("GET", "/thread", {})])
    assert len(upstream.requests) == before
    assert outcome.json()["raised"] == "timetracer_otel.replayers.session.ReplayMismatchError"
    assert outcome.json()["message"].splitlines()[:2] == [
        f"timetracer replay: no recorded call matches GET {upstream.url}/json?from=thread (httpx)",
        "cassette: (no process cassette)",
    ]
    assert "no process cassette answered it" in outcome.json()["message"]


def test_a_call_made_while_the_app_is_imported_is_recorded_and_answered_never_sent(
    upstream: Upstream, cassette_dir: Path
) -> None:
    """A call made after timetracer's integration was imported and before ``auto_setup`` ran
    (an engine checking its server as it is built, ``create_all()`` at import) is kept in the
    process cassette; replay answers it from there, in a server and in ``timetracer replay``,
    and sends nothing."""
    env = {"REPLAY_APP_UPSTREAM": upstream.url}
    recording = {**env, "TIMETRACER_MODE": "record", "TIMETRACER_DIR": str(cassette_dir)}
    with uvicorn_process(recording, "import_call_app:create") as server:
        (recorded,) = send(server.url, [("GET", "/checked", {})])
    assert '"login": "octocat"' in recorded.json()["checked"]  # the upstream's answer, live
    (process_cassette,) = cassette_dir.glob("*/process__*.json")
    (call,) = load_cassette(process_cassette, scope="process")["calls"]
    assert call["request"]["url"] == f"{upstream.url}/json?check=version"
    before = len(upstream.requests)
    replaying = {**env, "TIMETRACER_MODE": "replay", "TIMETRACER_CASSETTE": str(cassette_dir)}
    with audited_uvicorn_process(replaying, "import_call_app:create") as server:
        (replayed,) = send(server.url, [("GET", "/checked", {})])
    assert CONNECTS.findall(server.stderr) == [], server.stderr
    assert replayed.json() == recorded.json()
    done = subprocess.run(
        [str(Path(sys.executable).with_name("timetracer")), "replay", str(cassette_dir),
         "--app", "import_call_app:create", "--factory", "--app-dir", str(APPS_DIR)],
        capture_output=True, text=True, timeout=60, env={**os.environ, **env},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "timetracer [OK] replayed GET /checked" in done.stdout
    assert len(upstream.requests) == before


def test_a_call_made_while_the_app_is_imported_and_not_recorded_is_refused_never_sent(
    upstream: Upstream, cassette_dir: Path
) -> None:
    """Recorded where the process cassette does not hold it (recorded by an earlier version, or
    the module imported before timetracer's integration), such a call fails at the call site in
    replay, saying why and what to do; it is not sent."""
    env = {"REPLAY_APP_UPSTREAM": upstream.url}
    recording = {**env, "TIMETRACER_MODE": "record", "TIMETRACER_DIR": str(cassette_dir)}
    with uvicorn_process(recording, "import_call_app:create") as server:
        send(server.url, [("GET", "/checked", {})])
    for process_cassette in cassette_dir.glob("*/process__*.json"):
        process_cassette.unlink()
    before = len(upstream.requests)
    replaying = {**env, "TIMETRACER_MODE": "replay", "TIMETRACER_CASSETTE": str(cassette_dir)}
    with audited_uvicorn_process(replaying, "import_call_app:create") as server:
        (replayed,) = send(server.url, [("GET", "/checked", {})])
    assert len(upstream.requests) == before
    assert CONNECTS.findall(server.stderr) == [], server.stderr
    checked = replayed.json()["checked"]
    assert checked.startswith(
        "ReplayMismatchError: timetracer replay: no recorded call matches GET"
    ), checked
    assert "before auto_setup" in checked and "opentelemetry-instrument" in checked
