"""sqlite3 used directly, through uvicorn with synchronous routes: recorded in one process on a
SQLite file, replayed in a fresh ``TIMETRACER_MODE=replay`` process on a new, empty database
file, on the recorded one (which stays as it was) and where the file's folder does not exist."""

from __future__ import annotations

import contextlib
import sqlite3
import sys
from pathlib import Path
from typing import Any

import httpx
from _replay import (
    CONNECTS,
    REPLAYED,
    Sent,
    assert_same_response,
    audited_uvicorn_process,
    send,
    uvicorn_process,
)
from apps.sqlite3_app import rows_of
from conftest import load_cassettes

from timetracer_otel import _sqlite3, wrapper_layers
from timetracer_otel.capture import sqlite3 as sqlite3_capture

SENT: list[Sent] = [
    ("POST", "/accounts/ann", {}),
    ("POST", "/accounts/ann", {}),
    ("POST", "/accounts/bob", {}),
    (
        "POST",
        "/accounts/1/bookmarks",
        {"params": {"url": "https://a.example/x", "tags": "news,tech"}},
    ),
    ("POST", "/accounts/1/bookmarks", {"params": {"url": "https://b.example/y", "tags": "tech"}}),
    ("GET", "/accounts/1/bookmarks", {}),
    ("GET", "/tags", {}),
    ("GET", "/newest", {}),
    ("GET", "/sqlalchemy", {}),
]
# sqlite3's errors name their code from Python 3.11 on
ERROR_NAME = "SQLITE_CONSTRAINT_UNIQUE" if sys.version_info >= (3, 11) else None


def _record(directory: Path, database: Path) -> list[httpx.Response]:
    env = {
        "TIMETRACER_MODE": "record",
        "TIMETRACER_DIR": str(directory),
        "SQLITE3_APP_DB": str(database),
    }
    with uvicorn_process(env, "sqlite3_app:from_environment") as server:
        responses = send(server.url, SENT)
    assert [r for r in responses if r.status_code >= 500] == [], server.stderr
    return responses


def _sql_calls(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [call for call in doc["calls"] if call["protocol"] == "sql"]


def test_statements_are_recorded_with_the_rows_read(cassette_dir: Path, tmp_path: Path) -> None:
    """The connection's shortcuts, a cursor's execute, executemany (a generator), iteration,
    fetchmany then fetchall on an application's cursor class, the UNIQUE violation: one ``sql``
    call each under ``sqlite+pysqlite``, with the rows the application read; the hash sealed;
    SQLAlchemy's statements on sqlite3 are SQLAlchemy's alone."""
    responses = _record(cassette_dir, tmp_path / "app.db")
    assert [r.status_code for r in responses] == [201, 409, 201, 201, 201, 200, 200, 200, 200]
    docs = {
        (d["request"]["method"], d["request"]["path"], d["response"]["status"]): d
        for d in load_cassettes(cassette_dir)
    }

    (conflict,) = _sql_calls(docs[("POST", "/accounts/ann", 409)])
    assert (conflict["library"], conflict["request"]["dialect"]) == ("sqlite3", "sqlite+pysqlite")
    assert conflict["error"]["type"] == "sqlite3.IntegrityError"
    assert conflict["response"]["dbapi_error"] == "IntegrityError"
    assert conflict["response"]["error_attributes"].get("sqlite_errorname") == ERROR_NAME
    (signed_up,) = _sql_calls(docs[("POST", "/accounts/ann", 201)])
    assert signed_up["request"]["parameters"]["items"][0] == "ann"
    assert signed_up["request"]["parameters"]["items"][1].startswith("[SEALED:")

    saved = [d for k, d in docs.items() if k[1] == "/accounts/1/bookmarks" and k[0] == "POST"][0]
    assert [c["request"]["operation"] for c in _sql_calls(saved)] == ["execute", "executemany"]
    assert _sql_calls(saved)[0]["request"]["parameters"]["at"]["$type"] == "datetime"

    (listed,) = _sql_calls(docs[("GET", "/accounts/1/bookmarks", 200)])
    assert [row[2] for row in listed["response"]["rows"]] == [2, 1]
    assert listed["response"]["rows"][0][1]["$type"] == "datetime"  # PARSE_DECLTYPES' value
    assert listed["response"]["complete"] is True

    (tagged,) = _sql_calls(docs[("GET", "/tags", 200)])
    assert tagged["response"]["rows"] == [["news", 1], ["tech", 2]]

    (newest,) = _sql_calls(docs[("GET", "/newest", 200)])
    assert len(newest["response"]["rows"]) == 1 and newest["response"]["complete"] is False

    through = _sql_calls(docs[("GET", "/sqlalchemy", 200)])
    assert [(c["library"], c["request"]["operation"]) for c in through] == [
        ("sqlalchemy", "connect"),
        ("sqlalchemy", "execute"),
    ]
    spans = {s["span_id"]: s for s in docs[("GET", "/tags", 200)]["spans"]}
    assert (spans[tagged["span_id"]]["kind"], spans[tagged["span_id"]]["name"]) == (
        "CLIENT",
        "SELECT",
    )


def test_requests_replay_without_the_database(cassette_dir: Path, tmp_path: Path) -> None:
    """Every response the recorded one, replayed on a new empty file, on the recorded file (left
    as it was) and where the file's folder is gone; every call answered, no socket connected."""
    database = tmp_path / "app.db"
    recorded = _record(cassette_dir, database)
    before = rows_of(str(database))
    for target in (tmp_path / "empty.db", database, tmp_path / "gone" / "app.db"):
        env = {
            "TIMETRACER_MODE": "replay",
            "TIMETRACER_CASSETTE": str(cassette_dir),
            "SQLITE3_APP_DB": str(target),
        }
        with audited_uvicorn_process(env, "sqlite3_app:from_environment") as server:
            replayed = send(server.url, SENT)
        for was, now in zip(recorded, replayed, strict=True):
            assert_same_response(was, now)
        reports = REPLAYED.findall(server.stderr)
        assert [(r[0], r[4] == r[5], r[6], r[7]) for r in reports] == [
            ("OK", True, "0", "same")
        ] * len(SENT), server.stderr
        assert CONNECTS.findall(server.stderr) == []
    stands_in = (
        f"timetracer: replay cannot open the SQLite database {tmp_path / 'gone' / 'app.db'} (unable"
        " to open database file): an empty in-memory database stands in for it"
    )
    assert (
        server.stderr.count(stands_in) == 1
    )  # once, though the app connects again for each request
    assert rows_of(str(database)) == before
    assert rows_of(str(tmp_path / "empty.db")) == []
    assert replayed[1].json()["code"] == ERROR_NAME
    assert replayed[6].json()["first"] == "[{'tag': 'news', 'n': 1}, {'tag': 'tech', 'n': 2}]"


def test_connections_keep_the_applications_classes(tmp_path: Path) -> None:
    """A connection and cursor class of the application's own are kept, timetracer's mixed in
    under them: their own methods run as before (a ``cursor()`` choosing its cursor class, an
    ``execute()`` of its own), their attributes are there, and their statements are recorded."""
    executed: list[str] = []

    class Audited(sqlite3.Cursor):
        audited = True

    class Logged(sqlite3.Connection):
        opened = True

        def cursor(self, factory: Any = Audited) -> Any:
            return super().cursor(factory)

        def execute(self, sql: str, *parameters: Any) -> Any:
            executed.append(sql)
            return super().execute(sql, *parameters)

    sqlite3_capture.install()
    try:
        connection = sqlite3.connect(str(tmp_path / "x.db"), factory=Logged)
        assert isinstance(connection, Logged) and isinstance(connection, _sqlite3.Connection)
        assert connection.opened
        cursor = connection.execute("SELECT 1 AS one")
        assert executed == ["SELECT 1 AS one"]
        assert isinstance(cursor, Audited) and isinstance(cursor, _sqlite3.Cursor)
        assert cursor.audited and cursor.fetchall() == [(1,)]
        plain = sqlite3.connect(":memory:", 5.0, 0, "DEFERRED", True, sqlite3.Connection)
        assert type(plain) is _sqlite3.Connection
        connection.close()
        plain.close()
    finally:
        sqlite3_capture.uninstall()
    assert not wrapper_layers.is_installed(sqlite3, "connect")


def test_a_tools_own_database_is_left_alone(tmp_path: Path) -> None:
    """coverage.py keeps its measurements in SQLite while the suite runs (at every test, with
    dynamic contexts): a connection it opens is sqlite3's own, never recorded nor answered."""
    sqlite3_capture.install()
    try:
        tool: dict[str, Any] = {"__name__": "coverage.sqlitedb", "sqlite3": sqlite3}
        exec("def open_data(path):\n    return sqlite3.connect(path)", tool)  # noqa: S102
        assert type(tool["open_data"](str(tmp_path / ".coverage"))) is sqlite3.Connection
        assert type(sqlite3.connect(str(tmp_path / "app.db"))) is _sqlite3.Connection
    finally:
        sqlite3_capture.uninstall()


def test_a_failed_shortcut_statement_holds_no_lock_once_its_connection_closed(
    tmp_path: Path,
) -> None:
    """``conn.execute`` failing (a UNIQUE violation) while its error is kept (pytest keeps a failed
    test's): once the connection is closed, another connection writes, as without timetracer."""
    database = str(tmp_path / "locks.db")
    kept: list[BaseException] = []
    sqlite3_capture.install()
    try:
        with contextlib.closing(sqlite3.connect(database)) as first:
            first.execute("CREATE TABLE t (k PRIMARY KEY)")
            first.execute("INSERT INTO t VALUES (1)")
            first.commit()
        failing = sqlite3.connect(database)
        try:
            failing.execute("INSERT INTO t VALUES (1)")
        except sqlite3.IntegrityError as exc:
            kept.append(exc)
        failing.close()
        with contextlib.closing(sqlite3.connect(database, timeout=0.2)) as other:
            other.execute("INSERT INTO t VALUES (2)")
            other.commit()
            assert other.execute("SELECT k FROM t ORDER BY k").fetchall() == [(1,), (2,)]
    finally:
        sqlite3_capture.uninstall()
    assert kept and isinstance(kept[0], sqlite3.IntegrityError)
