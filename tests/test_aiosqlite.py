"""aiosqlite used directly, through uvicorn: recorded in one process on a SQLite file, replayed in
a fresh ``TIMETRACER_MODE=replay`` process on a new, empty database file (the lifespan creates
the schema there for real): every response the same, so every answer came from the cassette,
and the recorded database is left as it was."""

from __future__ import annotations

import json
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from _replay import (
    CONNECTS,
    REPLAYED,
    Sent,
    assert_same_response,
    audited_uvicorn_process,
    send,
    uvicorn_process,
)
from conftest import load_cassettes

from timetracer_otel.cassette.calls import CassetteCall
from timetracer_otel.cassette.errors import CassetteError
from timetracer_otel.protocols.sql import (
    AIOSQLITE,
    live_view,
    recorded_response,
    recorded_view,
    sqlite_request,
)

SENT: list[Sent] = [
    ("POST", "/users", {"json": {"email": "ann@example.com", "password": "correct horse 1"}}),
    ("POST", "/users", {"json": {"email": "ann@example.com", "password": "another one 2"}}),
    ("POST", "/users", {"json": {"email": "bob@example.com", "password": "battery staple 3"}}),
    ("GET", "/users/1", {}),
    ("GET", "/users/7", {}),
    ("POST", "/users/1/notes", {"json": {"body": "buy milk"}}),
    ("POST", "/users/3/notes", {"json": {"body": "call ann"}}),
    ("POST", "/import", {"json": {"user": 1, "bodies": ["alpha", "beta", "gamma"]}}),
    ("GET", "/users/1/notes", {}),
    ("GET", "/notes/search", {"params": {"q": "a"}}),
    ("GET", "/notes/first", {}),
    ("GET", "/sqlalchemy", {}),
]
# sqlite3's errors name their code from Python 3.11 on
ERROR_NAME = "SQLITE_CONSTRAINT_UNIQUE" if sys.version_info >= (3, 11) else None


def _record(directory: Path, database: Path, sent: list[Sent]) -> list[httpx.Response]:
    env = {
        "TIMETRACER_MODE": "record",
        "TIMETRACER_DIR": str(directory),
        "AIOSQLITE_APP_DB": str(database),
    }
    with uvicorn_process(env, "aiosqlite_app:from_environment") as server:
        responses = send(server.url, sent)
    assert [r for r in responses if r.status_code >= 500] == [], server.stderr
    return responses


def _replay(
    cassettes: Path, database: Path, run: Callable[[str], list[httpx.Response]]
) -> tuple[list[httpx.Response], str]:
    env = {
        "TIMETRACER_MODE": "replay",
        "TIMETRACER_CASSETTE": str(cassettes),
        "AIOSQLITE_APP_DB": str(database),
    }
    with audited_uvicorn_process(env, "aiosqlite_app:from_environment") as server:
        responses = run(server.url)
    return responses, server.stderr


def _sql_calls(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [call for call in doc["calls"] if call["protocol"] == "sql"]


def _rows(database: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(database) as connection:
        return [
            *connection.execute(
                "SELECT id, email, password_hash, created_at FROM users ORDER BY id"
            ),
            *connection.execute("SELECT * FROM notes ORDER BY id"),
        ]


def test_every_way_of_calling_aiosqlite_is_one_call_on_its_client_span(
    cassette_dir: Path, tmp_path: Path
) -> None:
    """execute_insert, execute (connection and cursor), execute_fetchall, executemany (a generator)
    and the UNIQUE violation: one ``sql`` call each, on the CLIENT span of the statement, with the
    rows the application read, typed, and the password hash sealed. SQLAlchemy's statements on
    aiosqlite are SQLAlchemy's calls alone."""
    responses = _record(cassette_dir, tmp_path / "app.db", SENT)
    assert [r.status_code for r in responses] == [
        201,
        409,
        201,
        200,
        404,
        201,
        201,
        200,
        200,
        200,
        200,
        200,
    ]
    docs = {
        (d["request"]["method"], d["request"]["path"], d["response"]["status"]): d
        for d in load_cassettes(cassette_dir)
    }
    assert len(docs) == len(SENT) - 1  # /users 201 twice, one key

    (conflict,) = _sql_calls(docs[("POST", "/users", 409)])
    assert conflict["request"]["operation"] == "execute_insert"
    assert conflict["error"]["type"] == "sqlite3.IntegrityError"
    assert conflict["response"]["dbapi_error"] == "IntegrityError"
    assert conflict["response"]["error_attributes"].get("sqlite_errorname") == ERROR_NAME
    assert "pbkdf2$" not in json.dumps(docs[("POST", "/users", 201)])

    (imported,) = [d for k, d in docs.items() if k[1] == "/import"]
    assert [
        (c["library"], c["request"]["operation"], c["request"]["statement"].split()[0])
        for c in _sql_calls(imported)
    ] == [
        ("aiosqlite", "execute", "BEGIN"),
        ("aiosqlite", "executemany", "INSERT"),
        ("aiosqlite", "execute", "SELECT"),
    ]
    assert len(_sql_calls(imported)[1]["request"]["parameters"]) == 3
    assert _sql_calls(imported)[2]["response"]["rows"] == [[5]]

    (listed,) = _sql_calls(docs[("GET", "/users/1/notes", 200)])
    assert listed["request"]["operation"] == "execute_fetchall"
    assert listed["response"]["rows"][0][2:4] == [0.5, {"$type": "bytes", "base64": "AP8="}]
    assert listed["response"]["complete"] is True

    (first,) = _sql_calls(docs[("GET", "/notes/first", 200)])
    assert len(first["response"]["rows"]) == 1 and first["response"]["complete"] is False

    through = [
        (c["library"], c["request"]["operation"])
        for c in _sql_calls(docs[("GET", "/sqlalchemy", 200)])
    ]
    assert through == [("sqlalchemy", "connect"), ("sqlalchemy", "execute")]  # not aiosqlite's too

    spans = {s["span_id"]: s for s in docs[("GET", "/users/1", 200)]["spans"]}
    (call,) = _sql_calls(docs[("GET", "/users/1", 200)])
    assert (spans[call["span_id"]]["kind"], spans[call["span_id"]]["name"]) == ("CLIENT", "SELECT")


def test_requests_replay_on_an_empty_database_file_and_write_nothing(
    cassette_dir: Path, tmp_path: Path
) -> None:
    """Replayed on a new database (the schema the lifespan makes, no rows), every response is the
    recorded one: rows, ``aiosqlite.Row`` keys, the dict row factory, ``async for``, ids, the
    IntegrityError's class and code. Replayed on the recorded database, nothing in it changes;
    replayed where the database's folder does not exist, an in-memory database stands in."""
    database = tmp_path / "app.db"
    recorded = _record(cassette_dir, database, SENT)
    before = _rows(database)
    for target in (tmp_path / "empty.db", database, tmp_path / "gone" / "app.db"):
        replayed, stderr = _replay(cassette_dir, target, lambda url: send(url, SENT))
        for was, now in zip(recorded, replayed, strict=True):
            assert_same_response(was, now)
        reports = REPLAYED.findall(stderr)
        assert [(r[0], r[4] == r[5], r[6], r[7]) for r in reports] == [
            ("OK", True, "0", "same")
        ] * len(SENT), stderr
        assert CONNECTS.findall(stderr) == []
    stands_in = (
        f"timetracer: replay cannot open the SQLite database {tmp_path / 'gone' / 'app.db'} (unable"
        " to open database file): an empty in-memory database stands in for it"
    )
    assert stderr.count(stands_in) == 1  # once, though the app connects again for each request
    assert _rows(database) == before
    assert _rows(tmp_path / "empty.db") == []
    assert "'email': 'ann@example.com'" in replayed[9].json()["found"]
    assert replayed[1].json()["code"] == ERROR_NAME


def test_a_changed_parameter_and_reading_past_the_recorded_rows_are_refused(
    cassette_dir: Path, tmp_path: Path
) -> None:
    """``/users/2`` replayed from ``/users/1``'s cassette is refused at the execute, naming the
    recorded call; a cassette whose result was read no row deep refuses the row ``/users/1`` reads;
    a damaged answer is a CassetteError naming the file."""
    database = tmp_path / "app.db"
    _record(cassette_dir, database, [SENT[0], ("GET", "/users/1", {})])
    (cassette,) = [p for p in cassette_dir.rglob("*.json") if "GET" in p.name]
    (response,), stderr = _replay(
        cassette, database, lambda url: send(url, [("GET", "/users/2", {})])
    )
    assert response.status_code == 500
    assert (
        "no recorded call matches execute SELECT id, email, created_at FROM users WHERE id = ? (aiosqlite)"
        in stderr
    )
    assert "parameters" in stderr

    doc = json.loads(cassette.read_text())
    (call,) = _sql_calls(doc)
    answer = dict(call["response"])
    call["response"].update(rows=[], complete=False)
    cassette.write_text(json.dumps(doc))
    (response,), stderr = _replay(
        cassette, database, lambda url: send(url, [("GET", "/users/1", {})])
    )
    assert response.status_code == 500
    assert "execute SELECT id, email, created_at FROM users WHERE id = ? (more rows)" in stderr
    assert "the recording stopped fetching this result here" in stderr

    for damaged, problem in (
        ({"description": 7}, "the answer to execute SELECT id, email, created_at FROM users WHERE"
         " id = ? is no driver's: its description is no list of columns"),
        ({"rows": 5}, "its calls cannot be read (TypeError: 'int' object is not iterable)"),
    ):  # fmt: skip
        hostile = tmp_path / "hostile.json"  # outside cassette_dir, whose files must stay valid
        call["response"] = {**answer, **damaged}
        hostile.write_text(json.dumps(doc))
        (response,), stderr = _replay(
            hostile, database, lambda url: send(url, [("GET", "/users/1", {})])
        )
        assert response.status_code == 500
        assert f"CassetteError: timetracer: cannot use cassette {hostile}: {problem}" in stderr


@pytest.mark.parametrize(
    ("response", "problem"),
    [
        ([1], "is no driver's: list instead of an object"),
        ({"description": 7}, "is no driver's: its description is no list of columns"),
        ({"description": [[]]}, "is no driver's: its description is no list of columns"),
        ({"rows": [1, 2]}, "is no driver's: its rows are no list of rows"),
        ({"rowcount": "3"}, "is no driver's: its rowcount is no integer"),
        ({"results": [{"rows": "x"}]}, "is no driver's: its rows are no list of rows"),
        ({"rows": [[{"$type": "nope"}]]}, "cannot be read: unknown typed value 'nope'"),
    ],
)
def test_a_recorded_answer_no_driver_gives_is_a_cassette_error(response: Any, problem: str) -> None:
    """Every SQL replayer reads its answers here: a damaged or hostile one names the file and the call."""
    request = sqlite_request(AIOSQLITE, "execute", "SELECT ?", (1,))
    call = CassetteCall({"protocol": "sql", "request": request, "response": response})
    view = live_view(request)
    with pytest.raises(CassetteError) as raised:
        recorded_response(call, recorded_view(call), view, "hostile.json")
    assert str(raised.value) == (
        f"timetracer: cannot use cassette hostile.json: the answer to execute SELECT ? {problem}"
    )


def test_a_live_call_and_its_recording_share_their_key() -> None:
    """A list and a tuple of parameters send the same; the operation and the values make the key."""
    request = sqlite_request(AIOSQLITE, "execute", "SELECT ?", [1])
    recorded = CassetteCall({"protocol": "sql", "request": json.loads(json.dumps(
        {**request, "parameters": {"$type": "tuple", "items": [1]}}
    ))})  # fmt: skip
    assert recorded_view(recorded).key == live_view(request).key
    assert (
        live_view(sqlite_request(AIOSQLITE, "execute", "SELECT ?", (1,))).key
        == live_view(request).key
    )
    assert (
        live_view(sqlite_request(AIOSQLITE, "execute_fetchall", "SELECT ?", (1,))).key
        != live_view(request).key
    )
    assert (
        live_view(sqlite_request(AIOSQLITE, "execute", "SELECT ?", ("1",))).key
        != live_view(request).key
    )
