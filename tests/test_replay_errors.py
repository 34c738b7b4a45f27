"""An unusable cassette given alone stops the app at start with one error naming the file and the
problem; in a directory, it is left out and named; ``live_plugins`` is the only way a library's calls
go out in replay."""

from __future__ import annotations

import datetime
import gzip
import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _replay import (
    assert_same_response,
    cassette_files,
    record,
    replay,
    replay_config,
    uvicorn_process,
)
from conftest import RunningServer, Upstream, start_uvicorn
from starlette.applications import Starlette

from timetracer_otel.cassette.reader import CassetteError, load_cassette
from timetracer_otel.config import TraceConfig
from timetracer_otel.integrations.starlette import TimeTracerMiddleware, auto_setup
from timetracer_otel.protocols import CallView
from timetracer_otel.protocols.http import request_view
from timetracer_otel.protocols.sql import live_view
from timetracer_otel.replayers.matching import RecordedCall, call_differences


def _without_request_method(good: bytes) -> bytes:
    doc = json.loads(good)
    del doc["request"]["method"]
    return json.dumps(doc).encode()


# name -> (the file's bytes made from a good cassette, or None for no file; the problem stated, as a regex)
_BAD: dict[str, tuple[Callable[[bytes], bytes] | None, str]] = {
    "truncated": (
        lambda good: good[: len(good) // 2],
        r"is truncated: the JSON ends early \(line \d+ column \d+: .+\)",
    ),
    "corrupt": (
        lambda good: good[:300] + b"\x00\x01garbage" + good[309:],
        r"is not valid JSON at line \d+ column \d+: .+",
    ),
    "wrong version": (
        lambda good: json.dumps({**json.loads(good), "version": 2}).encode(),
        re.escape("format version 2 is not supported (this timetracer reads version 1)"),
    ),
    "not JSON": (
        lambda good: b"GET / HTTP/1.1\r\n",
        re.escape("is not valid JSON at line 1 column 1: Expecting value"),
    ),
    "compressed": (gzip.compress, re.escape("is gzip-compressed: name it *.json.gz to read it")),
    "empty": (lambda good: b"", "is empty"),
    "not a cassette": (
        lambda good: b'{"hello": "world"}',
        re.escape(
            "is JSON but not a timetracer cassette (it has no 'format' field, expected 'timetracer-cassette')"
        ),
    ),
    "no request method": (_without_request_method, re.escape("request lacks method")),
    "missing": (None, "no such file or directory"),
}
_START: dict[str, Callable[[TraceConfig], Any]] = {
    "auto_setup": lambda config: auto_setup(Starlette(), config=config),
    "middleware": lambda config: TimeTracerMiddleware(Starlette(), config=config),
}


@pytest.fixture(scope="module")
def good_cassette(upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[bytes]:
    """The bytes of a real cassette, recorded once for the module."""
    directory = tmp_path_factory.mktemp("cassettes")
    servers: list[RunningServer] = []

    def serve(app: Any) -> RunningServer:
        servers.append(start_uvicorn(app))
        return servers[-1]

    record(serve, upstream.url, directory, [("GET", "/async/httpx", {})])
    servers[0].stop()
    (path,) = cassette_files(directory)
    yield path.read_bytes()


def _assert_one_clear_error(
    raised: pytest.ExceptionInfo[CassetteError], path: Path, problem: str
) -> None:
    assert re.fullmatch(
        f"timetracer: cannot use cassette {re.escape(str(path))}: {problem}", str(raised.value)
    )
    error = raised.value
    # nothing chained to wade through
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)


@pytest.mark.parametrize("start", _START)
@pytest.mark.parametrize("name", _BAD)
def test_unusable_cassette_stops_the_app_at_start(
    name: str, start: str, good_cassette: bytes, tmp_path: Path
) -> None:
    make, problem = _BAD[name]
    path = tmp_path / "cassette.json"
    if make is not None:
        path.write_bytes(make(good_cassette))
    with pytest.raises(CassetteError) as raised:
        _START[start](replay_config(path))
    _assert_one_clear_error(raised, path, problem)


def test_a_process_started_to_replay_an_unusable_cassette_stops_with_one_error(
    tmp_path: Path,
) -> None:
    """Importing the integration starts answering the draws of the app's modules from the process
    cassette: a cassette that cannot be used is left for ``auto_setup`` to name, once."""
    missing = tmp_path / "cassette.json"
    started = subprocess.run(
        [sys.executable, "-c", "from timetracer_otel.integrations.starlette import auto_setup\n"
         "from starlette.applications import Starlette\n"
         "print('imported', flush=True)\n"
         "auto_setup(Starlette())"],
        env={**os.environ, "TIMETRACER_MODE": "replay", "TIMETRACER_CASSETTE": str(missing)},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert started.returncode == 1 and started.stdout == "imported\n"
    lines = started.stderr.strip().splitlines()
    assert lines[0] == "Traceback (most recent call last):", started.stderr
    assert lines[-1] == (
        f"timetracer_otel.cassette.errors.CassetteError: timetracer: cannot use cassette {missing}:"
        " no such file or directory"
    )


def test_a_directory_replays_without_its_unusable_cassette_and_names_it(
    good_cassette: bytes, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "a.json").write_bytes(good_cassette)
    bad = tmp_path / "day" / "b.json"
    bad.parent.mkdir()
    bad.write_bytes(good_cassette[:-20])
    with caplog.at_level(logging.WARNING, logger="timetracer"):
        auto_setup(Starlette(), config=replay_config(tmp_path))
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert re.fullmatch(
        rf"timetracer: cannot use cassette {re.escape(str(bad))}: is truncated: .+; the replay goes on without it",
        warning,
    )
    (tmp_path / "a.json").unlink()
    with pytest.raises(
        CassetteError
    ) as raised:  # nothing usable left: the start stops, naming the file
        auto_setup(Starlette(), config=replay_config(tmp_path))
    _assert_one_clear_error(raised, bad, r"is truncated: .+")


def test_empty_directory_and_unset_cassette(tmp_path: Path) -> None:
    with pytest.raises(CassetteError) as raised:
        auto_setup(Starlette(), config=replay_config(tmp_path))
    _assert_one_clear_error(raised, tmp_path, "the directory holds no cassettes")
    with pytest.raises(CassetteError) as raised:
        auto_setup(Starlette(), config=TraceConfig(mode="replay"))
    _assert_one_clear_error(
        raised,
        Path("(unset)"),
        re.escape("replay mode needs TIMETRACER_CASSETTE (or TraceConfig(cassette_path=...))"),
    )


def test_cassettes_are_read_once_at_start(
    good_cassette: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """auto_setup checks them to fail early; the middleware Starlette builds later uses that library, reading nothing."""
    from timetracer_otel.cli import index
    from timetracer_otel.replayers import selection

    (tmp_path / "a.json").write_bytes(good_cassette)
    reads: list[Any] = []
    for module in (index, selection):
        monkeypatch.setattr(
            module,
            "load_cassette",
            lambda path, **limits: reads.append(Path(path)) or load_cassette(path, **limits),
        )
    app = Starlette()
    auto_setup(app, config=replay_config(tmp_path))
    app.middleware_stack = app.build_middleware_stack()  # what Starlette does at the first request
    assert reads == [tmp_path / "a.json"]


def test_fresh_process_refuses_to_start(
    good_cassette: bytes, tmp_path: Path, upstream: Upstream
) -> None:
    """``TIMETRACER_MODE=replay TIMETRACER_CASSETTE=<truncated file> uvicorn ...`` exits, saying why, once."""
    path = tmp_path / "cassette.json"
    path.write_bytes(good_cassette[: len(good_cassette) // 2])
    env = {
        "TIMETRACER_MODE": "replay",
        "TIMETRACER_CASSETTE": str(path),
        "REPLAY_APP_UPSTREAM": upstream.url,
    }
    with uvicorn_process(env) as server:
        assert server.process.wait(60) != 0
    assert server.stderr.count("timetracer: cannot use cassette") == 1, server.stderr
    assert f"cannot use cassette {path}: is truncated: the JSON ends early" in server.stderr


def test_live_plugins_let_httpx_go_out_while_requests_replays(
    serve: Callable[..., Any], upstream: Upstream, cassette_dir: Path
) -> None:
    (recorded,) = record(serve, upstream.url, cassette_dir, [("GET", "/mixed", {})])
    (cassette,) = cassette_files(cassette_dir)
    before = len(upstream.requests)
    config = replay_config(cassette, live_plugins=("httpx",))
    (replayed,), (report,) = replay(serve, upstream.url, config, [("GET", "/mixed", {})])
    assert [(r["path"], r["query"]) for r in upstream.requests[before:]] == [("/echo", "via=httpx")]
    assert_same_response(recorded, replayed)
    assert report.answered == [f"GET {upstream.url}/echo?via=requests"]
    assert report.unused == [f"GET {upstream.url}/echo?via=httpx"]


def test_a_call_too_malformed_to_match_is_a_cassette_error_at_start(tmp_path: Path) -> None:
    """A cassette can pass the structural check yet hold a call no matcher can read (found by fuzzing)."""
    from timetracer_otel.replayers.selection import CassetteLibrary

    document = {
        "format": "timetracer-cassette",
        "version": 1,
        "request": {
            "method": "GET",
            "path": "/",
            "headers": [],
            "body": {"encoding": "empty", "size": 0},
        },
        "response": {"status": 200, "headers": [], "body": {"encoding": "empty", "size": 0}},
        "calls": [
            {"protocol": "redis", "request": {"command": "GET", "args": [{"$type": "nope"}]}}
        ],
    }
    cassette = tmp_path / "malformed.json"
    cassette.write_text(json.dumps(document))
    with pytest.raises(CassetteError) as raised:
        CassetteLibrary(str(cassette))
    assert (
        str(raised.value)
        == f"timetracer: cannot use cassette {cassette}: calls[0] cannot be replayed (ValueDecodeError: unknown typed value 'nope')"
    )


def test_a_mismatch_whose_times_are_off_by_whole_hours_suggests_the_time_zone() -> None:
    """A token blacklist's ``expires_at`` made with ``datetime.fromtimestamp``: local time, so
    replayed under another TZ every time is off by the zones' difference. The mismatch says so."""
    statement = "INSERT INTO token_blacklist (token, expires_at) VALUES (?, ?)"

    def view(expires_at: datetime.datetime) -> CallView:
        return live_view(
            {"operation": "execute", "statement": statement, "parameters": ("t", expires_at)}
        )

    recorded = RecordedCall(0, None, view(datetime.datetime(2026, 12, 5, 10, 30, 0)))  # type: ignore[arg-type]
    in_tokyo = call_differences(view(datetime.datetime(2026, 12, 5, 19, 30, 0)), recorded)
    assert in_tokyo[-1] == (
        "parameters: its times are +9 h off the recorded ones: was this recorded in another time "
        "zone? Replay with the recording's TZ (TZ=UTC for most servers)"
    )
    a_second_later = call_differences(view(datetime.datetime(2026, 12, 5, 10, 30, 1)), recorded)
    assert not any("time zone" in line for line in a_second_later)


def test_a_mismatch_only_in_the_order_of_a_list_names_the_hash_seed() -> None:
    """Prefect writes a block schema's capabilities as ``list(a_set)``: in another process the
    set's order, and so the JSON, differ. The mismatch says so, not a generic difference."""
    statement = "INSERT INTO block_schema (capabilities) VALUES (?)"

    def view(capabilities: list[str]) -> CallView:
        parameters = (json.dumps(capabilities),)
        return live_view({"operation": "execute", "statement": statement, "parameters": parameters})

    recorded = RecordedCall(0, None, view(["read-path", "write-path", "get-directory"]))  # type: ignore[arg-type]
    reordered = call_differences(view(["get-directory", "read-path", "write-path"]), recorded)
    assert reordered[-1] == (
        "parameters: the same items in another order: a set's (its order follows the process's "
        "hash seed). Record and replay with the same PYTHONHASHSEED (PYTHONHASHSEED=0 for both)"
    )
    changed = call_differences(view(["get-directory", "read-path", "delete-path"]), recorded)
    assert not any("hash seed" in line for line in changed)


def test_named_parameters_given_each_others_values_name_the_hash_seed() -> None:
    """warren's test factory zips ``{"source_id", "target_id"}`` (a set) with the two ids it made:
    in another process the ids change names. The mismatch says why."""
    statement = "INSERT INTO relation (source_id, target_id) VALUES (:source_id, :target_id)"

    def view(parameters: dict[str, str]) -> CallView:
        return live_view({"operation": "execute", "statement": statement, "parameters": parameters})

    recorded = RecordedCall(0, None, view({"source_id": "exp-A", "target_id": "exp-B"}))  # type: ignore[arg-type]
    swapped = call_differences(view({"source_id": "exp-B", "target_id": "exp-A"}), recorded)
    assert swapped[-1] == (
        "parameters: the same items in another order: a set's (its order follows the process's "
        "hash seed). Record and replay with the same PYTHONHASHSEED (PYTHONHASHSEED=0 for both)"
    )
    changed = call_differences(view({"source_id": "exp-B", "target_id": "exp-C"}), recorded)
    assert not any("hash seed" in line for line in changed)


def test_json_quoted_into_a_statement_in_another_order_names_the_hash_seed() -> None:
    """An audit log's INSERT, PyMySQL quoting the response's JSON into it: a Tortoise model's
    fields (a set) in another order gave the JSON another member order, and the mismatch blamed
    an undrawn clock (the row holds a time in the app's zone)."""

    def view(body: dict[str, Any]) -> CallView:
        quoted = json.dumps(body).replace("\\", "\\\\").replace('"', '\\"').replace("'", "\\'")
        statement = (
            f"INSERT INTO auditlog (response_body, at) VALUES ('{quoted}', '2026-12-05 18:30:00')"
        )
        return live_view({"operation": "execute", "statement": statement, "parameters": None})

    row = {"id": 1, "username": "admin's", "last_login": "2026-12-05 10:30:00", "roles": [1, 2]}
    recorded = RecordedCall(0, None, view(row))  # type: ignore[arg-type]
    shuffled = {
        "roles": [2, 1],
        "last_login": "2026-12-05 10:30:00",
        "username": "admin's",
        "id": 1,
    }
    assert call_differences(view(shuffled), recorded)[-1] == (
        "statement: the same items in another order: a set's (its order follows the process's "
        "hash seed). Record and replay with the same PYTHONHASHSEED (PYTHONHASHSEED=0 for both)"
    )
    changed = call_differences(view({**shuffled, "id": 2}), recorded)
    assert not any("hash seed" in line for line in changed)


def test_a_long_body_that_differs_late_is_shown_where_it_differs() -> None:
    """Prefect's flow-run body differed in a field past its 200th character: both lines of the
    mismatch showed the same start."""

    def view(traceparent: str | None) -> CallView:
        state = {"type": "PENDING", "name": "Pending", "message": "x" * 300, "tp": traceparent}
        body = {"encoding": "json", "json": {"flow_id": "f" * 36, "state": state}}
        return request_view("POST", "http://127.0.0.1:4200/api/flow_runs/", body, [])

    recorded = RecordedCall(0, None, view("00-" + "a" * 32 + "-" + "b" * 16 + "-01"))  # type: ignore[arg-type]
    lines = call_differences(view(None), recorded)
    assert lines[0] == "body differs:"
    assert '"tp":"00-' in lines[1] and '"tp":null' in lines[2]


def test_a_mismatch_holding_the_time_of_the_replay_names_the_logs_source() -> None:
    """fief's audit log sends each line out with loguru's time, which is not drawn unless the
    logs source is: replayed, the line holds the time it runs at. The mismatch says so."""

    def view(at: datetime.datetime) -> CallView:
        line = json.dumps({"message": "user.login", "time": at.isoformat()})
        statement = "INSERT INTO audit_log (line) VALUES (?)"
        return live_view({"operation": "execute", "statement": statement, "parameters": (line,)})

    recorded = RecordedCall(0, None, view(datetime.datetime(2026, 1, 2, 3, 4, 5)))  # type: ignore[arg-type]
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    replayed = call_differences(view(now), recorded)
    assert replayed[-1] == (
        "parameters: it holds the time of this replay where the recording has its own: a clock read "
        "timetracer does not draw. A log line's time (an audit log sent out): add the logs "
        "source, TIMETRACER_DRAWS=clock,uuid,random,urandom,secrets,logs"
    )
    another_day = call_differences(view(datetime.datetime(2026, 1, 3, 3, 4, 5)), recorded)
    assert not any("this replay" in line for line in another_day)
    # recorded a minute before the replay: its own times are as near (Prefect's replays said so
    # of a call differing in a key)
    just_recorded = RecordedCall(0, None, view(now - datetime.timedelta(minutes=1)))  # type: ignore[arg-type]
    assert not any("this replay" in line for line in call_differences(view(now), just_recorded))


def test_a_mismatch_holding_the_replays_time_in_epoch_seconds_names_the_logs_source() -> None:
    """A ``logging`` handler sending ``record.created`` (seconds since the epoch, a float) out:
    replayed without the logs source, the call holds the time it runs at. The mismatch says so;
    not of a number that only looks like one (a ten-digit id, far from now on both sides)."""

    from timetracer_otel.protocols.redis import request_view as redis_view

    def view(created: float, request_id: int) -> CallView:
        return redis_view(
            {"command": "RPUSH", "args": ["audit", json.dumps([created, request_id])]}
        )

    recorded = RecordedCall(0, None, view(1733570000.123456, 1234567890))  # type: ignore[arg-type]
    replayed = call_differences(view(time.time(), 1234567890), recorded)
    assert "add the logs source" in replayed[-1], replayed
    another_id = call_differences(view(1733570000.123456, 1234567891), recorded)
    assert not any("this replay" in line for line in another_id)


def test_the_closest_of_calls_alike_in_the_same_fields_is_the_one_sharing_most_of_them() -> None:
    """Every ``EVALSHA`` of dramatiq's enqueue script has the same command and script and
    differs in its message: the call differing only by the log time in its message comes
    first, not the first job queued (fief's audit log replayed without its log times)."""
    from timetracer_otel.protocols.redis import request_view
    from timetracer_otel.replayers.matching import describe_mismatch

    def enqueue(actor: str, message_id: str, logged_at: str) -> CallView:
        message = json.dumps(
            {"actor_name": actor, "args": [{"time": logged_at}], "message_id": message_id}
        )
        return request_view({"command": "EVALSHA", "args": ["5e1f", 1, "dramatiq", message]})

    recorded = [
        RecordedCall(0, None, enqueue("trigger_webhooks", "b1c2", "2026-12-07T10:00:00")),  # type: ignore[arg-type]
        RecordedCall(1, None, enqueue("write_audit_log", "a7d9", "2026-12-07T10:00:01")),  # type: ignore[arg-type]
        RecordedCall(2, None, enqueue("send_mail", "c3e4", "2026-12-07T10:00:02")),  # type: ignore[arg-type]
    ]
    live = enqueue("write_audit_log", "a7d9", "2026-12-07T16:42:17")
    closest = describe_mismatch(live, recorded).splitlines()[1]
    assert closest.startswith("  #1 EVALSHA"), closest
