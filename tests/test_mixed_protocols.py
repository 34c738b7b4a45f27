"""One request, four protocols: httpx to the upstream, SQLAlchemy on PostgreSQL and a SQLite
file, redis.asyncio, and pymongo against a Mongo wire-protocol server, in any order and all at
once, recorded through uvicorn and replayed with every one of them unreachable.

Also what a replaying process (``TIMETRACER_MODE=replay``) does with database calls made
outside every replayed request: SQLite runs for real (the app's own set-up), PostgreSQL and
Mongo are refused, and a ``MongoClient`` made at import never connects.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import json
import os
import re
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pymongo
import pytest
from _mixed_deps import PG, REDIS, deps, mongo  # noqa: F401 - fixtures
from _replay import (
    ALL_ANSWERED,
    APPS_DIR,
    AUDIT_HOOK,
    CONNECTS,
    assert_same_response,
    cassette_files,
    send,
)
from apps.mixed_app import ITEMS, ROUTES, Deps, create_app, deps_json, ledger
from conftest import SCHEMA_PATH, Upstream, load_cassettes
from mongo_server import MongoWireServer
from sqlalchemy import create_engine, inspect
from starlette.testclient import TestClient

from timetracer_otel.cassette import values
from timetracer_otel.config import TraceConfig
from timetracer_otel.replayers import ReplayMismatchError, install_replayers

CLOSED = 1
_REFUSED = "timetracer_otel.replayers.session.ReplayMismatchError: timetracer replay: no recorded call matches"


def _unreachable(deps: Deps, mongo_url: str) -> Deps:
    """PostgreSQL and Redis at a closed port, Mongo at ``mongo_url``; the same file and upstream."""
    closed_postgres, closed_redis = (
        PG.format(driver="asyncpg", port=CLOSED),
        REDIS.format(port=CLOSED),
    )
    return dataclasses.replace(deps, postgres=closed_postgres, redis=closed_redis, mongo=mongo_url)


def _record(serve: Callable[..., Any], deps: Deps, cassette_dir: Path) -> dict[str, httpx.Response]:
    """The responses to every mixed route, recorded; the app (and its clients) closed after."""
    server = serve(
        create_app(deps, TraceConfig(mode="record", cassette_dir=str(cassette_dir))), lifespan="on"
    )
    responses = send(server.url, [("GET", path, {}) for path in ROUTES])
    server.stop()
    assert [r.status_code for r in responses] == [200] * len(ROUTES), responses[0].text
    return dict(zip(ROUTES, responses, strict=False))


def _runs(calls: list[dict[str, Any]]) -> list[str]:
    """The protocols of the calls in order, each run of one protocol once."""
    protocols = [call["protocol"] for call in calls]
    return [p for i, p in enumerate(protocols) if i == 0 or protocols[i - 1] != p]


def _assert_recorded(cassettes: list[dict[str, Any]]) -> None:
    """Each route's calls, in the order they were made, on the client spans that made them."""
    by_path = {doc["request"]["path"]: doc for doc in cassettes}
    assert sorted(by_path) == sorted(ROUTES)
    assert _runs(by_path["/mixed/sequence"]["calls"]) == [
        "http",
        "sql",
        "redis",
        "mongo",
        "sql",
        "http",
    ]
    assert _runs(by_path["/mixed/reverse"]["calls"]) == [
        "http",
        "sql",
        "mongo",
        "redis",
        "sql",
        "http",
    ]
    assert _runs(by_path["/mixed/sync"]["calls"]) == ["mongo", "sql", "http", "redis"]
    gathered = by_path["/mixed/gather"]["calls"]
    assert {c["protocol"] for c in gathered} == {"http", "sql", "redis", "mongo"} and gathered[-1][
        "protocol"
    ] == "http"
    for doc in cassettes:
        spans = {s["span_id"]: s for s in doc["spans"]}
        assert all(spans[c["span_id"]]["kind"] == "CLIENT" for c in doc["calls"])
        libraries = {(c["protocol"], c["library"]) for c in doc["calls"]}
        assert libraries <= {
            ("http", "httpx"),
            ("sql", "sqlalchemy"),
            ("redis", "redis"),
            ("mongo", "pymongo"),
        }
        dialects = {c["request"]["dialect"] for c in doc["calls"] if c["protocol"] == "sql"}
        sync = doc["request"]["path"] == "/mixed/sync"
        assert dialects == (
            {"sqlite+pysqlite"} if sync else {"postgresql+asyncpg", "sqlite+aiosqlite"}
        )


class _Tripwire:
    """A port that takes connections into its backlog and never answers; counts them."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]

    def __enter__(self) -> _Tripwire:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._sock.close()

    def mongo_url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?serverSelectionTimeoutMS=2000"

    def connections(self, wait_for_one: float = 0.0) -> int:
        """How many connections were made to the port so far; may wait for the first one."""
        count = 0
        self._sock.settimeout(wait_for_one)
        while True:
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, TimeoutError):
                return count
            conn.close()
            count += 1
            self._sock.settimeout(0.0)


@contextlib.contextmanager
def _audited_uvicorn(env: dict[str, str], stderr: list[str]) -> Iterator[str]:
    """``uvicorn --factory mixed_app:from_environment`` in a fresh process whose socket connects are audited.

    After the block the process has shut down and ``stderr`` holds what it printed.
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        command = [
            sys.executable, "-c", AUDIT_HOOK + "from uvicorn.main import main\nmain()",
            "--factory", "--app-dir", str(APPS_DIR), "mixed_app:from_environment",
            "--fd", str(sock.fileno()), "--log-level", "warning",
        ]  # fmt: skip
        process = subprocess.Popen(
            command,
            env={**os.environ, **env},
            pass_fds=[sock.fileno()],
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            yield f"http://127.0.0.1:{sock.getsockname()[1]}"
        finally:
            process.terminate()
            stderr.append(process.communicate(timeout=30)[1])


def test_audit_sees_every_socket_connect_of_the_process() -> None:
    """The proof below rests on this: plain and asyncio sockets both report their connects."""
    with _Tripwire() as wire:
        code = AUDIT_HOOK + (
            "import asyncio, socket\n"
            f"socket.create_connection(('127.0.0.1', {wire.port})).close()\n"
            f"asyncio.run(asyncio.open_connection('127.0.0.1', {wire.port}))\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", code], stderr=subprocess.PIPE, text=True, timeout=30
        )
        assert wire.connections() == 2
    assert CONNECTS.findall(done.stderr) == [f"('127.0.0.1', {wire.port})"] * 2


def test_mixed_requests_replay_in_a_fresh_process_with_nothing_reachable(
    serve: Callable[..., Any],
    deps: Deps,
    mongo: MongoWireServer,
    upstream: Upstream,
    cassette_dir: Path,
) -> None:
    """Byte-identical responses, ``response=same`` for every route, and not one socket connect:
    PostgreSQL and Redis at a closed port, the SQLite file deleted, the Mongo server stopped and the
    app's Mongo URL at a port that counts connections (its MongoClient(connect=True) made at start),
    the upstream up but untouched. Calls from a thread outside the requests, with no process cassette,
    are refused (a connect gets its usual answer), SQLite's run."""
    recorded = _record(serve, deps, cassette_dir)
    _assert_recorded(load_cassettes(cassette_dir))
    mongo.stop()
    Path(deps.sqlite).unlink()
    before = len(upstream.requests)
    stderr: list[str] = []
    with _Tripwire() as wire:
        env = {
            "TIMETRACER_MODE": "replay",
            "TIMETRACER_CASSETTE": str(cassette_dir),
            "MIXED_APP_DEPS": deps_json(_unreachable(deps, wire.mongo_url())),
        }
        with _audited_uvicorn(env, stderr) as url:
            replayed = send(url, [("GET", path, {}) for path in (*ROUTES, "/outside")])
        assert wire.connections() == 0
    for path, response in zip(ROUTES, replayed, strict=False):
        assert_same_response(recorded[path], response)
    assert [path for path, _ in ALL_ANSWERED.findall(stderr[0])] == list(ROUTES), stderr[0]
    assert CONNECTS.findall(stderr[0]) == []
    assert len(upstream.requests) == before

    outside = replayed[-1].json()
    # create_all() at start made the file again, empty: rows came from cassettes
    assert outside["sqlite"] == "ran: 0"
    # the connect: its usual answer
    assert (
        outside["postgres"]
        == f"{_REFUSED} execute SELECT count(*) AS count_1 FROM tt_mixed_{deps.suffix} (sqlalchemy)"
    )
    assert outside["mongo"] == f"{_REFUSED} find mixed.events_{deps.suffix} (pymongo)"
    assert outside["redis"] == f"{_REFUSED} GET tt-mixed:{deps.suffix}:hits (redis)"
    assert outside["http"] == f"{_REFUSED} GET {deps.upstream}/json?route=outside (httpx)"


def test_a_mixed_route_replays_through_the_pytest_fixture(
    serve: Callable[..., Any],
    deps: Deps,
    mongo: MongoWireServer,
    upstream: Upstream,
    cassette_dir: Path,
    timetracer_replay: Callable[..., Any],
) -> None:
    """The gathered route in Starlette's TestClient, answered by ``timetracer_replay`` (strict: every call used)."""
    recorded = _record(serve, deps, cassette_dir)["/mixed/gather"]
    (cassette,) = [p for p in cassette_files(cassette_dir) if "mixed_gather" in p.name]
    mongo.stop()
    Path(deps.sqlite).unlink()
    before = len(upstream.requests)
    app = create_app(_unreachable(deps, mongo.url), TraceConfig(mode="off"))
    with timetracer_replay(cassette, strict=True) as session, TestClient(app) as client:
        replayed = client.get("/mixed/gather")
    assert replayed.content == recorded.content
    assert {library for library, _ in session.answered} == {
        "httpx",
        "sqlalchemy",
        "redis",
        "pymongo",
    }
    assert len(upstream.requests) == before


def _first(doc: dict[str, Any], protocol: str, has: str) -> dict[str, Any]:
    """The first call of ``protocol`` whose request has the key ``has``."""
    return next(c for c in doc["calls"] if c["protocol"] == protocol and has in c["request"])


# What a broken writer could put in a sql, redis or mongo call: the schema must refuse each.
_BROKEN_CALLS: dict[str, Callable[[dict[str, Any]], None]] = {
    "sql kind": lambda d: _first(d, "sql", "statement").update(kind="db.client"),
    "sql operation": lambda d: _first(d, "sql", "statement")["request"].update(operation="query"),
    "sql statement without parameters": lambda d: _first(d, "sql", "statement")["request"].pop(
        "parameters"
    ),
    "sql connect without engine": lambda d: _first(d, "sql", "engine")["request"].pop("engine"),
    "sql rows as objects": lambda d: _first(d, "sql", "statement")["response"].update(
        rows=[{"id": 1}]
    ),
    "sql response mixing state and rows": lambda d: _first(d, "sql", "engine")["response"].update(
        rows=[]
    ),
    "bytes without base64": lambda d: _first(d, "redis", "command")["request"].update(
        args=[{"$type": "bytes", "value": "AA=="}]
    ),
    "unknown typed value": lambda d: _first(d, "sql", "statement")["request"].update(
        parameters={"$type": "pickle"}
    ),
    "redis command without args": lambda d: _first(d, "redis", "command")["request"].pop("args"),
    "redis pipeline without transaction": lambda d: _first(d, "redis", "pipeline")["request"].pop(
        "transaction"
    ),
    "redis reply and replies": lambda d: _first(d, "redis", "command")["response"].update(
        replies=[1]
    ),
    "mongo command as text": lambda d: _first(d, "mongo", "command")["request"].update(
        command="find"
    ),
    "mongo objectid not hex": lambda d: _first(d, "mongo", "command")["response"]["reply"].update(
        n={"$type": "objectid", "value": "x"}
    ),
    "mongo reply and failure": lambda d: _first(d, "mongo", "command")["response"].update(
        failure={"ok": 0.0}
    ),
}


def test_schema_holds_sql_redis_and_mongo_calls_to_their_shapes(
    serve: Callable[..., Any], deps: Deps, cassette_dir: Path
) -> None:
    """A recorded mixed cassette is valid; each way of breaking one of its calls is caught."""
    _record(serve, deps, cassette_dir)
    (doc,) = [d for d in load_cassettes(cassette_dir) if d["request"]["path"] == "/mixed/sequence"]
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text("utf-8")))
    assert list(validator.iter_errors(doc)) == []
    accepted = []
    for case, breaks in _BROKEN_CALLS.items():
        broken = copy.deepcopy(doc)
        breaks(broken)
        if validator.is_valid(broken):
            accepted.append(case)
    assert accepted == []


def test_documented_calls_and_typed_values_match_the_schema() -> None:
    """docs/cassette-format.md and the schema name every $type values.py writes; the documented calls
    and typed values are valid."""
    schema = json.loads(SCHEMA_PATH.read_text("utf-8"))
    text = (Path(__file__).parents[1] / "docs" / "cassette-format.md").read_text("utf-8")
    calls = text[text.index("## `calls`") : text.index("## Typed values")]
    typed = text[text.index("| `$type` |") : text.index("## `spans`")]  # the table of typed values
    documented = [json.loads(block) for block in re.findall(r"```json\n(.*?)\n```", calls, re.S)]
    examples = [
        json.loads(example) for example in re.findall(r"\| `(\{\"\$type\".*?\})` \|", typed)
    ]
    assert sorted({call["protocol"] for call in documented}) == [
        "amqp",
        "grpc",
        "mongo",
        "redis",
        "smtp",
        "sql",
    ]
    rows = re.findall(r"^\| (`[a-z0-9_]+`(?:, `[a-z0-9_]+`)*) \|", typed, re.M)
    written = set(values._DECODERS)  # every $type values.py reads (and so writes)
    assert {name for row in rows for name in re.findall(r"`(\w+)`", row)} == written
    assert set(schema["$defs"]["typed"]["properties"]["$type"]["enum"]) == written
    for name, instances in (("call", documented), ("typedValue", examples)):
        validator = jsonschema.Draft202012Validator(
            {"$defs": schema["$defs"], "$ref": f"#/$defs/{name}"}
        )
        assert [instance for instance in instances if not validator.is_valid(instance)] == []


def test_outside_requests_a_replaying_process_runs_sqlite_and_refuses_postgresql(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Schema set-up on a SQLite file runs (create_all at import); on PostgreSQL, with no process cassette,
    the connect gets its usual answer and the first statement is refused, the driver never connecting,
    unless SQLAlchemy is named live."""
    install_replayers()
    monkeypatch.setenv("TIMETRACER_MODE", "replay")
    lite = create_engine(f"sqlite:///{tmp_path / 'setup.db'}")
    ITEMS.metadata.create_all(lite)
    assert inspect(lite).get_table_names() == ["items"]
    lite.dispose()

    table = ledger(uuid.uuid4().hex[:12])
    postgres = create_engine(PG.format(driver="psycopg", port=5432))
    opened: list[Any] = []
    real_connect = postgres.dialect.connect
    monkeypatch.setattr(
        postgres.dialect, "connect", lambda *a, **k: opened.append(a) or real_connect(*a, **k)
    )
    with pytest.raises(ReplayMismatchError) as raised:
        table.metadata.create_all(postgres)
    first, cassette = str(raised.value).splitlines()[:2]
    assert first.startswith(
        "timetracer replay: no recorded call matches execute SELECT pg_catalog.pg_class.relname"
    )
    assert cassette == "cassette: (no process cassette)"
    assert opened == []

    monkeypatch.setenv("TIMETRACER_LIVE_PLUGINS", "sqlalchemy")
    try:
        table.metadata.create_all(postgres)
        assert inspect(postgres).has_table(table.name) and opened
    finally:
        table.metadata.drop_all(postgres)
        postgres.dispose()


def test_a_mongo_client_made_in_a_replaying_process_never_connects(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``MongoClient(url)`` (connect=True) starts no monitor and its commands are refused, not sent;
    named live, the same client connects at once."""
    install_replayers()
    monkeypatch.setenv("TIMETRACER_MODE", "replay")
    with _Tripwire() as wire:
        client: pymongo.MongoClient = pymongo.MongoClient(wire.mongo_url())
        with pytest.raises(ReplayMismatchError) as raised:
            client["shop"]["orders"].find_one({"sku": "A-1"})
        client.close()
        assert wire.connections() == 0
        assert str(raised.value).splitlines()[:2] == [
            "timetracer replay: no recorded call matches find shop.orders (pymongo)",
            "cassette: (no process cassette)",
        ]

        monkeypatch.setenv("TIMETRACER_LIVE_PLUGINS", "pymongo")
        live: pymongo.MongoClient = pymongo.MongoClient(wire.mongo_url())
        try:
            assert wire.connections(wait_for_one=10) >= 1
        finally:
            live.close()


def test_an_async_mongo_client_in_a_replaying_process_is_refused_outside_requests(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """AsyncMongoClient: the same rule, nothing reaches the port."""
    install_replayers()
    monkeypatch.setenv("TIMETRACER_MODE", "replay")

    async def find(url: str) -> None:
        client: pymongo.AsyncMongoClient = pymongo.AsyncMongoClient(url)
        try:
            await client["shop"]["orders"].find_one({"sku": "A-1"})
        finally:
            await client.close()

    with _Tripwire() as wire:
        with pytest.raises(
            ReplayMismatchError, match=r"no recorded call matches find shop\.orders \(pymongo\)"
        ):
            asyncio.run(find(wire.mongo_url()))
        assert wire.connections() == 0
