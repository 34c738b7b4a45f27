"""psycopg 3 used directly, through uvicorn: recorded against the real PostgreSQL at 127.0.0.1:5432
(a schema of the test's own), replayed in a fresh ``TIMETRACER_MODE=replay`` process with the DSN
at a closed port, its ``psycopg_pool.ConnectionPool`` opened in the lifespan, and not one socket connect."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
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
)
from _services import POSTGRES_ADMIN, closed_port, postgres_schemas
from apps.psycopg_app import create_app, create_tables
from conftest import load_cassettes, sql_calls
from psycopg.rows import dict_row, namedtuple_row

import timetracer_otel
from timetracer_otel.cassette.calls import CassetteCall
from timetracer_otel.config import TraceConfig
from timetracer_otel.protocols.sql import live_view, psycopg_request, recorded_view

DSN = POSTGRES_ADMIN
SENT: list[Sent] = [
    ("GET", "/kinds", {}),
    ("GET", "/calls/1", {}),
    ("POST", "/users/ann", {}),
    ("POST", "/users/ann", {}),
    ("GET", "/async/2", {}),
]


@pytest.fixture
def schema() -> Iterator[str]:
    """The test's own schema, with the app's tables; dropped after."""
    with postgres_schemas("") as name:
        create_tables(DSN, name)
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
    cassette: Path, schema: str, run: Callable[[str], list[httpx.Response]]
) -> tuple[list[httpx.Response], str]:
    """``run(url)``'s responses from the app in a fresh replaying uvicorn process whose DSN is a closed port,
    and what that process printed (its socket connects audited)."""
    return run_fresh(
        "psycopg_app:from_environment",
        run,
        TIMETRACER_MODE="replay",
        TIMETRACER_CASSETTE=str(cassette),
        PSYCOPG_APP_DSN=f"postgresql://postgres@127.0.0.1:{closed_port()}/test",
        PSYCOPG_APP_SCHEMA=schema,
    )


def test_every_way_of_calling_psycopg_is_recorded_on_its_client_span(
    serve: Callable[..., Any], cassette_dir: Path, schema: str
) -> None:
    """conn.execute, cursor execute/executemany (a generator, and with RETURNING result sets), the
    transactions' statements and the unique violation: one ``sql`` call each, in order, on the
    instrumentor's CLIENT span, with typed rows, status and the error's diagnostics."""
    responses = _record(serve, schema, cassette_dir, SENT)
    assert [r.status_code for r in responses] == [200, 200, 200, 409, 200]
    by_path: dict[str, list[dict[str, Any]]] = {}
    for doc in load_cassettes(cassette_dir):
        by_path.setdefault(doc["request"]["path"], []).append(doc)
    calls = sql_calls(by_path["/calls/1"][0])
    assert {(c["library"], c["request"]["dialect"]) for c in calls} == {
        ("psycopg", "postgresql+psycopg")
    }
    assert [(c["request"]["operation"], c["request"]["statement"].split()[0]) for c in calls] == [
        ("execute", "INSERT"),
        ("executemany", "INSERT"),
        ("execute", "SELECT"),
        ("execute", "SELECT"),
        ("executemany", "INSERT"),
        ("execute", "INSERT"),
        ("execute", "INSERT"),
        ("execute", "INSERT"),
        ("execute", "SELECT"),
    ]
    assert calls[0]["response"]["status"] == "INSERT 0 1"
    assert calls[1]["request"]["parameters"] == [
        {"$type": "tuple", "items": [f"m1-{i}"]} for i in range(3)
    ]
    assert calls[1]["response"]["rowcount"] == 3
    assert [r["rows"] for r in calls[4]["response"]["results"]] == [
        [[True, "r1-a"]],
        [[True, "r1-b"]],
    ]
    violation = calls[7]
    assert violation["error"]["type"] == "psycopg.errors.UniqueViolation"
    assert violation["response"]["error_attributes"]["sqlstate"] == "23505"
    assert violation["response"]["error_attributes"]["constraint_name"] == "users_pkey"
    spans = {s["span_id"]: s for s in by_path["/calls/1"][0]["spans"]}
    assert {spans[c["span_id"]]["kind"] for c in calls} == {"CLIENT"}

    kinds = sql_calls(by_path["/kinds"][0])[0]
    assert [column[0] for column in kinds["response"]["description"]] == [
        "id", "u", "n", "t", "j", "i", "f", "s", "b", "raw", "arr", "nothing", "ip", "net", "r",
    ]  # fmt: skip
    assert kinds["response"]["rows"][0] == [
        1,
        {"$type": "uuid", "value": "6f1c1f9e-9b3a-4a57-8f0e-2f5d0c7a1b23"},
        {"$type": "decimal", "value": "12.345"},
        {"$type": "datetime", "value": "2026-01-22T10:30:00.123000+00:00", "zone": "Etc/UTC"},
        {"k": [1, "two"]},
        7,
        2.5,
        "text",
        True,
        {"$type": "bytes", "base64": "AP8="},
        [1, 2, 3],
        None,
        {"$type": "ip", "class": "IPv4Address", "value": "10.0.0.1"},
        {"$type": "ip", "class": "IPv4Network", "value": "10.0.0.0/8"},
        {"$type": "driver", "class": "psycopg.types.range.Range", "lower": 1, "upper": 5,
         "bounds": "[)", "empty": False},
    ]  # fmt: skip


def test_secret_parameters_and_columns_are_hidden(
    serve: Callable[..., Any], cassette_dir: Path, schema: str
) -> None:
    """A ``password_hash`` column: its ``%s`` parameter in the INSERT and its value in the RETURNING row are sealed."""
    _record(serve, schema, cassette_dir, [("POST", "/users/bob", {})])
    (doc,) = load_cassettes(cassette_dir)
    assert "argon2-hash-of-bob" not in json.dumps(doc)
    (call,) = sql_calls(doc)
    assert call["request"]["parameters"]["items"][0] == "bob"
    assert call["response"]["rows"][0][0] == "bob"
    hidden = (call["request"]["parameters"]["items"][1], call["response"]["rows"][0][1])
    assert all(str(value).startswith("[SEALED:") for value in hidden), hidden


def test_requests_replay_in_a_fresh_process_with_postgresql_unreachable(
    serve: Callable[..., Any], cassette_dir: Path, schema: str
) -> None:
    """Byte-identical responses (tuples, dicts, namedtuples, typed values, result sets, the unique
    violation's class, message, SQLSTATE and constraint), each request's calls all answered, and
    no socket connect: the lifespan's pool and the request's own connection are stand-ins."""
    recorded = _record(serve, schema, cassette_dir, SENT)
    replayed, stderr = _replay_fresh(cassette_dir, schema, lambda url: send(url, SENT))
    assert_replayed_alike(recorded, replayed, stderr, SENT)
    assert CONNECTS.findall(stderr) == []
    kinds = replayed[0].json()
    assert kinds["dict"].startswith("{'id': 1, 'u': UUID('6f1c1f9e-9b3a-4a57-8f0e-2f5d0c7a1b23')")
    assert kinds["namedtuple"].startswith("[Row(id=1, u=UUID(")
    assert "UniqueViolation" in replayed[3].json()["error"]
    assert replayed[4].json()["fetches"].startswith("({'n': 1, 'times': 2}, [{'n': 2, 'times': 4}]")
    assert "UniqueViolation" in replayed[4].json()["rolled_back"]
    assert replayed[4].json()["after"] == "[Row(c=0)]"


def test_the_asyncio_api_is_recorded_on_its_client_spans(
    serve: Callable[..., Any], cassette_dir: Path, schema: str
) -> None:
    """AsyncConnectionPool and AsyncConnection.connect: each execute and executemany one call, in order."""
    (response,) = _record(serve, schema, cassette_dir, [("GET", "/async/3", {})])
    assert response.status_code == 200
    (doc,) = load_cassettes(cassette_dir)
    calls = sql_calls(doc)
    assert [(c["library"], c["request"]["operation"]) for c in calls] == [
        ("psycopg", "execute"),
        ("psycopg", "execute"),
        ("psycopg", "executemany"),
        ("psycopg", "execute"),
        ("psycopg", "execute"),
        ("psycopg", "execute"),
        ("psycopg", "execute"),
    ]
    assert calls[1]["response"]["rows"] == [[1, 3], [2, 6], [3, 9]]
    assert calls[5]["error"]["type"] == "psycopg.errors.UniqueViolation"
    spans = {s["span_id"]: s for s in doc["spans"]}
    assert {spans[c["span_id"]]["kind"] for c in calls} == {"CLIENT"}


@pytest.mark.parametrize("route", ["/item", "/async-item"])
def test_twenty_five_concurrent_requests_record_and_replay_their_own_calls(
    serve: Callable[..., Any], cassette_dir: Path, schema: str, route: str
) -> None:
    """25 requests at once on the pool (sync routes in threads, or async on the AsyncConnectionPool):
    each cassette holds its own statement, and each replay gets its own row."""
    paths = [f"{route}/{n}" for n in range(25)]

    config = TraceConfig(mode="record", cassette_dir=str(cassette_dir))
    server = serve(create_app(DSN, schema, config), lifespan="on")
    recorded = get_at_once(server.url, paths, timeout=60)
    server.stop()
    assert timetracer_otel.flush(30)
    assert [r.json() for r in recorded] == [{"n": n, "value": n * 10 + 1} for n in range(25)]
    assert sorted(
        (doc["request"]["path"], [c["request"]["parameters"]["items"] for c in doc["calls"]])
        for doc in load_cassettes(cassette_dir)
    ) == sorted((f"{route}/{n}", [[n]]) for n in range(25))

    replayed, stderr = _replay_fresh(
        cassette_dir, schema, lambda url: get_at_once(url, paths, timeout=60)
    )
    for before, after in zip(recorded, replayed, strict=True):
        assert_same_response(before, after)
    assert len([r for r in REPLAYED.findall(stderr) if r[0] == "OK" and r[7] == "same"]) == 25, (
        stderr
    )
    assert CONNECTS.findall(stderr) == []


def test_a_changed_parameter_raises_a_mismatch_at_the_call_site(
    serve: Callable[..., Any], cassette_dir: Path, schema: str
) -> None:
    """``/item/4`` replayed from ``/item/3``'s cassette: the execute is refused, naming the recorded call."""
    _record(serve, schema, cassette_dir, [("GET", "/item/3", {})])
    (cassette,) = cassette_dir.rglob("*.json")
    (response,), stderr = _replay_fresh(
        cassette, schema, lambda url: send(url, [("GET", "/item/4", {})])
    )
    assert response.status_code == 500
    assert (
        "ReplayMismatchError: timetracer replay: no recorded call matches execute SELECT %s::int * 10 + 1 (psycopg)"
        in stderr
    )
    assert "parameters" in stderr and CONNECTS.findall(stderr) == []


def test_copy_and_server_side_cursors_are_refused_in_replay(
    serve: Callable[..., Any], cassette_dir: Path, schema: str
) -> None:
    """Recorded, COPY and a named cursor ran; replayed, each raises ReplayMismatchError saying what is
    not replayed, the report fails, and nothing is sent."""
    (recorded,) = _record(serve, schema, cassette_dir, [("GET", "/refused", {})])
    assert recorded.json() == {"copy": "done", "named": "[(1,)]"}
    (replayed,), stderr = _replay_fresh(
        cassette_dir, schema, lambda url: send(url, [("GET", "/refused", {})])
    )
    refused = {key: value.splitlines() for key, value in replayed.json().items()}
    assert refused["copy"][0] == (
        "ReplayMismatchError: timetracer replay: no recorded call matches copy COPY notes (body) FROM STDIN (psycopg)"
    )
    assert "COPY is not replayed" in replayed.json()["copy"]
    assert refused["named"][0] == (
        "ReplayMismatchError: timetracer replay: no recorded call matches cursor 'named' (psycopg)"
    )
    assert "server-side cursors are not replayed" in replayed.json()["named"]
    (report,) = REPLAYED.findall(stderr)
    assert (report[0], report[4], report[5]) == ("DIFF", "0", "2"), stderr
    assert "unmatched: timetracer replay: no recorded call matches copy COPY" in stderr
    assert CONNECTS.findall(stderr) == []


def test_sqlalchemy_on_psycopg_is_recorded_once_as_sqlalchemy_and_replays(
    serve: Callable[..., Any], cassette_dir: Path, schema: str
) -> None:
    """Both plugins on: SQLAlchemy's statements on psycopg are SQLAlchemy's calls only (the psycopg
    capture stands aside), and they replay with PostgreSQL unreachable, nothing connected."""
    (recorded,) = _record(serve, schema, cassette_dir, [("GET", "/sqlalchemy", {})])
    (doc,) = load_cassettes(cassette_dir)
    assert [(c["library"], c["request"]["operation"]) for c in sql_calls(doc)] == [
        ("sqlalchemy", "connect"),
        ("sqlalchemy", "execute"),
        ("sqlalchemy", "execute"),
    ]
    (replayed,), stderr = _replay_fresh(
        cassette_dir, schema, lambda url: send(url, [("GET", "/sqlalchemy", {})])
    )
    assert_same_response(recorded, replayed)
    (report,) = REPLAYED.findall(stderr)
    assert (report[0], report[4] == report[5], report[7]) == ("OK", True, "same"), stderr
    assert CONNECTS.findall(stderr) == []


def test_a_live_call_and_its_recording_share_their_key() -> None:
    """An execute's text, parameters and operation make its key; ``sql.SQL`` is keyed as its text."""
    from psycopg import sql

    request = psycopg_request("execute", "SELECT %s::int", [1])
    recorded = CassetteCall({"protocol": "sql", "request": json.loads(json.dumps(
        {**request, "parameters": {"$type": "tuple", "items": [1]}}
    ))})  # fmt: skip
    assert recorded_view(recorded).key == live_view(request).key
    composed = sql.SQL("SELECT {}::int").format(sql.Placeholder())
    assert live_view(psycopg_request("execute", composed, (1,))).key == live_view(request).key
    assert live_view(psycopg_request("executemany", "SELECT %s::int", [[1]])).key != (
        live_view(request).key
    )
    assert live_view(psycopg_request("execute", "SELECT %s::int", (1.0,))).key != (
        live_view(request).key
    )


def test_row_factories_build_their_rows_from_the_recording() -> None:
    """dict_row and namedtuple_row on a replay connection give the same rows as on PostgreSQL."""
    from timetracer_otel.cassette.values import encode_value
    from timetracer_otel.replayers import install_replayers
    from timetracer_otel.replayers.session import ReplaySession, activate, deactivate

    statement = "SELECT 1 AS a, 'x' AS b"
    with psycopg.connect(DSN) as conn:
        live = (
            conn.cursor(row_factory=dict_row).execute(statement).fetchall(),
            conn.cursor(row_factory=namedtuple_row).execute(statement).fetchone(),
        )
    response = {"description": [["a", 23], ["b", 25]], "rowcount": 1, "lastrowid": None}
    call = {
        "protocol": "sql",
        "library": "psycopg",
        "request": encode_value(psycopg_request("execute", statement, None)),
        "response": {**response, "rows": [[1, "x"]], "status": "SELECT 1"},
        "error": None,
    }
    install_replayers()
    token = activate(ReplaySession({"calls": [call, call]}, "in-memory"))
    try:
        conn = psycopg.connect(f"postgresql://postgres@127.0.0.1:{closed_port()}/test")
        replayed = (
            conn.cursor(row_factory=dict_row).execute(statement).fetchall(),
            conn.cursor(row_factory=namedtuple_row).execute(statement).fetchone(),
        )
    finally:
        deactivate(token)
    assert replayed == live
    assert type(replayed[1]) is type(live[1])


def _live_and_replayed(
    sync_part: Callable[[Any], tuple[Any, ...]],
    async_part: Callable[[Any], Any],
    recorded: Callable[[tuple[Any, ...]], list[dict[str, Any]]],
) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """What ``sync_part(conn)`` and ``async_part(async conn)`` give on PostgreSQL, then on replay
    connections (PostgreSQL unreachable) answering the calls ``recorded(live results)``."""
    import asyncio

    from timetracer_otel.replayers import install_replayers
    from timetracer_otel.replayers.session import ReplaySession, activate, deactivate

    async def on_async(url: str) -> Any:
        async with await psycopg.AsyncConnection.connect(url) as conn:
            return await async_part(conn)

    with psycopg.connect(DSN) as conn:
        live = (*sync_part(conn), asyncio.run(on_async(DSN)))
    install_replayers()
    token = activate(ReplaySession({"calls": recorded(live)}, "in-memory"))
    try:
        unreachable = f"postgresql://postgres@127.0.0.1:{closed_port()}/test"
        replayed = (*sync_part(psycopg.connect(unreachable)), asyncio.run(on_async(unreachable)))
    finally:
        deactivate(token)
    return live, replayed


def _answered(
    statement: str, description: list[list[Any]], rows: list[list[Any]]
) -> dict[str, Any]:
    """A recorded psycopg ``execute`` of ``statement`` answering ``rows``."""
    from timetracer_otel.cassette.values import encode_value

    return {
        "protocol": "sql",
        "library": "psycopg",
        "request": encode_value(psycopg_request("execute", statement, None)),
        "response": {
            "description": description,
            "rowcount": len(rows),
            "lastrowid": None,
            "rows": rows,
            "status": f"SELECT {len(rows)}",
        },
        "error": None,
    }


_ONE_ROW = "SELECT 1 AS a, 'x' AS b"


def _set_afterwards(conn: Any) -> tuple[Any, Any]:
    """A row factory set on a sync cursor before and after ``execute()``."""
    before = conn.cursor()
    before.row_factory = dict_row
    after = conn.cursor().execute(_ONE_ROW)
    after.row_factory = namedtuple_row
    return before.execute(_ONE_ROW).fetchall(), after.fetchone()


async def _set_on_async(conn: Any) -> Any:
    """A row factory set on an async cursor after it was made (fastapi-pagination's counts)."""
    cursor = conn.cursor(row_factory=dict_row)
    cursor.row_factory = psycopg.rows.tuple_row
    await cursor.execute(_ONE_ROW)
    return await cursor.fetchall()


def test_a_row_factory_set_on_a_cursor_after_it_was_made_builds_the_rows() -> None:
    """Assigned to a cursor, sync or async, before or after ``execute()``, a row factory makes
    the rows a replay cursor fetches, as on PostgreSQL (an async cursor kept the one it was made with)."""
    call = _answered(_ONE_ROW, [["a", 23], ["b", 25]], [[1, "x"]])
    live, replayed = _live_and_replayed(_set_afterwards, _set_on_async, lambda _: [call] * 3)
    assert replayed == live
    assert [type(rows) for rows in replayed] == [type(rows) for rows in live]


def _composed(conn: Any) -> tuple[str, str, Any]:
    """``psycopg.sql`` rendered for a connection and for its cursor, then executed."""
    from psycopg import sql

    query = sql.SQL("SELECT {} AS {} WHERE {} = {}").format(
        sql.Literal("it's"), sql.Identifier("a b"), sql.Literal(1), sql.Literal(1)
    )
    cursor = conn.cursor()
    return query.as_string(conn), query.as_string(cursor), cursor.execute(query).fetchall()


async def _composed_async(conn: Any) -> tuple[str, str]:
    from psycopg import sql

    query = sql.SQL("SELECT {}").format(sql.Identifier("users", "name"))
    return query.as_string(conn), query.as_string(conn.cursor())


def test_psycopg_sql_compositions_render_for_a_replay_connection_and_execute() -> None:
    """``sql.SQL(...).format(sql.Identifier(...), sql.Literal(...)).as_string(conn)`` needs
    libpq's escaping on a live connection: for a replay connection or its cursor (sync and
    async) it renders as on PostgreSQL, and the composed statement is answered."""
    live, replayed = _live_and_replayed(
        _composed,
        _composed_async,
        lambda live: [_answered(live[0], [["a b", 25]], [["it's"]])],
    )
    assert replayed == live
