"""psycopg2 used directly, through uvicorn: recorded against the real PostgreSQL at 127.0.0.1:5432
(a schema of the test's own), replayed in a fresh ``TIMETRACER_MODE=replay`` process whose DSN is
a closed port. libpq connects in C, where no socket audit sees it: a connection replay let through
would fail there, and the app (which retries its start-up connection for ever) would not start."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg2
import psycopg2.extras
import pytest
from _replay import REPLAYED, Sent, assert_replayed_alike, run_fresh, send
from _services import POSTGRES_ADMIN, closed_port, postgres_schemas
from apps.psycopg2_app import create_tables
from conftest import cassettes_by_request, load_cassettes, sql_calls
from psycopg2 import sql

from timetracer_otel import _psycopg2
from timetracer_otel.cassette.calls import CassetteCall
from timetracer_otel.cassette.values import encode_value
from timetracer_otel.protocols.sql import live_view, psycopg2_request, recorded_view

DSN = POSTGRES_ADMIN
ANN = {"email": "ann@example.com", "password": "correct horse"}
SENT: list[Sent] = [
    ("POST", "/posts", {"json": {"title": "first", "content": "hello"}}),
    ("POST", "/posts", {"json": {"title": "second", "content": "draft", "published": False}}),
    ("GET", "/posts", {}),
    ("GET", "/posts/1", {}),
    ("GET", "/posts/99", {}),
    ("PUT", "/posts/2", {"json": {"title": "second", "content": "done"}}),
    ("DELETE", "/posts/1", {}),
    ("DELETE", "/posts/1", {}),
    ("POST", "/users", {"json": ANN}),
    ("POST", "/users", {"json": ANN}),
    ("POST", "/login", {"json": ANN}),
    ("POST", "/login", {"json": {**ANN, "password": "wrong"}}),
    ("GET", "/kinds", {}),
    ("POST", "/posts/2/tags", {"json": ["a", "b's"]}),
    ("GET", "/stats", {}),
    ("GET", "/orm", {}),
]
STATUSES = [201, 201, 200, 200, 404, 200, 204, 404, 201, 409, 200, 403, 200, 200, 200, 200]


@pytest.fixture
def schema() -> Iterator[str]:
    """The test's own schema, with the app's tables; dropped after."""
    with postgres_schemas("") as name:
        create_tables(DSN, name)
        yield name


def _record(schema: str, directory: Path, sent: list[Sent]) -> list[httpx.Response]:
    responses, _ = run_fresh(
        "psycopg2_app:from_environment",
        lambda url: send(url, sent),
        PSYCOPG2_APP_SCHEMA=schema,
        TIMETRACER_MODE="record",
        TIMETRACER_DIR=str(directory),
        PSYCOPG2_APP_DSN=DSN,
    )
    return responses


def _replay(
    cassette: Path, schema: str, run: Callable[[str], list[httpx.Response]]
) -> tuple[list[httpx.Response], str]:
    """Replayed with the DSN at a closed port."""
    return run_fresh(
        "psycopg2_app:from_environment",
        run,
        PSYCOPG2_APP_SCHEMA=schema,
        TIMETRACER_MODE="replay",
        TIMETRACER_CASSETTE=str(cassette),
        PSYCOPG2_APP_DSN=f"postgresql://postgres@127.0.0.1:{closed_port()}/test",
    )


def test_every_way_of_calling_psycopg2_is_recorded(cassette_dir: Path, schema: str) -> None:
    """Each execute, executemany and callproc is one ``sql`` call of psycopg2, whatever the cursor
    class (the connection's ``RealDictCursor``, a pool's ``DictCursor`` and ``NamedTupleCursor``),
    with plain rows, the status, ``psycopg2.sql`` rendered, ``execute_values``' quoted statement,
    and the unique violation's class and ``pgcode``."""
    responses = _record(schema, cassette_dir, SENT)
    assert [r.status_code for r in responses] == STATUSES, [r.text for r in responses]
    docs = cassettes_by_request(cassette_dir)

    (created, _) = docs[("POST", "/posts")]
    (call,) = sql_calls(created)
    assert (call["library"], call["request"]["dialect"], call["request"]["operation"]) == (
        "psycopg2",
        "postgresql+psycopg2",
        "execute",
    )
    assert call["request"]["parameters"] == {"$type": "tuple", "items": ["first", "hello", True]}
    assert [c[0] for c in call["response"]["description"]] == [
        "id", "title", "content", "published", "created_at",
    ]  # fmt: skip
    assert call["response"]["rows"][0][:4] == [1, "first", "hello", True]
    assert call["response"]["status"] == "INSERT 0 1"

    (taken,) = docs[("POST", "/users")][1:]
    (violation,) = sql_calls(taken)
    assert violation["error"]["type"] == "psycopg2.errors.UniqueViolation"
    assert violation["response"]["dbapi_error"] == "IntegrityError"
    assert violation["response"]["error_attributes"]["pgcode"] == "23505"
    assert violation["response"]["diagnostics"]["constraint_name"] == "users_email_key"

    (tagged,) = docs[("POST", "/posts/2/tags")]
    values, many = sql_calls(tagged)
    assert values["request"]["statement"] == (
        "INSERT INTO tags (post_id, name) VALUES (2,'a'),(2,'b''s') RETURNING id, name"
    )
    assert values["response"]["rows"] == [[1, "a"], [2, "b's"]]
    # OpenTelemetry's span holds the statement execute_values made as bytes: kept as its text
    spans = {span["span_id"]: span for span in tagged["spans"]}
    assert spans[values["span_id"]]["attributes"]["db.statement"] == values["request"]["statement"]
    assert many["request"]["operation"] == "executemany"
    assert many["request"]["parameters"] == [
        {"$type": "tuple", "items": [2, "a-copy"]},
        {"$type": "tuple", "items": [2, "b's-copy"]},
    ]

    (stats,) = docs[("GET", "/stats")]
    composed, callproc, series = sql_calls(stats)
    assert composed["request"]["statement"] == (
        'SELECT count(*) FROM "posts" WHERE published = true'
    )
    assert (callproc["request"]["operation"], callproc["request"]["statement"]) == (
        "callproc",
        "lower",
    )
    assert callproc["response"]["rows"] == [["abc"]]
    assert series["response"]["rows"] == [[n] for n in range(1, 6)]

    (orm,) = docs[("GET", "/orm")]
    assert {c["library"] for c in sql_calls(orm)} == {"sqlalchemy"}


def test_password_hashes_are_sealed_in_parameters_and_rows(cassette_dir: Path, schema: str) -> None:
    """The ``password`` column: the hash in the sign-up's INSERT and the login's row is sealed, and
    the plain password is in no cassette."""
    _record(schema, cassette_dir, SENT[8:11])
    docs = cassettes_by_request(cassette_dir)
    (signup,) = sql_calls(docs[("POST", "/users")][0])
    (lookup,) = sql_calls(docs[("POST", "/login")][0])
    hidden = (signup["request"]["parameters"]["items"][2], lookup["response"]["rows"][0][2])
    assert all(str(value).startswith("[SEALED:") for value in hidden), hidden
    assert lookup["response"]["rows"][0][1] == ANN["email"]
    for doc in load_cassettes(cassette_dir):
        assert ANN["password"] not in json.dumps(doc)


def test_requests_replay_in_a_fresh_process_with_postgresql_unreachable(
    cassette_dir: Path, schema: str
) -> None:
    """Byte-identical responses (RealDictRow, DictRow, namedtuples, PostgreSQL's types, the 404s,
    the unique violation's class and pgcode, the login's signed token), each request's calls all
    answered; the connection opened at start-up and the pool's are stand-ins."""
    recorded = _record(schema, cassette_dir, SENT)
    replayed, stderr = _replay(cassette_dir, schema, lambda url: send(url, SENT))
    assert_replayed_alike(recorded, replayed, stderr, SENT)
    kinds = replayed[12].json()
    assert kinds["dict"].startswith("{'id': 1, 'u': '6f1c1f9e-9b3a-4a57-8f0e-2f5d0c7a1b23'")
    assert kinds["by_index"] == "(1, Decimal('12.345'), b'\\x00\\xff')"
    assert replayed[9].json()["error"] == (
        "(<class 'psycopg2.errors.UniqueViolation'>, '23505', 'users_email_key',"
        " 'Key (email)=(ann@example.com) already exists.')"
    )
    assert replayed[10].json()["access_token"].count(".") == 2


def test_a_changed_parameter_raises_a_mismatch_at_the_call_site(
    cassette_dir: Path, schema: str
) -> None:
    """``/posts/3`` replayed from ``/posts/1``'s cassette: the execute is refused, naming the recorded call."""
    _record(schema, cassette_dir, [SENT[0], ("GET", "/posts/1", {})])
    (cassette,) = [p for p in cassette_dir.rglob("*.json") if "GET" in p.name]
    (response,), stderr = _replay(
        cassette, schema, lambda url: send(url, [("GET", "/posts/3", {})])
    )
    assert response.status_code == 500
    assert (
        "ReplayMismatchError: timetracer replay: no recorded call matches execute SELECT * FROM posts WHERE id = %s (psycopg2)"
        in stderr
    ), stderr
    assert 'parameters: recorded ["1"], this call ["3"]' in stderr


def test_named_cursors_and_copy_are_refused_in_replay(cassette_dir: Path, schema: str) -> None:
    """Recorded, a named cursor and copy_from ran; replayed, each raises ReplayMismatchError saying
    what is not replayed, and the report fails."""
    (recorded,) = _record(schema, cassette_dir, [("GET", "/refused", {})])
    # (OrderedDict's repr, which RealDictRow has, changed in Python 3.12)
    named = repr([psycopg2.extras.RealDictRow([("one", 1)])])
    assert recorded.json() == {"named": named, "copy": "done"}
    (replayed,), stderr = _replay(
        cassette_dir, schema, lambda url: send(url, [("GET", "/refused", {})])
    )
    refused = replayed.json()
    assert refused["named"].startswith(
        "ReplayMismatchError: timetracer replay: no recorded call matches cursor 'named' (psycopg2)"
    )
    assert "server-side cursors are not replayed" in refused["named"]
    assert refused["copy"].startswith(
        "ReplayMismatchError: timetracer replay: no recorded call matches copy_from tags (psycopg2)"
    )
    (report,) = REPLAYED.findall(stderr)
    assert report[0] == "DIFF", stderr


def test_a_live_call_and_its_recording_share_their_key() -> None:
    """An execute's text, parameters and operation make its key; ``psycopg2.sql`` is keyed as its text."""
    request = psycopg2_request("execute", "SELECT %s::int", [1])
    recorded = CassetteCall(
        {"protocol": "sql", "request": json.loads(json.dumps(encode_value(request)))}
    )
    assert recorded_view(recorded).key == live_view(request).key
    composed = sql.SQL("SELECT {}::int").format(sql.Placeholder())
    assert live_view(psycopg2_request("execute", _psycopg2.statement(composed), (1,))).key == (
        live_view(request).key
    )
    assert live_view(psycopg2_request("execute", "SELECT %s::int", (1.0,))).key != (
        live_view(request).key
    )


@pytest.mark.parametrize(
    "cursor_class",
    [
        psycopg2.extensions.cursor,
        psycopg2.extras.RealDictCursor,
        psycopg2.extras.DictCursor,
        psycopg2.extras.NamedTupleCursor,
    ],
)
def test_cursor_classes_build_their_rows_from_the_recording(cursor_class: type) -> None:
    """On a replay connection, each cursor class of psycopg2 gives the rows, description and
    ``mogrify`` it gives on PostgreSQL."""
    from timetracer_otel.replayers import install_replayers
    from timetracer_otel.replayers.session import ReplaySession, activate, deactivate

    statement = "SELECT 1 AS a, 'x' AS b, NULL AS \"2c\""
    quoted = ("SELECT %s, %s, %s", ("it's é\\", [1, None], b"\x00"))

    def run(conn: Any) -> tuple[Any, ...]:
        with conn.cursor(cursor_factory=cursor_class) as cur:
            cur.execute(statement)
            rows = cur.fetchall()
            return (
                rows,
                [tuple(row) for row in rows],
                [(c.name, c.type_code) for c in cur.description],
                cur.mogrify(*quoted),
                type(rows[0]).__name__,
            )

    live_conn = psycopg2.connect(DSN)
    live = run(live_conn)
    live_conn.close()
    response = {"description": [["a", 23], ["b", 25], ["2c", 25]], "rowcount": 1}
    call = {
        "protocol": "sql",
        "library": "psycopg2",
        "request": encode_value(psycopg2_request("execute", statement, None)),
        "response": {**response, "rows": [[1, "x", None]], "status": "SELECT 1"},
        "error": None,
    }
    install_replayers()
    token = activate(ReplaySession({"calls": [call]}, "in-memory"))
    try:
        replayed = run(psycopg2.connect(f"postgresql://postgres@127.0.0.1:{closed_port()}/test"))
    finally:
        deactivate(token)
    assert replayed == live
