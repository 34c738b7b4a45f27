"""SQLAlchemy through uvicorn: recorded against the real PostgreSQL at 127.0.0.1:5432 and
SQLite files, replayed with the URL at a closed port or the file deleted, and nothing connects."""

from __future__ import annotations

import asyncio
import inspect
import sqlite3
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy
from _replay import Sent, assert_same_response, new_reports, send
from apps.sql_app import ORDER, create_app, create_schema, drop_schema, item_work, schema
from conftest import load_cassettes
from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
from sqlalchemy import Integer, String, create_engine
from sqlalchemy.orm import DeclarativeBase, Session, mapped_column
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import timetracer_otel
from timetracer_otel import _diagnostics
from timetracer_otel.cassette.calls import CassetteCall
from timetracer_otel.cassette.values import decode_value
from timetracer_otel.config import TraceConfig
from timetracer_otel.integrations.starlette import auto_setup
from timetracer_otel.plugins import enable_sqlalchemy
from timetracer_otel.protocols.sql import live_view, recorded_view
from timetracer_otel.replayers import ReplaySession, install_replayers
from timetracer_otel.replayers.session import activate, deactivate

PG = "postgresql+{driver}://postgres@127.0.0.1:{port}/test"
DB_PORTS = {5432, 1}
DRIVERS = ["psycopg", "psycopg2", "asyncpg", "pysqlite", "aiosqlite"]
SENT: list[Sent] = [
    ("POST", "/orders/a", {}),
    ("GET", "/stream/all", {}),
    ("GET", "/stream/2", {}),
    ("GET", "/items/1", {}),
    ("GET", "/isolation/AUTOCOMMIT", {}),
    ("GET", "/isolation/SERIALIZABLE", {}),
]


@pytest.fixture
def suffix() -> str:
    """The test's own table names: several test processes may share the server."""
    return uuid.uuid4().hex[:12]


def _urls(driver: str, tmp_path: Path) -> tuple[str, str, Path | None]:
    """(recording URL, replay URL, SQLite file): replay points at a closed port, or at the same, deleted, file."""
    if "sqlite" in driver:
        path = tmp_path / "app.db"
        url = f"sqlite+{driver}:///{path}"
        return url, url, path
    return PG.format(driver=driver, port=5432), PG.format(driver=driver, port=1), None


def _watch_dialect(engine: Any, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The DBAPI connections the engine's dialect opens (libpq's sockets are not Python's)."""
    opened: list[Any] = []
    real = engine.dialect.connect

    def connect(*args: Any, **kwargs: Any) -> Any:
        opened.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(engine.dialect, "connect", connect)
    return opened


def _record(
    serve: Callable[..., Any],
    url: str,
    directory: Path,
    suffix: str,
    sent: list[Sent],
    engine: Any = None,
) -> list[httpx.Response]:
    config = TraceConfig(mode="record", cassette_dir=str(directory))
    responses = send(serve(create_app(url, config, suffix, engine)).url, sent)
    assert timetracer_otel.flush(30), "cassette writer did not drain"
    return responses


def _replay(
    serve: Callable[..., Any], app: Any, sent: list[Sent]
) -> tuple[list[httpx.Response], list[Any]]:
    """Responses and replay reports (final once the server stopped)."""
    with new_reports() as reports:
        server = serve(app)
        responses = send(server.url, sent)
        server.stop()
    return responses, reports


@pytest.mark.parametrize("driver", DRIVERS)
def test_requests_replay_with_no_database(
    driver: str,
    serve: Callable[..., Any],
    cassette_dir: Path,
    tmp_path: Path,
    suffix: str,
    connects: list[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ORM insert + query, Core select, executemany, RETURNING, a handled IntegrityError (with
    the driver's error it was raised from, asyncpg's), streamed results read fully and in part:
    the same responses with the tables dropped and the database unreachable; the dialect opens
    no connection, no socket goes to a database port, no file appears. Recording fails at
    nothing (a closed aiosqlite stream has no ``rowcount`` left to read)."""
    url, replay_url, db_file = _urls(driver, tmp_path)
    create_schema(url, suffix, items=3)
    before = _diagnostics.counters.snapshot()
    try:
        recorded = _record(serve, url, cassette_dir, suffix, SENT)
    finally:
        drop_schema(url, suffix)
    assert _diagnostics.failures(before) == {}
    assert [r.status_code for r in recorded] == [200] * len(SENT), recorded[0].text
    if driver == "asyncpg":
        assert recorded[0].json()["cause"] == "asyncpg.exceptions.UniqueViolationError"
        assert recorded[0].json()["cause_constraint"].endswith("_tag_key")
    assert (
        recorded[0]
        .json()["integrity_error"]
        .endswith(("IntegrityError", "UniqueViolation", "UniqueViolationError"))
    )
    if db_file is not None:
        db_file.unlink()
    connects.clear()

    app = create_app(
        replay_url, TraceConfig(mode="replay", cassette_path=str(cassette_dir)), suffix
    )
    opened = _watch_dialect(app.state.engine, monkeypatch)
    replayed, reports = _replay(serve, app, SENT)

    for before, after in zip(recorded, replayed, strict=False):
        assert_same_response(before, after)
    assert sorted(r.path for r in reports) == sorted(path for _, path, _ in SENT)
    assert all((r.unmatched, r.unused, r.differences) == ([], [], []) for r in reports), [
        (r.path, r.unmatched, r.unused, r.differences) for r in reports
    ]
    assert opened == []
    assert [
        address for address in connects if isinstance(address, tuple) and address[1] in DB_PORTS
    ] == []
    if db_file is not None:
        assert not db_file.exists()


def _calls(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The document's SQL calls, with request and response decoded."""
    return [
        {
            **call,
            "request": decode_value(call["request"]),
            "response": decode_value(call["response"]),
        }
        for call in doc["calls"]
        if call["protocol"] == "sql"
    ]


def test_cassette_holds_statements_parameters_rows_and_errors(
    serve: Callable[..., Any], cassette_dir: Path, suffix: str
) -> None:
    """What the DBAPI was given and gave back, typed; no connect-time probe; each call under its own span."""
    url = PG.format(driver="psycopg", port=5432)
    create_schema(url, suffix)
    try:
        _record(serve, url, cassette_dir, suffix, SENT[:1])
    finally:
        drop_schema(url, suffix)
    (doc,) = load_cassettes(cassette_dir)
    calls = _calls(doc)
    requests = [call["request"] for call in calls]

    connect = calls[0]
    assert connect["request"] == {
        "operation": "connect",
        "dialect": "postgresql+psycopg",
        "engine": "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    }
    state = connect["response"]["dialect_state"]
    assert (
        isinstance(state["server_version_info"], tuple) and state["default_schema_name"] == "public"
    )
    assert not any(
        "pg_catalog.version" in str(r.get("statement"))
        or "current_schema" in str(r.get("statement"))
        for r in requests
    )

    insert = next(
        c
        for c in calls
        if str(c["request"].get("statement")).startswith(
            f"INSERT INTO tt_orders_{suffix} (tag, amount"
        )
    )
    assert insert["request"]["parameters"] == {"tag": "a", **ORDER}
    assert [type(v) for v in insert["request"]["parameters"].values()] == [
        str,
        *(type(v) for v in ORDER.values()),
    ]
    # RETURNING id
    assert insert["response"]["rows"] == [[1]] and insert["response"]["rowcount"] == 1

    many = next(
        c
        for c in calls
        if c["request"]["operation"] == "executemany" and "UPDATE" in c["request"]["statement"]
    )
    assert many["request"]["parameters"] == [
        {"which": 0, "new_label": "zero"},
        {"which": 1, "new_label": "one"},
    ]
    assert (many["response"]["rowcount"], many["response"]["description"]) == (2, None)

    returning = next(
        c
        for c in calls
        if str(c["request"].get("statement")).endswith(
            "RETURNING " + ", ".join(f"tt_items_{suffix}.{n}" for n in ("id", "n", "label"))
        )
    )
    assert [column[0] for column in returning["response"]["description"]] == ["id", "n", "label"]
    assert returning["response"]["rows"] == [[5, 20, "returned"]]

    failed = calls[-1]
    assert failed["error"]["type"] == "psycopg.errors.UniqueViolation"
    assert failed["response"] == {"dbapi_error": "IntegrityError", "error_attributes": {}}

    spans = {span["span_id"]: span for span in doc["spans"]}
    for call in calls:
        span = spans[call["span_id"]]
        first_word = call["request"].get("statement", "connect").split()[0]
        assert span["kind"] == "CLIENT" and span["name"].split()[0] == first_word, (
            span["name"],
            first_word,
        )


@pytest.mark.parametrize(
    "made", ["unseen by the instrumentor", "by the instrumented create_engine"]
)
def test_each_statement_has_one_client_span(
    made: str, serve: Callable[..., Any], cassette_dir: Path, tmp_path: Path, suffix: str
) -> None:
    """An engine created before OpenTelemetry instrumented SQLAlchemy gets spans too; one the
    instrumentor traces already gets no second set."""
    url = f"sqlite:///{tmp_path / 'app.db'}"
    create_schema(url, suffix, items=2)
    enable_sqlalchemy()
    make = (
        sqlalchemy.create_engine
        if made.startswith("by")
        else inspect.unwrap(sqlalchemy.create_engine)
    )
    engine = make(url)
    _record(serve, url, cassette_dir, suffix, [("GET", "/items/1", {})], engine)
    listeners = engine.dispatch.before_cursor_execute
    assert (
        len([fn for fn in listeners if isinstance(getattr(fn, "__self__", None), EngineTracer)])
        == 1
    )
    (doc,) = load_cassettes(cassette_dir)
    connect, select = _calls(doc)
    client_spans = [span for span in doc["spans"] if span["kind"] == "CLIENT"]
    assert [span["name"] for span in client_spans] == ["connect", f"SELECT {tmp_path / 'app.db'}"]
    assert [span["span_id"] for span in client_spans] == [connect["span_id"], select["span_id"]]
    assert client_spans[1]["attributes"]["db.statement"] == select["request"]["statement"]


def test_fifty_concurrent_replays_on_an_async_engine_get_their_own_rows(
    serve: Callable[..., Any], cassette_dir: Path, suffix: str
) -> None:
    """Directory replay: each request finds its cassette, and each cassette answers only its request."""
    url = PG.format(driver="asyncpg", port=5432)
    sent: list[Sent] = [("GET", f"/items/{n}", {}) for n in range(50)]
    create_schema(url, suffix, items=50)
    try:
        recorded = _record(serve, url, cassette_dir, suffix, sent)
    finally:
        drop_schema(url, suffix)
    assert [r.json()[0][1:] for r in recorded] == [[f"int:{n}", f"item-{n}"] for n in range(50)]

    app = create_app(
        PG.format(driver="asyncpg", port=1),
        TraceConfig(mode="replay", cassette_path=str(cassette_dir)),
        suffix,
    )

    async def all_at_once(base_url: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
            return await asyncio.gather(*(client.get(path) for _, path, _ in sent))

    with new_reports() as reports:
        server = serve(app)
        replayed = asyncio.run(all_at_once(server.url))
        server.stop()
    for before, after in zip(recorded, replayed, strict=False):
        assert_same_response(before, after)
    assert len(reports) == 50 and all(r.ok and not r.unused for r in reports)


def test_pooled_connections_are_not_used_in_replay(
    serve: Callable[..., Any], cassette_dir: Path, tmp_path: Path, suffix: str
) -> None:
    """A connection pooled before replay stays idle: the answer is the recorded row, not today's."""
    url = f"sqlite:///{tmp_path / 'app.db'}"
    create_schema(url, suffix, items=2)
    (recorded,) = _record(serve, url, cassette_dir, suffix, [("GET", "/items/1", {})])
    with sqlite3.connect(tmp_path / "app.db") as db:
        db.execute(f"UPDATE tt_items_{suffix} SET label = 'changed'")

    app = create_app(url, TraceConfig(mode="replay", cassette_path=str(cassette_dir)), suffix)
    engine = app.state.engine
    statements: list[str] = []
    with engine.connect() as conn:  # back in the pool afterwards, tracing every statement it runs
        conn.connection.dbapi_connection.set_trace_callback(statements.append)
    (replayed,), (report,) = _replay(serve, app, [("GET", "/items/1", {})])

    assert_same_response(recorded, replayed)
    assert replayed.json() == [["int:2", "int:1", "item-1"]] and report.ok
    assert statements == [] and engine.pool.checkedin() == 1


def test_a_connection_checked_out_before_the_session_runs_nothing(
    serve: Callable[..., Any], cassette_dir: Path, tmp_path: Path, suffix: str
) -> None:
    """A SQLAlchemy Connection opened before the replay session: its statements are answered, not run."""
    url = f"sqlite:///{tmp_path / 'app.db'}"
    create_schema(url, suffix, items=2)
    (recorded,) = _record(serve, url, cassette_dir, suffix, [("GET", "/items/1", {})])
    (doc,) = load_cassettes(cassette_dir)
    install_replayers()
    statements: list[str] = []
    with sqlalchemy.create_engine(url).connect() as held:
        held.connection.dbapi_connection.set_trace_callback(statements.append)
        session = ReplaySession(doc, "held.json")
        token = activate(session)
        try:
            answer = item_work(Session(bind=held), schema(suffix), 1)
        finally:
            deactivate(token)
    assert answer == recorded.json()
    assert statements == [] and [call.view.label.split()[0] for _, call in session.answered] == [
        "execute"
    ]


def test_a_changed_parameter_is_a_mismatch_naming_the_closest_call(
    serve: Callable[..., Any], cassette_dir: Path, tmp_path: Path, suffix: str
) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    create_schema(url, suffix)
    _record(serve, url, cassette_dir, suffix, [("POST", "/orders/a", {})])
    (cassette,) = cassette_dir.rglob("*.json")
    app = create_app(url, TraceConfig(mode="replay", cassette_path=str(cassette)), suffix)
    (response,), (report,) = _replay(serve, app, [("POST", "/orders/b", {})])

    assert response.status_code == 500
    label = f"execute INSERT INTO tt_orders_{suffix} (tag, amount, created, payload, ref, data, note) VALUES (?, ?, ?, ?, ?, ?, ?)"
    assert report.unmatched == [f"timetracer replay: no recorded call matches {label} (sqlalchemy)"]
    assert report.error["type"] == "timetracer_otel.replayers.session.ReplayMismatchError"
    message = report.error["message"]
    assert (
        "(unused)" in message
        and "parameters: recorded [" in message
        and '"a"' in message
        and '"b"' in message
    )


def _key(request: dict[str, Any]) -> Any:
    return live_view(request).key


def test_matching_normalises_whitespace_but_keeps_parameter_types() -> None:
    base = {
        "operation": "execute",
        "dialect": "sqlite+pysqlite",
        "statement": "SELECT ?",
        "parameters": (1,),
    }
    assert _key({**base, "statement": " SELECT\n\t ?  "}) == _key(base)
    assert _key({**base, "parameters": (1.0,)}) != _key(base)
    assert _key({**base, "parameters": ("1",)}) != _key(base)
    assert _key({**base, "parameters": [b"x"]}) != _key({**base, "parameters": ["x"]})
    assert _key({**base, "dialect": "postgresql+psycopg"}) != _key(base)
    recorded = {
        "protocol": "sql",
        "request": {**base, "parameters": {"$type": "tuple", "items": [1]}},
    }
    assert recorded_view(CassetteCall(recorded)).key == _key(base)
    connect = {"operation": "connect", "dialect": "sqlite+pysqlite"}
    assert _key({**connect, "engine": "sqlite:////a.db"}) == _key(
        {**connect, "engine": "sqlite:////elsewhere.db"}
    )


def _long_query_app(url: str, column: str, config: TraceConfig) -> Any:
    """``/members``: an ORM-sized SELECT (many columns) filtered by ``column`` at its very end."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from timetracer_otel.integrations.starlette import auto_setup

    engine = sqlalchemy.create_engine(url)
    columns = ", ".join(f"members.field_{n} AS members_field_{n}" for n in range(12))

    def members(request: Any) -> JSONResponse:
        statement = f"SELECT {columns} FROM members WHERE members.{column} = :wanted"
        with engine.connect() as connection:
            rows = connection.execute(sqlalchemy.text(statement), {"wanted": 7}).all()
        return JSONResponse({"rows": len(rows)})

    app = Starlette(routes=[Route("/members", members)])
    auto_setup(app, config=config, plugins=["sqlalchemy"])
    return app


def test_a_long_statement_that_differs_at_its_end_is_shown_where_it_differs(
    serve: Callable[..., Any], cassette_dir: Path, tmp_path: Path
) -> None:
    """The console line of a request whose long statement changed (the filter's column) names the
    closest recorded call and shows both statements cut around their first difference, not at
    their start, where they are the same."""
    url = f"sqlite:///{tmp_path / 'app.db'}"
    with sqlite3.connect(tmp_path / "app.db") as db:
        fields = ", ".join(f"field_{n} INTEGER" for n in range(12))
        db.execute(f"CREATE TABLE members ({fields}, role_id INTEGER, team_id INTEGER)")
    recording = serve(
        _long_query_app(url, "role_id", TraceConfig(mode="record", cassette_dir=str(cassette_dir)))
    )
    assert httpx.get(f"{recording.url}/members", timeout=30).json() == {"rows": 0}
    assert timetracer_otel.flush(30)
    (cassette,) = cassette_dir.rglob("*.json")

    app = _long_query_app(url, "team_id", TraceConfig(mode="replay", cassette_path=str(cassette)))
    (response,), (report,) = _replay(serve, app, [("GET", "/members", {})])

    assert response.status_code == 500
    lines = report.console_text().splitlines()
    (at,) = [n for n, line in enumerate(lines) if line.startswith("    closest recorded call: #")]
    assert lines[at - 1].startswith("  unmatched: timetracer replay: no recorded call matches")
    (statement,) = [line for line in lines[at + 1 :] if line.startswith("      statement: ")]
    assert "WHERE members.role_id = ?" in statement and "WHERE members.team_id = ?" in statement


_COLUMNS = [
    f"{name}_{n}"
    for n, name in enumerate(["title", "body", "state", "owner", "slug", "tag", "kind", "note"] * 2)
]


def _ordered_app(url: str, config: TraceConfig) -> Starlette:
    """Rows of a sixteen-column model, shown as FastAPI's ``jsonable_encoder`` shows an object
    without a response model: its ``__dict__``, in the order the ORM set its attributes, once
    loaded whole (``GET``) and once refreshed after the commit expired it (``POST``)."""

    class Base(DeclarativeBase):
        pass

    columns = {name: mapped_column(String(40), default="") for name in _COLUMNS}
    row = type("Row", (Base,), {
        "__tablename__": "rows", "id": mapped_column(Integer, primary_key=True), **columns,
    })  # fmt: skip
    engine = create_engine(url)
    Base.metadata.create_all(engine)

    def members(obj: Any) -> list[str]:
        return [name for name in vars(obj) if not name.startswith("_sa_")]

    def add(request: Request) -> JSONResponse:
        with Session(engine) as session:
            obj = row(**{name: name.upper() for name in _COLUMNS})
            session.add(obj)
            session.commit()
            obj.id  # noqa: B018 - the refresh of an expired object
            return JSONResponse({"id": obj.id, "members": members(obj)})

    def get(request: Request) -> JSONResponse:
        with Session(engine) as session:
            return JSONResponse(members(session.get(row, int(request.path_params["id"]))))

    app = Starlette(routes=[Route("/rows", add, methods=["POST"]), Route("/rows/{id}", get)])
    auto_setup(app, config=config, plugins=["sqlalchemy"])
    return app


def test_objects_the_orm_loads_list_their_members_in_declared_order(
    serve: Callable[..., Any], cassette_dir: Path, tmp_path: Path
) -> None:
    """SQLAlchemy's own order follows the properties' memory addresses, another in a replaying
    process: loaded whole or refreshed, an object's members come in the model's order."""
    url = f"sqlite:///{tmp_path / 'rows.sqlite'}"
    record = TraceConfig(mode="record", cassette_dir=str(cassette_dir))
    server = serve(_ordered_app(url, record))
    with httpx.Client(base_url=server.url, timeout=30) as client:
        added = client.post("/rows")
        got = client.get(f"/rows/{added.json()['id']}")
    server.stop()
    assert added.json()["members"] == ["id", *_COLUMNS]
    assert got.json() == ["id", *_COLUMNS]


def test_declared_order_stays_while_capture_or_replay_still_holds_it() -> None:
    """Capture and replay each install the declared order; uninstalling one leaves it for the
    other, and SQLAlchemy's own order comes back when neither holds it."""
    from sqlalchemy.orm import Mapper

    from timetracer_otel import _orm_order

    class Base(DeclarativeBase):
        pass

    columns = {name: mapped_column(String(40)) for name in _COLUMNS}
    mapper: Mapper[Any] = sqlalchemy.inspect(
        type(
            "Held",
            (Base,),
            {"__tablename__": "held", "id": mapped_column(Integer, primary_key=True), **columns},
        )
    )
    declared = list(mapper._props.values())
    _orm_order.install("capture")
    _orm_order.install("replay")
    try:
        _orm_order.uninstall("capture")
        assert list(mapper._prop_set) == declared
    finally:
        _orm_order.uninstall("replay")
        _orm_order.uninstall("capture")
    assert type(mapper._prop_set) is frozenset


def _duplicate_app(engine: Any, config: TraceConfig) -> Starlette:
    """One route inserting the same tag twice on ``engine``, answering with the class of what
    the second insert raised, as an app inspecting its driver's errors does."""

    def insert(request: Request) -> JSONResponse:
        with engine.begin() as connection:
            connection.exec_driver_sql("CREATE TABLE IF NOT EXISTS tags (tag TEXT UNIQUE)")
        raised = None
        for _ in range(2):
            try:
                with engine.begin() as connection:
                    connection.exec_driver_sql("INSERT INTO tags (tag) VALUES ('a')")
            except Exception as exc:
                raised = f"{type(exc).__module__}.{type(exc).__qualname__}"
        return JSONResponse({"raised": raised})

    app = Starlette(routes=[Route("/tags", insert, methods=["POST"])])
    auto_setup(app, config=config, plugins=["sqlalchemy"])
    return app


def test_a_drop_in_drivers_error_is_raised_again_as_its_own_class(
    serve: Callable[..., Any], cassette_dir: Path, tmp_path: Path
) -> None:
    """sqlean (a drop-in sqlite3, Phoenix's driver) given to SQLAlchemy as ``creator``: its
    errors are no sqlite3 error, so SQLAlchemy lets them through unwrapped. Replay raises the
    recorded class again, not sqlite3's base class that SQLAlchemy would wrap in ``DBAPIError``."""
    import sqlean

    path = tmp_path / "app.db"

    def engine() -> Any:
        return create_engine("sqlite://", creator=lambda: sqlean.connect(str(path)))

    record = TraceConfig(mode="record", cassette_dir=str(cassette_dir))
    (recorded,) = send(serve(_duplicate_app(engine(), record)).url, [("POST", "/tags", {})])
    assert timetracer_otel.flush(30), "cassette writer did not drain"
    assert recorded.json() == {"raised": "sqlean.dbapi2.IntegrityError"}
    path.unlink()

    replay = TraceConfig(mode="replay", cassette_path=str(cassette_dir))
    (replayed,), (report,) = _replay(
        serve, _duplicate_app(engine(), replay), [("POST", "/tags", {})]
    )
    assert replayed.json() == recorded.json()
    assert (report.unmatched, report.differences) == ([], [])
    assert not path.exists()


def test_a_cassette_naming_an_error_of_a_package_never_imported_imports_nothing() -> None:
    """A cassette is read as untrusted input: the error class it names is looked up only in
    packages the process has imported (the driver's), never imported into being (``this``
    prints as it is imported), and a PEP 249 name that is none of the driver's error classes
    (``connect``) gives its base class."""
    from timetracer_otel.replayers.sqlalchemy import _exception_class

    dialect = create_engine("sqlite://").dialect
    assert "this" not in sys.modules
    named = {"type": "this.Error", "message": "x"}
    assert (
        _exception_class(named, {"dbapi_error": "IntegrityError"}, dialect)
        is sqlite3.IntegrityError
    )
    assert "this" not in sys.modules
    assert _exception_class(named, {"dbapi_error": "connect"}, dialect) is sqlite3.Error
    assert (
        _exception_class({"type": "sqlite3.OperationalError"}, None, dialect)
        is sqlite3.OperationalError
    )
