"""PyMySQL, aiomysql and asyncmy used directly, through uvicorn: recorded against the real MariaDB at
127.0.0.1:3306 (a database of the test's own), replayed in a fresh ``TIMETRACER_MODE=replay``
process whose database address is a closed port, with not one socket connect."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from _replay import (
    CONNECTS,
    REPLAYED,
    Sent,
    assert_replayed_alike,
    run_fresh,
    send,
)
from _services import closed_port, mariadb_database
from apps.mysql_app import create_tables
from conftest import cassettes_by_request, load_cassettes, sql_calls

ANN = {"email": "ann@example.com", "password": "correct horse"}
SENT: list[Sent] = [
    ("POST", "/users", {"json": ANN}),
    ("POST", "/users", {"json": ANN}),
    ("POST", "/login", {"json": ANN}),
    ("POST", "/login", {"json": {**ANN, "password": "wrong"}}),
    ("POST", "/users/ann@example.com/notes", {"json": ["one", "two's", "three"]}),
    ("POST", "/users/nobody@example.com/notes", {"json": ["x"]}),
    ("GET", "/kinds", {}),
    ("GET", "/procedure/21", {}),
    ("GET", "/async/users/ann@example.com/notes", {}),
    ("POST", "/async/users", {"json": {"email": "bob@example.com", "password": "pw"}}),
    ("POST", "/async/users", {"json": {"email": "bob@example.com", "password": "pw"}}),
    ("POST", "/asyncmy/users", {"json": {"email": "cy@example.com", "password": "pw2"}}),
    ("POST", "/asyncmy/users", {"json": {"email": "cy@example.com", "password": "pw2"}}),
    ("POST", "/asyncmy/users/cy@example.com/notes", {"json": ["four", "five"]}),
    ("GET", "/asyncmy/kinds", {}),
]
STATUSES = [201, 409, 200, 403, 200, 404, 200, 200, 200, 201, 409, 201, 409, 200, 200]


@pytest.fixture
def database() -> Iterator[str]:
    with mariadb_database() as name:
        create_tables(name)
        yield name


def _record(database: str, directory: Path, sent: list[Sent]) -> list[httpx.Response]:
    responses, _ = run_fresh(
        "mysql_app:from_environment",
        lambda url: send(url, sent),
        TIMETRACER_MODE="record",
        TIMETRACER_DIR=str(directory),
        MYSQL_APP_DATABASE=database,
    )
    return responses


def _replay(
    cassette: Path, database: str, run: Callable[[str], list[httpx.Response]]
) -> tuple[list[httpx.Response], str]:
    """Replayed with the database at a closed port."""
    return run_fresh(
        "mysql_app:from_environment",
        run,
        TIMETRACER_MODE="replay",
        TIMETRACER_CASSETTE=str(cassette),
        MYSQL_APP_DATABASE=f"127.0.0.1:{closed_port()}/{database.split('/')[1]}",
    )


def test_statements_are_recorded_as_sent_with_their_results(
    cassette_dir: Path, database: str
) -> None:
    """Each statement sent is one ``sql`` call of its driver, its parameters quoted in as sent; the
    answer the driver's result (rows, description, each column's table, affected rows, insert
    id); a duplicate key keeps its class and MariaDB's error number; the connections' own set-up
    and commits are no calls; the password hash is sealed where it stands in a statement or a row."""
    responses = _record(database, cassette_dir, SENT)
    assert [r.status_code for r in responses] == STATUSES, [r.text for r in responses]
    docs = cassettes_by_request(cassette_dir)

    insert, select = sql_calls(docs[("POST", "/users")][0])
    assert (insert["library"], insert["request"]["dialect"]) == ("pymysql", "mysql+pymysql")
    assert insert["request"]["statement"].startswith(
        "INSERT INTO users (id, email, password, created_at) VALUES ('"
    )
    assert "[SEALED:" in insert["request"]["statement"]
    assert (insert["response"]["rowcount"], insert["response"]["description"]) == (1, None)
    assert [c[0] for c in select["response"]["description"]] == ["id", "email", "created_at"]

    (duplicate,) = sql_calls(docs[("POST", "/users")][1])
    assert duplicate["error"]["type"] == "pymysql.err.IntegrityError"
    assert duplicate["response"]["error_attributes"]["args"][0] == 1062

    (lookup,) = sql_calls(docs[("POST", "/login")][0])
    assert str(lookup["response"]["rows"][0][1]).startswith("[SEALED:")

    find, many, joined = sql_calls(docs[("POST", "/users/ann@example.com/notes")][0])
    assert many["request"]["statement"].endswith("'one'),(") is False
    assert many["request"]["statement"].count("),(") == 2  # PyMySQL's one batched INSERT
    assert (many["response"]["rowcount"], many["response"]["lastrowid"]) == (3, 1)
    assert joined["response"]["tables"] == ["notes", "users", "notes"]

    (async_select,) = sql_calls(docs[("GET", "/async/users/ann@example.com/notes")][0])
    assert (async_select["library"], async_select["request"]["dialect"]) == (
        "aiomysql",
        "mysql+aiomysql",
    )
    assert async_select["response"]["rows"] == [["one"], ["two's"], ["three"]]
    spans = {
        s["span_id"]: s for s in docs[("GET", "/async/users/ann@example.com/notes")][0]["spans"]
    }
    client = spans[async_select["span_id"]]  # timetracer's AiomysqlInstrumentor's
    assert (client["name"], client["kind"], client["attributes"]["db.system"]) == (
        "SELECT",
        "CLIENT",
        "mysql",
    )
    assert [c["library"] for c in sql_calls(docs[("POST", "/async/users")][1])] == ["aiomysql"]

    insert, count = sql_calls(docs[("POST", "/asyncmy/users")][0])
    assert (insert["library"], insert["request"]["dialect"]) == ("asyncmy", "mysql+asyncmy")
    assert "[SEALED:" in insert["request"]["statement"]
    assert count["response"]["rows"] == [[3]]
    (duplicate,) = sql_calls(docs[("POST", "/asyncmy/users")][1])
    assert duplicate["error"]["type"] == "asyncmy.errors.IntegrityError"
    assert duplicate["response"]["error_attributes"]["args"][0] == 1062
    find, many, joined = sql_calls(docs[("POST", "/asyncmy/users/cy@example.com/notes")][0])
    assert many["request"]["statement"].count("),(") == 1  # asyncmy's one batched INSERT
    assert joined["response"]["tables"] == ["notes", "users", "notes", "users"]
    asyncmy_spans = {
        s["span_id"]: s for s in docs[("POST", "/asyncmy/users/cy@example.com/notes")][0]["spans"]
    }
    assert asyncmy_spans[many["span_id"]]["name"] == "INSERT"  # timetracer's AsyncmyInstrumentor's

    for doc in load_cassettes(cassette_dir):
        assert ANN["password"] not in json.dumps(doc)


def test_requests_replay_in_a_fresh_process_with_mariadb_unreachable(
    cassette_dir: Path, database: str
) -> None:
    """Byte-identical responses (DictCursor rows with ``table.column`` keys, MariaDB's types,
    ``lastrowid``, the duplicate key's error number, the procedure's rows, the login's token),
    every call answered, and no socket connect: the per-request connections and the lifespan's
    pool are stand-ins."""
    recorded = _record(database, cassette_dir, SENT)
    replayed, stderr = _replay(cassette_dir, database, lambda url: send(url, SENT))
    assert_replayed_alike(recorded, replayed, stderr, SENT)
    assert CONNECTS.findall(stderr) == []
    assert "'users.id'" in replayed[4].json()["notes"]
    assert replayed[7].json() == {"doubled": "[{'doubled': 42}]"}
    assert "1062" in replayed[1].json()["error"]
    assert "1062" in replayed[12].json()["error"]
    assert "'users.id'" in replayed[13].json()["notes"]
    assert "Decimal('12.345')" in replayed[14].json()["row"]


def test_a_changed_parameter_and_an_unbuffered_cursor_are_refused_in_replay(
    cassette_dir: Path, database: str
) -> None:
    """The kinds of another id: refused naming the recorded statement; an ``SSCursor``'s query:
    refused, saying why."""
    _record(database, cassette_dir, [("GET", "/stream", {})])
    (stream,), stderr = _replay(
        cassette_dir, database, lambda url: send(url, [("GET", "/stream", {})])
    )
    assert stream.json()["rows"].startswith(
        "ReplayMismatchError: timetracer replay: no recorded call matches execute SELECT id FROM kinds (pymysql)"
    )
    assert "unbuffered queries (SSCursor) are not replayed" in stream.json()["rows"]
    (report,) = REPLAYED.findall(stderr)
    assert report[0] == "DIFF", stderr
