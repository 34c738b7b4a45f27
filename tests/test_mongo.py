"""Mongo through uvicorn: pymongo, AsyncMongoClient and Motor record against a wire-protocol
server on loopback, then replay with that server stopped, the client pointed at a closed port,
and not one connection attempt to either."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pymongo
import pytest
from _replay import assert_same_response, cassette_files, new_reports
from apps.mongo_app import CLOSED_URL, FIRST_ORDER, KINDS, create_app, run, scenario
from bson import json_util
from conftest import load_cassettes
from mongo_server import MongoWireServer, running_mongo
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from timetracer_otel.config import TraceConfig
from timetracer_otel.integrations.starlette import auto_setup
from timetracer_otel.replayers import ReplayMismatchError, ReplayReport
from timetracer_otel.sealing import is_sealed

_COMMANDS = [
    "insert", "insert", "update", "find", "getMore", "getMore", "aggregate", "aggregate",
    "insert",  # the duplicate key: a reply with writeErrors
    "aggregate",  # the unknown stage: a failed command
    "insert", "find",
]  # fmt: skip
_TYPES = {
    "_id": "ObjectId", "sku": "str", "qty": "int", "status": "str",
    "price": "Decimal128", "at": "datetime", "tag": "Binary", "raw": "bytes",
}  # fmt: skip


@pytest.fixture
def mongo() -> Iterator[MongoWireServer]:
    with running_mongo() as server:
        yield server


def _ports(addresses: list[Any]) -> set[int]:
    return {address[1] for address in addresses if isinstance(address, tuple)}


def _get(serve: Callable[..., Any], app: Any, path: str) -> tuple[httpx.Response, int]:
    """The app's response to ``GET path`` and the app's port; the server (and the clients) stopped after."""
    server = serve(app, lifespan="on")
    response = httpx.get(server.url + path, timeout=30)
    server.stop()  # lifespan shutdown closes the Mongo clients
    return response, int(server.url.rsplit(":", 1)[1])


def _record(
    serve: Callable[..., Any], mongo: MongoWireServer, cassette_dir: Path, kind: str
) -> tuple[httpx.Response, dict, Path]:
    config = TraceConfig(mode="record", cassette_dir=str(cassette_dir))
    recorded, _ = _get(serve, create_app(mongo.url, config), f"/orders/{kind}")
    assert recorded.status_code == 200, recorded.text
    (doc,) = load_cassettes(cassette_dir)
    (path,) = cassette_files(cassette_dir)
    return recorded, doc, path


def _replay(
    serve: Callable[..., Any], cassette: Path, kind: str
) -> tuple[httpx.Response, ReplayReport, int]:
    with new_reports() as reports:
        replayed, port = _get(
            serve,
            create_app(CLOSED_URL, TraceConfig(mode="replay", cassette_path=str(cassette))),
            f"/orders/{kind}",
        )
    (report,) = reports
    return replayed, report, port


def _assert_recorded(doc: dict[str, Any], path: Path) -> None:
    """The calls: command and reply documents, typed, redacted, volatile fields kept, each on its span."""
    calls = doc["calls"]
    assert [c["request"]["command_name"] for c in calls] == _COMMANDS
    assert {(c["protocol"], c["library"], c["kind"]) for c in calls} == {
        ("mongo", "pymongo", "mongo.client")
    }
    spans = {s["span_id"]: s["name"] for s in doc["spans"]}
    assert [spans[c["span_id"]] for c in calls] == [f"shop.{name}" for name in _COMMANDS]

    first = calls[0]["request"]["command"]
    # there when recorded, ignored when matching
    assert {"lsid", "txnNumber", "$clusterTime", "$db"} <= set(first)
    stored = first["documents"][0]
    assert stored["price"] == {"$type": "decimal128", "value": "12.50"}
    assert stored["at"] == {"$type": "datetime", "value": FIRST_ORDER["at"].isoformat()}
    assert stored["tag"] == {"$type": "binary", "subtype": 128, "base64": "AQI="}
    assert stored["raw"] == {"$type": "bytes", "base64": "/wA="}
    assert stored["_id"]["$type"] == "objectid"
    assert calls[4]["response"]["reply"]["cursor"]["id"]["$type"] == "int64"

    duplicate = calls[8]["response"]["reply"]["writeErrors"]
    assert [e["code"] for e in duplicate] == [11000] and calls[8]["error"] is None
    failed = calls[9]
    assert failed["error"] == {
        "type": "pymongo.errors.OperationFailure",
        "message": "Unrecognized pipeline stage name: '$bogus'",
    }
    assert failed["response"]["failure"]["code"] == 40324

    # the tests' key seals it
    assert is_sealed(calls[10]["request"]["command"]["documents"][0]["password"])
    assert is_sealed(calls[11]["response"]["reply"]["cursor"]["firstBatch"][0]["password"])
    assert "s3cret" not in path.read_text("utf-8")


@pytest.mark.parametrize("kind", KINDS)
def test_route_replays_identically_with_no_server_and_no_connection(
    kind: str,
    serve: Callable[..., Any],
    cassette_dir: Path,
    mongo: MongoWireServer,
    connects: list[Any],
) -> None:
    """sync pymongo in a def route, AsyncMongoClient and Motor in async routes."""
    recorded, doc, cassette = _record(serve, mongo, cassette_dir, kind)
    _assert_recorded(doc, cassette)
    body = json_util.loads(recorded.text)
    assert body["types"] == _TYPES
    assert body["duplicate"] == {"code": 11000}
    assert body["failed"] == {
        "code": 40324,
        "message": "Unrecognized pipeline stage name: '$bogus'",
    }
    assert (
        len(body["listed"]) == 6
        and body["closed"] == 3
        and body["user_fields"] == ["_id", "name", "password"]
    )
    mongo.stop()

    connects.clear()
    replayed, report, app_port = _replay(serve, cassette, kind)
    # inserted ids included: the generated ObjectIds are the recorded ones
    assert_same_response(recorded, replayed)
    assert json_util.loads(replayed.text)["types"] == _TYPES
    assert report.ok and not report.unused and len(report.answered) == len(_COMMANDS)
    ports = _ports(connects)
    assert app_port in ports  # the spy saw the test's own request to the app
    assert not ports & {mongo.port, 1}


def test_changed_filter_raises_mismatch_naming_the_closest_command(
    serve: Callable[..., Any],
    cassette_dir: Path,
    mongo: MongoWireServer,
    connects: list[Any],
    timetracer_replay: Callable[..., Any],
) -> None:
    _, doc, cassette = _record(serve, mongo, cassette_dir, "sync")
    mongo.stop()
    connects.clear()
    client = pymongo.MongoClient(CLOSED_URL, connect=False)
    with timetracer_replay(cassette) as session, pytest.raises(ReplayMismatchError) as raised:
        client["shop"]["users"].find_one({"name": "bob"})
    client.close()
    find_users = len(doc["calls"]) - 1
    assert str(raised.value).splitlines()[:5] == [
        "timetracer replay: no recorded call matches find shop.users (pymongo)",
        f"cassette: {cassette}",
        "closest recorded calls:",
        f"  #{find_users} find shop.users (unused)",
        '      filter: recorded {"name":"ada"}, this call {"name":"bob"}',
    ]
    assert session.unmatched == [raised.value]
    assert not _ports(connects) & {mongo.port, 1}


def test_a_clients_own_monitor_refused_in_a_replaying_block_is_not_the_tests_connection(
    serve: Callable[..., Any],
    cassette_dir: Path,
    mongo: MongoWireServer,
    timetracer_replay: Callable[..., Any],
) -> None:
    """A client made before the block (at import, by a fixture) checks its server in threads of
    its own, whenever its heartbeat comes: refused while the block replays, as every connection
    is, but not the test's connection, so the test does not fail for it."""
    import threading

    from pymongo import monitoring

    recorded, _, cassette = _record(serve, mongo, cassette_dir, "sync")
    mongo.stop()
    checked = threading.Event()

    class Heartbeats(monitoring.ServerHeartbeatListener):
        def started(self, event: Any) -> None: ...

        def succeeded(self, event: Any) -> None: ...

        def failed(self, event: Any) -> None:
            checked.set()

    client: pymongo.MongoClient[Any] = pymongo.MongoClient(
        mongo.url, heartbeatFrequencyMS=500, event_listeners=[Heartbeats()]
    )
    try:
        with timetracer_replay(cassette):
            checked.clear()
            assert checked.wait(30), "the monitor did not check the server during the block"
            result = run(scenario(client["shop"]))
    finally:
        client.close()
    assert (
        json.loads(json_util.dumps(result, json_options=json_util.CANONICAL_JSON_OPTIONS))
        == recorded.json()
    )


def test_recorded_calls_answer_a_client_made_in_the_test(
    serve: Callable[..., Any],
    cassette_dir: Path,
    mongo: MongoWireServer,
    timetracer_replay: Callable[..., Any],
) -> None:
    """The pytest fixture replays too: same replies, same types, the cursor followed across getMore."""
    recorded, _, cassette = _record(serve, mongo, cassette_dir, "sync")
    mongo.stop()
    client = pymongo.MongoClient(CLOSED_URL, connect=False)
    with timetracer_replay(cassette):
        result = run(scenario(client["shop"]))
    client.close()
    assert (
        json.loads(json_util.dumps(result, json_options=json_util.CANONICAL_JSON_OPTIONS))
        == recorded.json()
    )


def test_pymongo_named_live_goes_to_the_server(
    serve: Callable[..., Any],
    cassette_dir: Path,
    mongo: MongoWireServer,
    timetracer_replay: Callable[..., Any],
) -> None:
    """Hybrid replay: with pymongo live, commands reach the server even though the cassette could answer them."""
    _, _, cassette = _record(serve, mongo, cassette_dir, "sync")
    before = len(mongo.commands)
    client = pymongo.MongoClient(mongo.url)
    with timetracer_replay(cassette, live=("pymongo",)) as session:
        count = client["shop"]["orders"].count_documents({"status": "closed"})
        # recorded nowhere: no mismatch either
        missing = client["shop"]["users"].find_one({"name": "bob"})
    client.close()
    assert (count, missing) == (3, None)
    assert mongo.commands[before:].count("aggregate") == 1 and "find" in mongo.commands[before:]
    assert not session.answered and not session.unmatched


_EARLY_CLIENT_APP = """
import sys

sys.path.insert(0, sys.argv[2])
from mongo_server import running_mongo
from pymongo import MongoClient
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

import timetracer_otel
from timetracer_otel.config import TraceConfig
from timetracer_otel.integrations.starlette import auto_setup

with running_mongo() as server:
    early = MongoClient(server.url)  # made at import, before auto_setup, as a db module does
    clients = {"early": early}

    def insert(request):
        clients[request.path_params["which"]].shop.users.insert_one({"name": "ada"})
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/users/{which}", insert, methods=["POST"])])
    auto_setup(app, TraceConfig(mode="record", cassette_dir=sys.argv[1]), plugins=["pymongo"])
    clients["late"] = MongoClient(server.url)
    with TestClient(app) as client:
        for which in ("late", "early", "early"):
            client.post(f"/users/{which}")
            print(f"-- sent {which}", file=sys.stderr, flush=True)
    timetracer_otel.flush(30)
"""


def test_a_client_made_before_the_plugin_is_named_in_a_warning_not_silently_unrecorded(
    tmp_path: Path,
) -> None:
    """pymongo gives a client the listeners registered when it is made: one made before
    auto_setup records nothing. The first of its commands in a recorded request is named once."""
    import subprocess
    import sys

    script = tmp_path / "early_client_app.py"
    script.write_text(_EARLY_CLIENT_APP)
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "cassettes"), str(Path(__file__).parent)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    lines = [
        line for line in done.stderr.splitlines() if "MongoClient" in line or "-- sent" in line
    ]
    assert lines == [
        "-- sent late",
        "timetracer: a MongoClient created before timetracer's pymongo plugin was enabled sent "
        "'insert' to 'shop' while recording; its commands are not recorded. Enable "
        "the plugin before the client is made (timetracer_otel.plugins.enable_pymongo() before "
        "the module that creates it is imported), or run the app under opentelemetry-instrument",
        "-- sent early",
        "-- sent early",
    ], done.stderr
    calls = {c["request"]["path"]: len(c["calls"]) for c in load_cassettes(tmp_path / "cassettes")}
    assert calls == {"/users/late": 1, "/users/early": 0}


def _lazy_client_app(mongo_url: str, config: TraceConfig) -> Starlette:
    """``/count``: the client is made by the first request that needs it, as many apps' ``get_db()`` does."""
    clients: list[pymongo.AsyncMongoClient] = []

    async def count(request: Request) -> JSONResponse:
        if not clients:
            clients.append(pymongo.AsyncMongoClient(mongo_url))
        found = await clients[0]["shop"]["orders"].count_documents({})
        return JSONResponse({"orders": found})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        for client in clients:
            await client.close()

    app = Starlette(routes=[Route("/count", count)], lifespan=lifespan)
    auto_setup(app, config=config, plugins=["pymongo"])
    return app


def test_a_client_made_in_a_request_leaves_its_own_ids_out_of_the_draws(
    serve: Callable[..., Any], mongo: MongoWireServer, tmp_path: Path
) -> None:
    """pymongo's topology and session ids are drawn by whichever request makes the client: they
    are not the app's draws, so a later request replayed alone (a new client) has none extra."""
    recording = serve(
        _lazy_client_app(mongo.url, TraceConfig(mode="record", cassette_dir=str(tmp_path))),
        lifespan="on",
    )
    for _ in range(2):
        assert httpx.get(f"{recording.url}/count", timeout=30).json() == {"orders": 0}
    recording.stop()
    paths = sorted(
        cassette_files(tmp_path), key=lambda p: json.loads(p.read_text("utf-8"))["recorded_at"]
    )
    callers = {
        draw["caller"]
        for path in paths
        for draw in json.loads(path.read_text("utf-8")).get("draws", [])
    }
    assert not {caller for caller in callers if caller.startswith("pymongo")}, callers

    with new_reports() as reports:
        replaying = serve(
            _lazy_client_app(CLOSED_URL, TraceConfig(mode="replay", cassette_path=str(paths[1]))),
            lifespan="on",
        )
        assert httpx.get(f"{replaying.url}/count", timeout=30).json() == {"orders": 0}
        replaying.stop()
    (report,) = reports
    assert report.ok and report.extra_draws == {}, report.console_text()
