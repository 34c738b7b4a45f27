"""asyncpg used directly, through uvicorn: recorded against the real PostgreSQL at 127.0.0.1:5432
(a schema of the test's own), replayed in a fresh ``TIMETRACER_MODE=replay`` process with the DSN
at a closed port, its pool made in the lifespan, and not one socket connect."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from _replay import (
    CONNECTS,
    REPLAYED,
    Sent,
    assert_replayed_alike,
    assert_same_response,
    get_at_once,
    run_fresh,
    send,
    uvicorn_process,
)
from _services import POSTGRES_ADMIN, closed_port, postgres_schemas
from apps.asyncpg_app import create_app, create_tables
from conftest import load_cassettes, sql_calls
from starlette.testclient import TestClient

import timetracer_otel
from timetracer_otel.cassette.calls import CassetteCall
from timetracer_otel.config import TraceConfig
from timetracer_otel.dashboard import create_app as create_dashboard
from timetracer_otel.protocols.sql import asyncpg_methods, asyncpg_request, live_view, recorded_view

DSN = POSTGRES_ADMIN
SENT: list[Sent] = [
    ("GET", "/kinds", {}),
    ("GET", "/calls/1", {}),
    ("GET", "/direct", {}),
    ("POST", "/users/ann", {}),
    ("POST", "/users/ann", {}),
]


@pytest.fixture
def schema() -> Iterator[str]:
    """The test's own schema, with the app's tables; dropped after."""
    with postgres_schemas("") as name:
        asyncio.run(create_tables(DSN, name))
        yield name


def _record(
    serve: Callable[..., Any], schema: str, directory: Path, sent: list[Sent]
) -> list[httpx.Response]:
    config = TraceConfig(mode="record", cassette_dir=str(directory))
    server = serve(create_app(DSN, schema, config), lifespan="on")
    responses = send(server.url, sent)
    server.stop()
    assert timetracer_otel.flush(30), "cassette writer did not drain"
    return responses


def _replay_fresh(
    cassette: Path, schema: str, run: Callable[[str], list[httpx.Response]], **env: str
) -> tuple[list[httpx.Response], str]:
    """``run(url)``'s responses from the app in a fresh replaying uvicorn process whose DSN is a closed port,
    and what that process printed (its socket connects audited)."""
    return run_fresh(
        "asyncpg_app:from_environment",
        run,
        TIMETRACER_MODE="replay",
        TIMETRACER_CASSETTE=str(cassette),
        ASYNCPG_APP_DSN=f"postgresql://postgres@127.0.0.1:{closed_port()}/test",
        ASYNCPG_APP_SCHEMA=schema,
        **env,
    )


def test_every_way_of_calling_asyncpg_is_recorded_on_its_client_span(
    serve: Callable[..., Any], cassette_dir: Path, schema: str
) -> None:
    """fetch, fetchrow, fetchval, execute with and without arguments, executemany, a prepared
    statement's fetches, transactions committed and rolled back, the pool's shortcuts and a
    connection of its own: one ``sql`` call each, in order, with typed rows and errors."""
    responses = _record(serve, schema, cassette_dir, SENT)
    assert [r.status_code for r in responses] == [200, 200, 200, 200, 409]
    by_path = {}
    for doc in load_cassettes(cassette_dir):
        by_path.setdefault(doc["request"]["path"], []).append(doc)
    calls = sql_calls(by_path["/calls/1"][0])
    assert {(c["library"], c["request"]["dialect"]) for c in calls} == {
        ("asyncpg", "postgresql+asyncpg")
    }
    assert [(c["request"]["operation"], c["request"]["statement"].split()[0]) for c in calls] == [
        ("execute", "SELECT"),
        ("execute", "INSERT"),
        ("executemany", "INSERT"),
        ("fetch", "SELECT"),
        ("fetchmany", "INSERT"),
        ("fetchval", "SELECT"),
        ("fetchval", "SELECT"),
        ("prepare", "SELECT"),
        ("fetch", "SELECT"),
        ("fetchrow", "SELECT"),
        ("fetchval", "SELECT"),
        ("execute", "BEGIN;"),
        ("execute", "INSERT"),
        ("execute", "COMMIT;"),
        ("execute", "BEGIN;"),
        ("execute", "INSERT"),
        ("execute", "INSERT"),
        ("execute", "ROLLBACK;"),
        ("fetchval", "SELECT"),
        ("execute", "BEGIN;"),
        ("cursor", "SELECT"),
        ("cursor", "SELECT"),
        ("execute", "COMMIT;"),
    ]
    iterated, fetched = (call["response"] for call in calls[-3:-1])
    assert (iterated["rows"], iterated["complete"]) == ([[n, n * 2] for n in range(1, 6)], True)
    assert (fetched["rows"], fetched["complete"]) == ([[1, 2], [2, 4], [3, 6]], False)
    many = calls[2]["request"]["parameters"]
    assert many == [{"$type": "tuple", "items": [f"m1-{i}"]} for i in range(3)]
    assert calls[1]["response"]["status"] == "INSERT 0 1"
    violation = calls[16]
    assert violation["error"]["type"] == "asyncpg.exceptions.UniqueViolationError"
    assert violation["response"]["error_attributes"]["sqlstate"] == "23505"
    assert violation["response"]["error_attributes"]["constraint_name"] == "users_pkey"
    spans = {s["span_id"]: s for s in by_path["/calls/1"][0]["spans"]}
    # OpenTelemetry's instrumentor makes no span for prepare(), Connection.fetchmany() nor a cursor
    # (it makes one per fetch): they are on the request's
    own = ("prepare", "fetchmany", "cursor")
    kinds = [(c["request"]["operation"], spans[c["span_id"]]["kind"]) for c in calls]
    assert {kind for operation, kind in kinds if operation in own} == {"SERVER"}
    assert {kind for operation, kind in kinds if operation not in own} == {"CLIENT"}

    (kinds,) = sql_calls(by_path["/kinds"][0])[:1]
    row = kinds["response"]["rows"][0]
    assert [column[0] for column in kinds["response"]["description"]] == [
        "id", "u", "n", "t", "j", "i", "f", "s", "b", "raw", "arr", "nothing", "ip", "net", "r",
        "bits", "pt", "bx", "circ", "seg", "ln",
    ]  # fmt: skip
    assert row[12:16] == [
        {"$type": "ip", "class": "IPv4Address", "value": "10.0.0.1"},
        {"$type": "ip", "class": "IPv4Network", "value": "10.0.0.0/8"},
        {"$type": "driver", "class": "asyncpg.types.Range", "lower": 1, "upper": 5,
         "lower_inc": True, "upper_inc": False, "empty": False},
        {"$type": "driver", "class": "asyncpg.pgproto.types.BitString", "bits": "1010 0"},
    ]  # fmt: skip
    # point, box, circle (asyncpg reads it as a plain tuple), line segment, line
    assert [value["$type"] for value in row[16:]] == [
        "driver",
        "driver",
        "tuple",
        "driver",
        "driver",
    ]
    assert row[:12] == [
        1,
        {"$type": "uuid", "value": "6f1c1f9e-9b3a-4a57-8f0e-2f5d0c7a1b23"},
        {"$type": "decimal", "value": "12.345"},
        {"$type": "datetime", "value": "2026-01-22T10:30:00.123000+00:00"},
        '{"k": [1, "two"]}',
        7,
        2.5,
        "text",
        True,
        {"$type": "bytes", "base64": "AP8="},
        [1, 2, 3],
        None,
    ]


def test_show_and_the_dashboard_read_calls_whose_status_is_a_command_tag(
    serve: Callable[..., Any], schema: str, cassette_dir: Path
) -> None:
    """asyncpg's ``execute`` answers a command tag ("INSERT 0 1"), kept as the call's status: the
    CLI and the dashboard show it as the call's outcome instead of failing on it as an HTTP status."""
    _record(serve, schema, cassette_dir, [("GET", "/calls/1", {})])
    (cassette,) = cassette_dir.rglob("*.json")
    shown = subprocess.run(
        [str(Path(sys.executable).parent / "timetracer"), "show", str(cassette)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert re.search(r"\bINSERT 0 1\b", shown.stdout), shown.stdout
    with TestClient(create_dashboard(str(cassette_dir), host="testserver")) as client:
        page = client.get(f"/cassettes/{cassette.relative_to(cassette_dir).as_posix()}")
    assert page.status_code == 200 and "INSERT 0 1" in page.text


def test_secret_parameters_and_columns_are_hidden(
    serve: Callable[..., Any], cassette_dir: Path, schema: str
) -> None:
    """A ``password_hash`` column: its parameter in the INSERT and its value in the RETURNING row are sealed."""
    _record(serve, schema, cassette_dir, [("POST", "/users/bob", {})])
    (doc,) = load_cassettes(cassette_dir)
    text = json.dumps(doc)
    assert "argon2-hash-of-bob" not in text
    (call,) = sql_calls(doc)
    assert call["request"]["parameters"]["items"][0] == "bob"
    assert call["response"]["rows"][0][0] == "bob"
    hidden = (call["request"]["parameters"]["items"][1], call["response"]["rows"][0][1])
    assert all(str(value).startswith("[SEALED:") for value in hidden), hidden


def test_json_text_keeps_its_shape_with_its_secret_members_sealed(
    serve: Callable[..., Any], cassette_dir: Path, schema: str, tmp_path: Path
) -> None:
    """jsonb read back as text: its ``client_secret`` is sealed where it stands, so the text still
    parses in a replay without the key, and the app, reading the other members, answers as recorded."""
    sent: list[Sent] = [("POST", "/webhooks/7", {})]
    recorded = _record(serve, schema, cassette_dir, sent)
    (doc,) = load_cassettes(cassette_dir)
    assert "cs-7-b8f2e1d4" not in json.dumps(doc)
    (call,) = sql_calls(doc)
    (stored,) = call["response"]["rows"][0]
    assert stored.startswith(
        '{"event": "client.updated", "client": {"id": "c7", "client_secret": "[SEALED:'
    )
    for env in ({}, {"TIMETRACER_KEY_FILE": str(tmp_path / "no-key")}):
        replayed, stderr = _replay_fresh(cassette_dir, schema, lambda url: send(url, sent), **env)
        assert_same_response(recorded[0], replayed[0])
        assert recorded[0].json() == {
            "event": "client.updated",
            "client": "c7",
            "members": ["client_secret", "id"],
        }


def test_requests_replay_in_a_fresh_process_with_postgresql_unreachable(
    serve: Callable[..., Any], cassette_dir: Path, schema: str
) -> None:
    """Byte-identical responses (Records read every way, typed values, the unique violation's class,
    message, SQLSTATE and constraint), each request's calls all answered, and no socket connect:
    the lifespan's pool and the request's own connection are replay stand-ins."""
    recorded = _record(serve, schema, cassette_dir, SENT)
    replayed, stderr = _replay_fresh(cassette_dir, schema, lambda url: send(url, SENT))
    assert_replayed_alike(recorded, replayed, stderr, SENT)
    assert CONNECTS.findall(stderr) == []
    kinds = replayed[0].json()
    assert kinds["by_name"] == "UUID('6f1c1f9e-9b3a-4a57-8f0e-2f5d0c7a1b23')"
    assert kinds["record"].startswith("<Record id=1 ")
    assert "UniqueViolationError" in replayed[4].json()["error"]


def test_fifty_concurrent_requests_record_and_replay_their_own_calls(
    serve: Callable[..., Any], cassette_dir: Path, schema: str
) -> None:
    """50 requests at once on the pool: each cassette holds its own statement, and each replay gets its own row."""
    paths = [f"/item/{n}" for n in range(50)]

    config = TraceConfig(mode="record", cassette_dir=str(cassette_dir))
    server = serve(create_app(DSN, schema, config), lifespan="on")
    recorded = get_at_once(server.url, paths, timeout=60)
    server.stop()
    assert timetracer_otel.flush(30)
    assert [r.json() for r in recorded] == [{"n": n, "value": n * 10 + 1} for n in range(50)]
    docs = load_cassettes(cassette_dir)
    assert sorted(
        (doc["request"]["path"], [c["request"]["parameters"]["items"] for c in doc["calls"]])
        for doc in docs
    ) == sorted((f"/item/{n}", [[n]]) for n in range(50))

    replayed, stderr = _replay_fresh(
        cassette_dir, schema, lambda url: get_at_once(url, paths, timeout=60)
    )
    for before, after in zip(recorded, replayed, strict=True):
        assert_same_response(before, after)
    assert len([r for r in REPLAYED.findall(stderr) if r[0] == "OK" and r[7] == "same"]) == 50, (
        stderr
    )
    assert CONNECTS.findall(stderr) == []


def test_a_changed_parameter_raises_a_mismatch_at_the_call_site(
    serve: Callable[..., Any], cassette_dir: Path, schema: str
) -> None:
    """``/item/4`` replayed from ``/item/3``'s cassette: the fetchval is refused, naming the recorded call."""
    _record(serve, schema, cassette_dir, [("GET", "/item/3", {})])
    (cassette,) = cassette_dir.rglob("*.json")
    (response,), stderr = _replay_fresh(
        cassette, schema, lambda url: send(url, [("GET", "/item/4", {})])
    )
    assert response.status_code == 500
    assert (
        "ReplayMismatchError: timetracer replay: no recorded call matches fetchval SELECT $1::int * 10 + 1 (asyncpg)"
        in stderr
    )
    assert "parameters" in stderr and CONNECTS.findall(stderr) == []


def test_a_live_call_and_its_recording_share_their_key() -> None:
    """Connection and prepared statement calls of one method and text match; another method does not."""
    request = asyncpg_request("fetchrow", ("SELECT $1::int", 1), {})
    recorded = CassetteCall({"protocol": "sql", "request": json.loads(json.dumps(
        {**request, "parameters": {"$type": "tuple", "items": [1]}}
    ))})  # fmt: skip
    assert recorded_view(recorded).key == live_view(request).key
    assert (
        live_view(asyncpg_request("fetchrow", (1,), {}, "SELECT  $1::int")).key
        == live_view(request).key
    )
    assert (
        live_view(asyncpg_request("fetch", ("SELECT $1::int", 1), {})).key != live_view(request).key
    )
    assert (
        live_view(asyncpg_request("fetchrow", ("SELECT $1::int", 1.0), {})).key
        != live_view(request).key
    )


def test_savepoints_match_whatever_number_the_connection_gave_them() -> None:
    """asyncpg numbers savepoints by a counter its prepared statements advance too: a pool
    connection used before (by earlier tests) numbers them otherwise than a replay connection."""

    def key(statement: str) -> Any:
        return live_view(asyncpg_request("execute", (statement,), {})).key

    assert key("SAVEPOINT __asyncpg_savepoint_31c__;") == key("SAVEPOINT __asyncpg_savepoint_1__;")
    assert key("RELEASE SAVEPOINT __asyncpg_savepoint_31c__;") != key(
        "SAVEPOINT __asyncpg_savepoint_1__;"
    )
    assert key("SAVEPOINT mine_1;") != key("SAVEPOINT mine_2;")  # the application's own names


def test_records_come_back_as_asyncpg_records() -> None:
    """The replay's rows are asyncpg's own Record class."""
    from timetracer_otel.replayers.asyncpg import _records

    (record,) = _records({"description": [["a"], ["b"]], "rows": [[1, "x"]]})
    assert isinstance(record, asyncpg.Record)
    assert (record["b"], record[0], record.get("a"), dict(record)) == (
        "x",
        1,
        1,
        {"a": 1, "b": "x"},
    )


def test_outside_requests_a_replaying_process_opens_a_stand_in_pool_and_refuses_data(
    monkeypatch: pytest.MonkeyPatch, schema: str
) -> None:
    """With no process cassette, a pool made at start-up opens nothing, its liveness check gets the
    usual answer and a query is refused naming it; named live, the same code reaches PostgreSQL."""
    from timetracer_otel.replayers import ReplayMismatchError, install_replayers, process

    install_replayers()
    monkeypatch.setenv("TIMETRACER_MODE", "replay")
    # no process cassette, whatever an app replayed earlier in this process started from
    monkeypatch.setattr(process, "_session", None)

    async def start_up(dsn: str) -> tuple[Any, Any]:
        pool = await asyncpg.create_pool(dsn, server_settings={"search_path": schema}, min_size=1)
        try:
            alive = await pool.fetchval("SELECT 1")
            try:
                return alive, await pool.fetchval("SELECT s FROM kinds WHERE id = $1", 1)
            except ReplayMismatchError as exc:
                return alive, str(exc).splitlines()[:2]
        finally:
            await pool.close()

    closed = f"postgresql://postgres@127.0.0.1:{closed_port()}/test"
    assert asyncio.run(start_up(closed)) == (
        1,
        [
            "timetracer replay: no recorded call matches fetchval SELECT s FROM kinds WHERE id = $1 (asyncpg)",
            "cassette: (no process cassette)",
        ],
    )
    monkeypatch.setenv("TIMETRACER_LIVE_PLUGINS", "asyncpg")
    assert asyncio.run(start_up(DSN)) == (1, "text")


def test_a_cursor_read_past_its_recorded_rows_is_a_mismatch() -> None:
    """The rows the recording fetched come back as Records; the next one was never recorded."""
    from timetracer_otel.cassette.values import encode_value
    from timetracer_otel.replayers import ReplayMismatchError, ReplaySession, install_replayers
    from timetracer_otel.replayers.session import activate, deactivate

    series = "SELECT n FROM generate_series(1, $1) AS n"
    response = {"description": [["n"]], "rowcount": -1, "lastrowid": None, "rows": [[1], [2]]}
    call = {
        "protocol": "sql",
        "library": "asyncpg",
        "request": encode_value(asyncpg_request("cursor", (series, 9), {})),
        "response": {**response, "streamed": True, "complete": False},
        "error": None,
    }

    async def read() -> tuple[list[Any], str]:
        conn = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{closed_port()}/test")
        cursor = await conn.cursor(series, 9)
        rows = await cursor.fetch(2)
        try:
            await cursor.fetchrow()
        except ReplayMismatchError as exc:
            return rows, str(exc).splitlines()[0]
        return rows, "answered"

    install_replayers()
    token = activate(ReplaySession({"calls": [call]}, "in-memory"))
    try:
        rows, error = asyncio.run(read())
    finally:
        deactivate(token)
    assert [dict(row) for row in rows] == [{"n": 1}, {"n": 2}]
    assert isinstance(rows[0], asyncpg.Record)
    assert (
        error
        == f"timetracer replay: no recorded call matches cursor {series} (more rows) (asyncpg)"
    )


def test_a_statement_at_start_up_is_kept_in_the_process_cassette_and_replayed(
    cassette_dir: Path, schema: str
) -> None:
    """Recorded by a process started to record, the lifespan's statement on its new pool goes to the
    process cassette; a replaying process answers it from there, its pool opening nothing."""
    record_env = {
        "TIMETRACER_MODE": "record",
        "TIMETRACER_DIR": str(cassette_dir),
        "ASYNCPG_APP_DSN": DSN,
        "ASYNCPG_APP_SCHEMA": schema,
        "ASYNCPG_APP_AT_START": "1",
    }
    with uvicorn_process(record_env, "asyncpg_app:from_environment") as server:
        (recorded,) = send(server.url, [("GET", "/kinds", {})])
    assert recorded.json()["at_start"] == "1", server.stderr
    (process,) = cassette_dir.rglob("process__*.json")
    calls = json.loads(process.read_text("utf-8"))["calls"]
    assert [
        (c["library"], c["request"]["operation"], c["request"]["statement"]) for c in calls
    ] == [("asyncpg", "fetchval", "SELECT count(*) FROM kinds")]

    (replayed,), stderr = _replay_fresh(
        cassette_dir,
        schema,
        lambda url: send(url, [("GET", "/kinds", {})]),
        ASYNCPG_APP_AT_START="1",
    )
    assert_same_response(recorded, replayed)
    assert CONNECTS.findall(stderr) == []


def test_an_asyncpg_before_fetchmany_has_its_other_methods_recorded_and_replayed() -> None:
    """asyncpg 0.29 (an application's pin) has no ``fetchmany``: installing the capture or the
    replay wrapped it, raised ``AttributeError`` and left asyncpg half-wrapped."""
    connection, statement = asyncpg.connection.Connection, asyncpg.prepared_stmt.PreparedStatement

    def before_fetchmany(cls: type) -> type:
        public = (name for name in dir(cls) if not name.startswith("_") and name != "fetchmany")
        return type(cls.__name__, (), {name: getattr(cls, name) for name in public})

    old_connection, old_statement = before_fetchmany(connection), before_fetchmany(statement)
    assert asyncpg_methods(connection, statement) == [
        *((connection, name) for name in ("fetch", "fetchrow", "fetchval", "execute")),
        *((connection, name) for name in ("executemany", "fetchmany", "prepare")),
        *((statement, name) for name in ("fetch", "fetchrow", "fetchval", "executemany")),
        (statement, "fetchmany"),
    ]
    assert asyncpg_methods(old_connection, old_statement) == [
        *((old_connection, name) for name in ("fetch", "fetchrow", "fetchval", "execute")),
        *((old_connection, name) for name in ("executemany", "prepare")),
        *((old_statement, name) for name in ("fetch", "fetchrow", "fetchval", "executemany")),
    ]


def test_sqlalchemy_on_asyncpg_set_up_with_the_asyncpg_plugin_replays(cassette_dir: Path) -> None:
    """``plugins=["asyncpg"]`` for a service whose engine is SQLAlchemy's: replay answers
    SQLAlchemy's calls, so they are recorded as SQLAlchemy's (every request was a 500)."""
    sent: list[Sent] = [("GET", f"/square/{n}", {}) for n in (3, 4)]
    record_env = {"TIMETRACER_MODE": "record", "TIMETRACER_DIR": str(cassette_dir)}
    with uvicorn_process(
        {**record_env, "APP_DB_URL": DSN.replace("postgresql://", "postgresql+asyncpg://")},
        "sqlalchemy_asyncpg_app:create_app",
    ) as server:
        recorded = send(server.url, sent)
    assert [r.json() for r in recorded] == [{"square": 9}, {"square": 16}]
    unreachable = f"postgresql+asyncpg://postgres@127.0.0.1:{closed_port()}/test"
    replay_env = {"TIMETRACER_MODE": "replay", "TIMETRACER_CASSETTE": str(cassette_dir)}
    with uvicorn_process(
        {**replay_env, "APP_DB_URL": unreachable}, "sqlalchemy_asyncpg_app:create_app"
    ) as server:
        replayed = send(server.url, sent)
    for before, after in zip(recorded, replayed, strict=True):
        assert_same_response(before, after)


def test_a_pool_made_outside_a_replay_session_and_entered_in_one_replays() -> None:
    """A suite's fixture calls ``create_pool()`` without awaiting it, and the app's lifespan
    enters the pool inside the test: asyncpg's own pool refused the replay connections (not
    its ``Connection`` class); it now opens nothing and answers from the cassette."""
    from timetracer_otel.cassette.values import encode_value
    from timetracer_otel.replayers import ReplaySession, install_replayers
    from timetracer_otel.replayers.session import activate, deactivate

    count = "SELECT count(*) FROM users"
    call = {
        "protocol": "sql",
        "library": "asyncpg",
        "request": encode_value(asyncpg_request("fetchval", (count,), {})),
        "response": {"description": [["count"]], "rowcount": 1, "lastrowid": None, "rows": [[100]]},
        "error": None,
    }
    install_replayers()

    async def main() -> tuple[Any, ...]:
        pool = asyncpg.create_pool(
            f"postgresql://postgres@127.0.0.1:{closed_port()}/test", min_size=1, max_size=1
        )  # outside the session, not awaited
        token = activate(ReplaySession({"calls": [call]}, "in-memory"))
        try:
            async with pool:
                async with pool.acquire() as conn:
                    counted = await conn.fetchval(count)
                sizes = (pool.get_min_size(), pool.get_max_size())
        finally:
            deactivate(token)
        return counted, sizes, pool.is_closing()

    assert asyncio.run(main()) == (100, (1, 1), True)
