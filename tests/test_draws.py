"""The clock, UUIDs and randomness a request draws are recorded with it and handed back in replay.

The app (tests/apps/draws_app.py) imports its draws by name before timetracer is set up,
binds model defaults at import and keeps a ``random.Random`` made at import, as services do.
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime
import io
import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from _record_support import Barrier
from _replay import Sent, assert_same_response, new_reports, send, uvicorn_process
from apps.draws_app import create_app
from conftest import Upstream, load_cassettes
from opentelemetry.instrumentation.utils import suppress_http_instrumentation
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

import timetracer_otel
from timetracer_otel._keys import key_for
from timetracer_otel.config import TraceConfig
from timetracer_otel.determinism import DrawReplayer, called, decode_draws
from timetracer_otel.integrations.starlette import auto_setup
from timetracer_otel.sealing import Sealer, redacted, unsealed

_SOURCES = ["clock", "uuid", "random", "urandom", "secrets"]
_APP = "draws_app:create_app"


def _record_in_process(cassette_dir: Path, sent: list[Sent], **env: str) -> list[httpx.Response]:
    """The responses of a fresh uvicorn process recording ``sent`` into ``cassette_dir``."""
    record_env = {"TIMETRACER_MODE": "record", "TIMETRACER_DIR": str(cassette_dir), **env}
    with uvicorn_process(record_env, _APP) as server:
        responses = send(server.url, sent)
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    return responses


def _replay_in_process(
    cassette_dir: Path, sent: list[Sent], **env: str
) -> tuple[list[httpx.Response], str]:
    """The responses of a fresh uvicorn process replaying ``sent`` from ``cassette_dir``, and what it logged."""
    with uvicorn_process(
        {"TIMETRACER_MODE": "replay", "TIMETRACER_CASSETTE": str(cassette_dir), **env}, _APP
    ) as server:
        responses = send(server.url, sent)
    return responses, server.stderr


def _replays_identically(cassette_dir: Path, sources: list[str], **env: str) -> None:
    """Two requests per source: each got real, different values when recorded; replay, in two
    processes each sent them twice, gives each its own back (time-ordered ids keep state in
    their module: a second replay of a request by one process made other ids)."""
    sent: list[Sent] = [("GET", f"/draw/{source}/{n}", {}) for source in sources for n in (1, 2)]
    sent += [("GET", "/gather/1", {})]
    recorded = _record_in_process(cassette_dir, sent, **env)
    for index, source in enumerate(sources):
        first, second = (r.json() for r in recorded[2 * index : 2 * index + 2])
        varying = [key for key in first if first[key] != second[key]]
        assert varying, f"{source}: two requests drew the same values, nothing was drawn"
    for _ in range(2):
        replayed, log = _replay_in_process(cassette_dir, sent * 2)
        for before, after in zip(recorded * 2, replayed, strict=True):
            assert_same_response(before, after)
        assert "extra draws" not in log


def test_every_source_replays_identically_through_names_imported_directly(
    cassette_dir: Path,
) -> None:
    _replays_identically(cassette_dir, [*(s for s in _SOURCES if s != "secrets"), "ids"])


def test_an_app_replayed_under_another_module_name_gets_its_recorded_draws(
    cassette_dir: Path, serve: Callable[..., Any]
) -> None:
    """Recorded as ``apps.draws_app`` (imported from the tests' root), replayed as ``draws_app``
    (uvicorn from its directory): each caller's draws are found under the other name."""
    sent: list[Sent] = [("GET", f"/draw/{source}/1", {}) for source in ("uuid", "clock", "random")]
    server = serve(create_app(TraceConfig(mode="record", cassette_dir=str(cassette_dir))))
    recorded = send(server.url, sent)
    callers = {d["caller"] for doc in load_cassettes(cassette_dir) for d in doc["draws"]}
    assert "apps.draws_app" in callers and "draws_app" not in callers
    replayed, log = _replay_in_process(cassette_dir, sent)
    for before, after in zip(recorded, replayed, strict=True):
        assert_same_response(before, after)
    assert "extra draws" not in log


def test_secrets_draws_are_sealed_and_replay_identically_only_with_the_key(
    cassette_dir: Path, tmp_path: Path
) -> None:
    """Tokens drawn from ``secrets``, and those made of their bytes, never reach the cassette in clear:
    sealed with the key, replayed with it;
    a process without the key gets new ones and says so."""
    (recorded,) = _record_in_process(cassette_dir, [("GET", "/draw/secrets/1", {})])
    (cassette,) = load_cassettes(cassette_dir)
    assert {d["source"] for d in cassette["draws"]} == {"secrets"}
    assert {json.dumps(d["value"]) for d in redacted(cassette)["draws"]} == {'"[REDACTED]"'}
    assert _b64_of_hex(recorded.json()["token_hex"]) not in json.dumps(cassette)
    # nor the tokens made of the drawn bytes (a Redis session key, a cookie): token_urlsafe's
    # base64 and token_bytes's hex under names that say nothing of a secret
    drawn = recorded.json()
    assert [drawn[name] in json.dumps(cassette) for name in ("urlsafe", "token_bytes")] == [
        False,
        False,
    ]
    (with_key,), log = _replay_in_process(cassette_dir, [("GET", "/draw/secrets/1", {})])
    assert_same_response(recorded, with_key)
    assert "extra draws" not in log
    (without_key,), log = _replay_in_process(
        cassette_dir, [("GET", "/draw/secrets/1", {})], TIMETRACER_KEY_FILE=str(tmp_path / "none")
    )
    assert without_key.json()["token_hex"] != recorded.json()["token_hex"]
    # choice() may draw again
    assert re.search(r"extra draws \(not recorded, real values given\): secrets=[1-9]", log)


def test_with_redaction_off_secrets_draws_replay_identically(cassette_dir: Path) -> None:
    _replays_identically(cassette_dir, ["secrets"], TIMETRACER_REDACT="false")


def test_the_cassette_holds_each_draw_with_its_source_kind_and_caller(cassette_dir: Path) -> None:
    recorded = _record_in_process(
        cassette_dir,
        [("GET", "/draw/uuid/1", {}), ("GET", "/draw/urandom/1", {}), ("GET", "/draw/ids/1", {})],
    )
    by_path = {c["request"]["path"]: c for c in load_cassettes(cassette_dir)}
    uuids = by_path["/draw/uuid/1"]["draws"]
    assert [(d["source"], d["kind"], d["caller"]) for d in uuids] == [
        ("uuid", "uuid4", "draws_app"), ("uuid", "uuid1", "draws_app"), ("uuid", "uuid4", "draws_app"),
        ("uuid", "uuid4", "draws_app"), ("clock", "time", "draws_app"),  # the model's id and created_at
        ("uuid", "objectid", "draws_app"),
    ]  # fmt: skip
    assert [d["value"] for d in uuids if d["kind"] == "uuid4"][0] == {
        "$type": "uuid",
        "value": recorded[0].json()["uuid4"],
    }
    # the time-ordered ids of uuid-utils, uuid6 (and a copy of it), uuid7, python-ulid and
    # fastuuid are drawn whole
    assert [(d["source"], d["kind"], d["caller"]) for d in by_path["/draw/ids/1"]["draws"]] == [
        ("uuid", "uuid7", "draws_app"), ("uuid", "uuid4", "draws_app"), ("uuid", "uuid7", "draws_app"),
        ("uuid", "uuid7", "draws_app"), ("uuid", "ulid", "ulid"), ("uuid", "uuid7", "draws_app"),
        ("uuid", "uuid7", "draws_app"), ("uuid", "uuid4", "draws_app"), ("uuid", "uuid7", "draws_app"),
    ]  # fmt: skip
    urandom = by_path["/draw/urandom/1"]["draws"]
    assert [(d["source"], d["kind"]) for d in urandom] == [("urandom", "urandom")] * 2 + [
        ("urandom", "gensalt")
    ] * 2
    # os.urandom's bytes make tokens and salts: sealed, and opened by the key they were sealed with
    assert all(d["value"].startswith("[SEALED:") for d in urandom)
    assert unsealed(by_path["/draw/urandom/1"], Sealer(key_for(TraceConfig())))["draws"][0][
        "value"
    ] == {
        "$type": "bytes",
        "base64": _b64_of_hex(recorded[1].json()["urandom"]),
    }
    assert _b64_of_hex(recorded[1].json()["urandom"]) not in json.dumps(by_path["/draw/urandom/1"])
    # a bcrypt salt is hidden wherever it stands, as a column of its own is stored
    assert recorded[1].json()["bcrypt_salt"] not in json.dumps(by_path["/draw/urandom/1"])


def _b64_of_hex(text: str) -> str:
    import base64

    return base64.b64encode(bytes.fromhex(text)).decode()


def test_a_replay_that_draws_more_gets_a_continuing_clock_and_real_values_and_the_report_counts_them(
    cassette_dir: Path,
) -> None:
    (recorded,) = _record_in_process(cassette_dir, [("GET", "/extra/1", {})])
    (replayed,), log = _replay_in_process(
        cassette_dir, [("GET", "/extra/1", {})], DRAWS_APP_EXTRA="2"
    )
    before, after = recorded.json(), replayed.json()
    assert after["uuids"][0] == before["uuids"][0] and after["clock"][0] == before["clock"][0]
    assert len(set(after["uuids"])) == 3 and not set(after["uuids"][1:]) & set(before["uuids"])
    first, *extra = after["clock"]
    assert first < extra[0] <= extra[1] < time.time_ns(), (
        "the clock continues from the recorded value"
    )
    assert extra[0] - first < 60 * 10**9, "continues from the recorded value, not from today's time"
    assert "extra draws (not recorded, real values given): clock=2 uuid=2" in log


def test_draws_outside_the_request_stay_real(cassette_dir: Path) -> None:
    """A thread started without the request's context is not the request's: its values are real in replay."""
    (recorded,) = _record_in_process(cassette_dir, [("GET", "/outside/1", {})])
    (replayed,), _ = _replay_in_process(cassette_dir, [("GET", "/outside/1", {})])
    assert replayed.json()["inside"] == recorded.json()["inside"]
    assert replayed.json()["outside"][0] != recorded.json()["outside"][0]
    assert replayed.json()["outside"][1] > recorded.json()["outside"][1]
    (cassette,) = load_cassettes(cassette_dir)
    assert [d["kind"] for d in cassette["draws"]] == ["uuid4"]


@pytest.mark.parametrize("off", ["uuid", "clock", "none"])
def test_a_source_turned_off_is_neither_recorded_nor_replayed(cassette_dir: Path, off: str) -> None:
    sent: list[Sent] = [("GET", "/draw/uuid/1", {}), ("GET", "/draw/clock/1", {})]
    on = [source for source in _SOURCES if source != off] if off != "none" else []
    recorded = _record_in_process(cassette_dir, sent, TIMETRACER_DRAWS=",".join(on) or "none")
    assert {d["source"] for c in load_cassettes(cassette_dir) for d in c["draws"]} <= set(on)
    replayed, _ = _replay_in_process(cassette_dir, sent)
    same = [
        before.content == after.content for before, after in zip(recorded, replayed, strict=False)
    ]
    assert same == [off not in ("uuid", "none"), off not in ("clock", "none")]


def test_opentelemetry_span_times_stay_real_in_replay(
    serve: Callable[..., Any], cassette_dir: Path, spans: Any
) -> None:
    url = serve(create_app(TraceConfig(mode="record", cassette_dir=str(cassette_dir)))).url
    (recorded,) = send(url, [("GET", "/draw/clock/1", {})])
    assert timetracer_otel.flush(30)
    (cassette,) = load_cassettes(cassette_dir)
    assert (
        cassette["spans"][0]["start_time_unix_nano"]
        <= recorded.json()["time_ns"]
        <= cassette["spans"][0]["end_time_unix_nano"]
    )

    spans.clear()
    replay_started = time.time_ns()
    with new_reports() as reports:
        server = serve(create_app(TraceConfig(mode="replay", cassette_path=str(cassette_dir))))
        (replayed,) = send(server.url, [("GET", "/draw/clock/1", {})])
        server.stop()
    assert_same_response(recorded, replayed)
    assert reports[0].ok
    server_span = next(s for s in spans.get_finished_spans() if s.kind.name == "SERVER")
    assert server_span.start_time >= replay_started > replayed.json()["time_ns"]
    assert re.fullmatch(r"[0-9a-f]{32}", format(server_span.context.trace_id, "032x"))
    assert format(server_span.context.trace_id, "032x") != cassette["trace_id"]


def test_opentelemetry_span_clock_reads_and_ids_do_not_go_through_the_draw_hooks(
    spans: Any,
) -> None:
    """The SDK's two clock reads and its ids per span are never the app's draws: they skip the
    hooks (a trip through Python each), while the app's own read in the same request is drawn."""
    from opentelemetry import trace

    from timetracer_otel.determinism import sources, state

    sources.install(_SOURCES)  # as recording and replay do, once per process
    hooked: list[str] = []

    def watch(frame: Any, event: str, arg: Any) -> None:
        if event == "call" and frame.f_globals.get("__name__") == sources.__name__:
            hooked.append(frame.f_code.co_name)

    recorder = state.DrawRecorder(_SOURCES)
    token = state.activate(recorder)
    sys.setprofile(watch)
    try:
        trace.get_tracer("test").start_span("inner").end()
        spans_hooked = list(hooked)
        time.time_ns()  # the app's own read
    finally:
        sys.setprofile(None)
        state.deactivate(token)
    assert spans_hooked == []
    assert "time_ns" in hooked
    this = sys._getframe().f_code.co_name
    assert [draw[:3] for draw in recorder.draws] == [("clock", "time", f"{__name__}:{this}")]
    (span,) = [s for s in spans.get_finished_spans() if s.name == "inner"]
    assert span.start_time <= span.end_time and span.context.span_id != 0


_CONCURRENT = 1000


async def _get_all(url: str, paths: list[str]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(paths))
    with suppress_http_instrumentation():
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:
            return list(await asyncio.gather(*(client.get(f"{url}{path}") for path in paths)))


def test_1000_concurrent_requests_each_record_and_replay_only_their_own_draws(
    serve: Callable[..., Any], cassette_dir: Path
) -> None:
    """Every request is in flight before any draws; each draws from tasks and a worker thread."""
    paths = [f"/many/{n}" for n in range(_CONCURRENT)]
    record_config = TraceConfig(mode="record", cassette_dir=str(cassette_dir))
    recorded = asyncio.run(
        _get_all(serve(create_app(record_config, Barrier(_CONCURRENT, 30).wait)).url, paths)
    )
    assert timetracer_otel.flush(60)
    cassettes = {c["request"]["path"]: c for c in load_cassettes(cassette_dir)}
    assert len(cassettes) == _CONCURRENT
    for response in recorded:
        values = response.json()["values"]
        draws = [d["value"] for d in cassettes[f"/many/{response.json()['n']}"]["draws"]]
        uuids = [d["value"] for d in draws if isinstance(d, dict) and d.get("$type") == "uuid"]
        assert uuids == [values[0], values[2][0], values[3][0]] or uuids == [
            values[0],
            values[3][0],
            values[2][0],
        ]
        assert values[1] in draws and len(draws) == 9

    replay_config = TraceConfig(mode="replay", cassette_path=str(cassette_dir))
    with new_reports() as reports:
        server = serve(create_app(replay_config, Barrier(_CONCURRENT, 30).wait))
        replayed = asyncio.run(_get_all(server.url, paths))
        server.stop()
    assert [json.loads(r.content) for r in replayed] == [json.loads(r.content) for r in recorded]
    # the last 100 are kept
    assert reports and not [r for r in reports if r.extra_draws or not r.ok]


def _logging_app(config: TraceConfig, lines: list[str]) -> Starlette:
    """An app that logs with loguru and structlog, the time in each line, while it draws an id."""
    import loguru
    import structlog

    logger = loguru.logger.bind()
    logger.remove()
    logger.add(lines.append, format="{time:YYYY-MM-DDTHH:mm:ss.SSSSSSZ} {message}")
    stamped = structlog.wrap_logger(
        structlog.PrintLogger(io.StringIO()),
        processors=[
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            lambda _, __, event: lines.append(event["timestamp"]) or event,
            structlog.processors.JSONRenderer(),
        ],
    )

    async def order(request: Request) -> JSONResponse:
        order_id = str(uuid.uuid4())
        logger.info("order {}", order_id)
        stamped.info("order", id=order_id)
        return JSONResponse({"id": order_id})

    app = Starlette(routes=[Route("/orders", order, methods=["POST"])])
    auto_setup(app, config=config, plugins=[])
    return app


def _audited_app(config: TraceConfig, upstream: str) -> Starlette:
    """An app whose loguru sink sends each line, its time in it, to an audit service (as
    fief's audit log sink queues its lines to Redis); the sink's errors are loguru's."""
    import loguru

    logger = loguru.logger.bind()
    logger.remove()

    def audit(message: Any) -> None:
        record = message.record
        line = {"time": record["time"].isoformat(), "text": record["message"]}
        httpx.post(f"{upstream}/echo", json=line, timeout=10)

    logger.add(audit, catch=True)

    async def order(request: Request) -> JSONResponse:
        order_id = str(uuid.uuid4())
        logger.info("order {}", order_id)
        return JSONResponse({"id": order_id})

    app = Starlette(routes=[Route("/orders", order, methods=["POST"])])
    auto_setup(app, config=config, plugins=["httpx"])
    return app


def test_log_lines_sent_out_replay_when_the_logs_source_is_drawn(
    serve: Callable[..., Any], upstream: Any, cassette_dir: Path
) -> None:
    """With ``logs`` among the sources, a log line's time is drawn like the app's clock: the
    audit call carrying it matches in replay, whether the replaying process names ``logs`` or
    not (the cassette's draws are replayed). Replayed with draws off, the time is the real one
    and the call is not answered (loguru swallows the error; the report names it)."""
    from timetracer_otel.config import DEFAULT_DRAW_SOURCES, DRAW_SOURCES

    recording = TraceConfig(mode="record", cassette_dir=str(cassette_dir), draws=DRAW_SOURCES)
    (recorded,) = send(serve(_audited_app(recording, upstream.url)).url, [("POST", "/orders", {})])
    assert timetracer_otel.flush(30)
    (cassette,) = load_cassettes(cassette_dir)
    assert [d["caller"] for d in cassette["draws"] if d["source"] == "logs"] == ["loguru._datetime"]
    for draws in (DRAW_SOURCES, DEFAULT_DRAW_SOURCES, ()):
        replaying = TraceConfig(mode="replay", cassette_path=str(cassette_dir), draws=draws)
        with new_reports() as reports:
            server = serve(_audited_app(replaying, upstream.url))
            (replayed,) = send(server.url, [("POST", "/orders", {})])
            server.stop()
        (report,) = reports
        if draws:
            assert_same_response(recorded, replayed)
            assert not report.unmatched, report.unmatched
        else:
            assert report.unmatched


def test_log_lines_keep_the_real_time_and_are_not_drawn(
    serve: Callable[..., Any], cassette_dir: Path
) -> None:
    """A log line's time is the logging library's, not the app's: loguru's and structlog's clock
    reads stay real (as the ``logging`` module's do), so the cassette holds the app's own draw only
    and the replayed request logs when it runs."""
    lines: list[str] = []
    config = TraceConfig(mode="record", cassette_dir=str(cassette_dir))
    (recorded,) = send(serve(_logging_app(config, lines)).url, [("POST", "/orders", {})])
    assert timetracer_otel.flush(30)
    (cassette,) = load_cassettes(cassette_dir)
    assert [(d["source"], d["caller"]) for d in cassette["draws"]] == [("uuid", __name__)]

    replay_started = datetime.datetime.now(datetime.timezone.utc)
    lines.clear()
    replaying = TraceConfig(mode="replay", cassette_path=str(cassette_dir))
    (replayed,) = send(serve(_logging_app(replaying, lines)).url, [("POST", "/orders", {})])
    assert_same_response(recorded, replayed)
    assert len(lines) == 2
    # strptime's %z reads loguru's "+00:00" and structlog's "Z" on every supported Python.
    stamps = [
        datetime.datetime.strptime(line.split()[0], "%Y-%m-%dT%H:%M:%S.%f%z") for line in lines
    ]
    assert all(stamp >= replay_started for stamp in stamps)


def test_an_extra_draw_whose_real_source_draws_again_gets_its_value() -> None:
    """bcrypt before 4.1 made its salt of ``os.urandom`` in Python: a salt drawn beyond the
    recorded ones (replayed without the key that sealed it) ran the real ``gensalt``, whose
    ``os.urandom`` drew again through the hooks while the first draw held the replayer's lock:
    the request, and with it the whole server, waited for ever."""
    from timetracer_otel.determinism import (
        NO_RECORDED_DRAWS,
        DrawReplayer,
        activate,
        deactivate,
        install,
        real_time_ns,
    )

    install(["urandom"])
    replayer = DrawReplayer(NO_RECORDED_DRAWS, ["urandom"], real_time_ns)
    drawn: list[bytes] = []

    def replay() -> None:
        token = activate(replayer)
        try:
            drawn.append(replayer.draw("urandom", "gensalt", __name__, lambda: os.urandom(16)))
        finally:
            deactivate(token)

    thread = threading.Thread(target=replay, daemon=True)
    thread.start()
    thread.join(30)
    assert not thread.is_alive(), "the draw waits on the lock it holds"
    assert len(drawn[0]) == 16
    assert replayer.extra == {"urandom": 2}  # the salt, and the bytes it was made of


class _CreatedAt:
    """A metrics middleware, as prometheus-fastapi-instrumentator is one: after the response
    went out, the first request of a route makes its series, stamped with ``time.time()``."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.series: dict[str, tuple[float, str]] = {}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await self.app(scope, receive, send)
        finally:
            if scope["type"] == "http" and scope["path"] not in self.series:
                self.series[scope["path"]] = (time.time(), str(uuid.uuid4()))


def test_draws_made_after_the_response_went_out_are_in_the_cassette_and_replayed(
    serve: Callable[..., Any], cassette_dir: Path
) -> None:
    """The response's end ends the server span, and the recording is handed over then: the
    middleware's draws, later, were in no cassette, and replay made them anew (extra draws)."""

    def create(config: TraceConfig) -> tuple[Starlette, _CreatedAt]:
        async def hello(request: Any) -> JSONResponse:
            return JSONResponse({"hello": "world"})

        app = Starlette(routes=[Route("/hello", hello)])
        made: list[_CreatedAt] = []
        app.add_middleware(lambda inner: made.append(_CreatedAt(inner)) or made[0])
        auto_setup(app, config=config, plugins=[])
        return app, made

    app, made = create(TraceConfig(mode="record", cassette_dir=str(cassette_dir)))
    server = serve(app)
    assert httpx.get(f"{server.url}/hello").status_code == 200
    server.stop()  # the draws come after the client has the response
    assert timetracer_otel.flush(30)
    (document,) = load_cassettes(cassette_dir)
    assert [(d["source"], d["kind"]) for d in document["draws"]] == [
        ("clock", "time"),
        ("uuid", "uuid4"),
    ]
    recorded = made[0].series["/hello"]

    app, made = create(TraceConfig(mode="replay", cassette_path=str(cassette_dir)))
    with new_reports() as reports:
        server = serve(app)
        assert httpx.get(f"{server.url}/hello").status_code == 200
        server.stop()
    assert made[0].series["/hello"] == recorded
    assert [r.extra_draws for r in reports] == [{}]


def test_tasks_of_one_request_resume_as_their_replies_came_and_get_the_values_they_drew(
    serve: Callable[..., Any], upstream: Upstream, cassette_dir: Path
) -> None:
    """Two tasks await calls side by side and then draw: the second task's reply came first
    when recorded, so it finished first (``asyncio.as_completed`` says so) and drew first.
    Replay answers both at once: the tasks still finish in that order and each gets the values
    it drew, not the other's."""
    gate = "fanout"

    def create(config: TraceConfig) -> Starlette:
        async def fanout(request: Request) -> JSONResponse:
            async with httpx.AsyncClient() as client:

                async def order(name: str, path: str) -> tuple[str, list[str]]:
                    await client.get(f"{upstream.url}{path}")
                    drawn = [str(uuid.uuid4()), datetime.datetime.now().isoformat()]
                    if name == "fast":  # the slow reply comes once the fast task has drawn
                        upstream.gate(gate).set()
                    return name, drawn

                tasks = [
                    asyncio.ensure_future(order("slow", f"/slow?gate={gate}")),
                    asyncio.ensure_future(order("fast", "/json")),
                ]
                done = [(await task)[0] for task in asyncio.as_completed(tasks)]
            return JSONResponse({"done": done, **dict(task.result() for task in tasks)})

        app = Starlette(routes=[Route("/fanout", fanout)])
        auto_setup(app, config=config, plugins=["httpx"])
        return app

    sent: list[Sent] = [("GET", "/fanout", {})]
    record = serve(create(TraceConfig(mode="record", cassette_dir=str(cassette_dir))))
    (recorded,) = send(record.url, sent)
    assert recorded.json()["done"] == ["fast", "slow"]
    assert timetracer_otel.flush(30), "cassette writer did not drain"
    (document,) = load_cassettes(cassette_dir)
    assert [call["request"]["url"].split("?")[0] for call in document["calls"]] == [
        f"{upstream.url}/slow",
        f"{upstream.url}/json",
    ]
    # the fast task drew first, after the second call
    assert [d.get("after") for d in document["draws"] if d["kind"] == "uuid4"] == [1, 0]

    with new_reports() as reports:
        replay = serve(create(TraceConfig(mode="replay", cassette_path=str(cassette_dir))))
        (replayed,) = send(replay.url, sent)
        replay.stop()
    assert_same_response(recorded, replayed)
    assert [(r.extra_draws, r.differences) for r in reports] == [({}, [])]


def test_a_draw_gets_the_value_recorded_after_the_call_its_task_made_last() -> None:
    """Threads of a request (sync calls in a thread pool) resume in any order in replay: each
    draw takes the value drawn after the same call, then the next left in order."""
    recorded = decode_draws(
        [
            {"source": "uuid", "kind": "uuid4", "caller": "app.models", "value": "b", "after": 1},
            {"source": "uuid", "kind": "uuid4", "caller": "app.models", "value": "a", "after": 0},
            {"source": "uuid", "kind": "uuid4", "caller": "app.models", "value": "c"},
        ]
    )
    replayer = DrawReplayer(recorded, ["uuid"], time.time_ns)

    def in_a_task(after: int | None) -> Any:
        if after is not None:
            called(replayer, after)
        # imported under another name than recorded: the same stream
        return replayer.draw("uuid", "uuid4", "models", lambda: "real")

    drawn = [contextvars.copy_context().run(in_a_task, after) for after in (0, 1, None, None)]
    assert drawn == ["a", "b", "c", "real"]
    assert replayer.extra == {"uuid": 1}


def test_the_performance_counter_continues_from_its_last_recorded_value_after_them() -> None:
    """A replay that reads the performance counter more often than recorded gets the recorded
    readings, then readings going on from the last one by the real time elapsed: durations
    measured across them stay positive and small, whatever the replaying process's counter is."""
    recorded = decode_draws(
        [
            {"source": "clock", "kind": "perf_counter", "caller": "app.timing", "value": v}
            for v in (5_000_000_000, 5_250_000_000)
        ]
    )
    real = iter([10**15, 10**15 + 7, 10**15 + 9])
    replayer = DrawReplayer(recorded, ["clock"], time.time_ns)
    drawn = [
        replayer.draw("clock", "perf_counter", "app.timing:dispatch", lambda: next(real))
        for _ in range(3)
    ]
    assert drawn == [5_000_000_000, 5_250_000_000, 5_250_000_002]
    assert replayer.extra == {"clock": 1}


def test_a_clock_or_random_draw_no_app_could_have_got_is_left_out_as_an_extra_draw() -> None:
    """A hostile cassette's clock past 2262 (the app's dates overflow), before 1970, or a
    ``random()`` outside [0, 1): the app gets real values, and the report counts them."""
    recorded = decode_draws(
        [
            {"source": "clock", "kind": "time", "caller": "app", "value": 10**30},
            {"source": "clock", "kind": "time", "caller": "app", "value": -5},
            {
                "source": "clock",
                "kind": "time",
                "caller": "app",
                "value": 1_796_188_325_621_863_181,
            },
            {"source": "random", "kind": "random", "caller": "app", "value": 7.5},
            {"source": "random", "kind": "random", "caller": "app", "value": 0.25},
        ]
    )
    replayer = DrawReplayer(recorded, ["clock", "random"], time.time_ns)
    assert replayer.draw("clock", "time", "app", time.time_ns) == 1_796_188_325_621_863_181
    assert [replayer.draw("random", "random", "app", lambda: 0.5) for _ in range(2)] == [0.25, 0.5]
    assert replayer.extra == {"random": 1}


def _limited_orders_app(config: TraceConfig) -> Starlette:
    """Orders behind a rate limiter whose bucket, made on first use, notes when it started (as
    pyrate_limiter's leak task and a lazy ``_started = time.time()`` do): work done once per
    process, in the first request, in the same module as the orders' own draws."""
    bucket: dict[str, float] = {}

    def _bucket() -> dict[str, float]:
        if not bucket:
            bucket["started"] = time.time()
        return bucket

    async def order(request: Request) -> JSONResponse:
        _bucket()
        return JSONResponse(
            {"id": str(uuid.uuid4()), "at": datetime.datetime.now().isoformat(), "t": time.time()}
        )

    app = Starlette(routes=[Route("/orders/{n}", order)])
    auto_setup(app, config=config, plugins=[])
    return app


def _sites_left_out(directory: Path) -> None:
    """The cassettes as a release that kept a draw's module only wrote them."""
    for path in directory.rglob("*.json"):
        document = json.loads(path.read_text("utf-8"))
        for draw in document.get("draws", ()):
            draw.pop("site", None)
        path.write_text(json.dumps(document), "utf-8")


def test_a_request_replayed_without_the_one_that_did_once_per_process_work_gets_its_values(
    cassette_dir: Path, serve: Callable[..., Any]
) -> None:
    """The third order replayed alone by a fresh app: its bucket starts in it this time, and
    that read gets the first request's value for it, not the value the order's own ``now()``
    had. A cassette without sites still replays per module, in recording order."""
    sent: list[Sent] = [("GET", f"/orders/{n}", {}) for n in (1, 2, 3)]
    recorded = send(
        serve(_limited_orders_app(TraceConfig(mode="record", cassette_dir=str(cassette_dir)))).url,
        sent,
    )
    assert timetracer_otel.flush(30)
    (third,) = [
        path
        for path in cassette_dir.rglob("*.json")
        if json.loads(path.read_text("utf-8"))["request"]["path"] == "/orders/3"
    ]
    draws = json.loads(third.read_text("utf-8"))["draws"]
    assert [(d["caller"], d["site"]) for d in draws][:1] == [(__name__, "order")]

    with new_reports() as reports:
        server = serve(_limited_orders_app(TraceConfig(mode="replay", cassette_path=str(third))))
        (alone,) = send(server.url, sent[2:])
        server.stop()
    assert_same_response(recorded[2], alone)
    (report,) = reports
    # the bucket's start: the value the first request drew for it
    assert report.earlier_draws == {"clock": 1} and report.extra_draws == {}

    _sites_left_out(cassette_dir)
    with new_reports() as reports:
        config = TraceConfig(mode="replay", cassette_path=str(cassette_dir))
        server = serve(_limited_orders_app(config))
        replayed = send(server.url, sent)
        server.stop()
    for before, after in zip(recorded, replayed, strict=True):
        assert_same_response(before, after)
    assert [r.extra_draws for r in reports] == [{}, {}, {}]


def test_a_service_that_draws_does_not_import_pytest() -> None:
    """time-machine imports pytest, where it is installed, to offer its fixture: a service
    started to record or replay spent a third of a second of its start importing it."""
    code = (
        "import sys, time\n"
        "from timetracer_otel.determinism import install\n"
        "install(('clock',))\n"
        "time.time()\n"
        "print('pytest' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False", done.stderr


class _Limiter:
    """A rate limiter built on first use, as pyrate-limiter's is: it starts a task that reads
    the clock through the same function as the requests do (its leak loop's first pass)."""

    def __init__(self) -> None:
        self.stop = asyncio.Event()
        self.leaked_at: list[float] = []
        self.task = asyncio.create_task(self._leak())

    @staticmethod
    def now() -> float:
        return time.time()

    async def _leak(self) -> None:
        self.leaked_at.append(self.now())
        await self.stop.wait()


def _limited_app(config: TraceConfig) -> tuple[Starlette, list[_Limiter]]:
    built: list[_Limiter] = []

    async def stamp(request: Request) -> JSONResponse:
        if not built:
            built.append(_Limiter())
        await asyncio.sleep(0)  # the limiter's task runs its first pass here
        return JSONResponse({"n": request.path_params["n"], "at": built[0].now()})

    app = Starlette(routes=[Route("/stamp/{n}", stamp)])
    auto_setup(app, config=config, plugins=[])
    return app, built


def test_a_task_an_earlier_request_started_does_not_take_a_request_replayed_alone_its_draws(
    serve: Callable[..., Any], cassette_dir: Path
) -> None:
    """The second request, replayed alone, starts the limiter's task again: the task's clock
    read is kept apart from the request's, which gets its recorded time."""
    recording = TraceConfig(mode="record", cassette_dir=str(cassette_dir))
    app, built = _limited_app(recording)
    server = serve(app)
    recorded = send(server.url, [("GET", "/stamp/1", {}), ("GET", "/stamp/2", {})])
    built[0].stop.set()
    server.stop()
    assert timetracer_otel.flush(30)
    tasks = {d.get("task") for doc in load_cassettes(cassette_dir) for d in doc["draws"]}
    assert tasks == {None, "_Limiter._leak"}

    with new_reports() as reports:
        app, built = _limited_app(TraceConfig(mode="replay", cassette_path=str(cassette_dir)))
        server = serve(app)
        (alone,) = send(server.url, [("GET", "/stamp/2", {})])
        built[0].stop.set()
        server.stop()
    assert_same_response(recorded[1], alone)
    (report,) = reports
    assert (report.ok, report.extra_draws) == (True, {}), report.console_text()


def _middleware_app(config: TraceConfig) -> Starlette:
    """A request-id middleware (a ``BaseHTTPMiddleware``, as ``@app.middleware("http")``
    makes: the endpoint runs in a task of its own) and a streamed response whose generator draws as it is sent (another task)."""

    async def ids(request: Request) -> StreamingResponse:
        async def lines() -> AsyncIterator[bytes]:
            yield f"{uuid.uuid4()}\n".encode()
            yield f"{time.time()}\n".encode()

        return StreamingResponse(lines(), headers={"x-made": str(uuid.uuid4())})

    async def request_id(request: Request, call_next: Any) -> Any:
        response = await call_next(request)
        response.headers["x-request-id"] = str(uuid.uuid4())
        return response

    app = Starlette(
        routes=[Route("/ids", ids)],
        middleware=[Middleware(BaseHTTPMiddleware, dispatch=request_id)],
    )
    auto_setup(app, config=config, plugins=[])
    return app


def test_draws_in_the_tasks_a_middleware_and_a_streamed_response_run_replay_as_recorded(
    serve: Callable[..., Any], cassette_dir: Path
) -> None:
    """Those tasks are the same when replaying: their draws, kept apart by coroutine, are
    handed back as recorded."""
    server = serve(_middleware_app(TraceConfig(mode="record", cassette_dir=str(cassette_dir))))
    recorded = send(server.url, [("GET", "/ids", {})] * 2)
    server.stop()
    assert timetracer_otel.flush(30)
    tasks = {d.get("task") for doc in load_cassettes(cassette_dir) for d in doc["draws"]}
    assert len(tasks) > 1 and None in tasks

    with new_reports() as reports:
        replaying = TraceConfig(mode="replay", cassette_path=str(cassette_dir))
        server = serve(_middleware_app(replaying))
        replayed = send(server.url, [("GET", "/ids", {})] * 2)
        server.stop()
    for before, after in zip(recorded, replayed, strict=True):
        assert_same_response(before, after)
        assert before.headers["x-request-id"] == after.headers["x-request-id"]
    assert [(r.ok, r.extra_draws) for r in reports] == [(True, {})] * 2


class _ProcessTime(BaseHTTPMiddleware):
    """FastAPI's documented middleware: the time the app took, in a response header, read with
    the ``time`` function named ``counter`` (``perf_counter`` in FastAPI's docs; ``monotonic``
    and ``monotonic_ns`` in many apps)."""

    def __init__(self, app: Any, counter: str) -> None:
        super().__init__(app)
        self.counter = counter

    async def dispatch(self, request: Request, call_next: Any) -> Any:
        start = getattr(time, self.counter)()
        response = await call_next(request)
        response.headers["X-Process-Time"] = str(getattr(time, self.counter)() - start)
        return response


def _timed_app(config: TraceConfig, upstream_url: str, counter: str) -> Starlette:
    async def fetch(request: Request) -> JSONResponse:
        async with httpx.AsyncClient() as client:
            # the event loop's timer for the timeout reads the real monotonic clock
            got = await asyncio.wait_for(client.get(f"{upstream_url}/json"), timeout=30)
        return JSONResponse({"status": got.status_code})

    middleware = [Middleware(_ProcessTime, counter=counter)]
    app = Starlette(routes=[Route("/fetch", fetch)], middleware=middleware)
    auto_setup(app, config=config)
    return app


@pytest.mark.parametrize("counter", ["perf_counter", "monotonic", "monotonic_ns"])
def test_a_duration_the_app_measures_and_sends_is_the_recorded_one_and_library_timers_stay_real(
    cassette_dir: Path, serve: Callable[..., Any], upstream: Upstream, counter: str
) -> None:
    """The app's ``time.perf_counter()`` or ``time.monotonic()`` reads (FastAPI's X-Process-Time
    header) are drawn, so the replayed header is the recorded one; httpx's own reads for
    ``Response.elapsed`` and the event loop's for the timeout are not."""
    record = TraceConfig(mode="record", cassette_dir=str(cassette_dir))
    server = serve(_timed_app(record, upstream.url, counter))
    recorded = send(server.url, [("GET", "/fetch", {})])
    server.stop()
    (doc,) = load_cassettes(cassette_dir)
    kind = counter.removesuffix("_ns")
    timers = [(d["caller"], d.get("site")) for d in doc["draws"] if d["kind"] == kind]
    assert timers == [(__name__, "dispatch")] * 2
    replay = TraceConfig(mode="replay", cassette_path=str(cassette_dir))
    replayed = send(serve(_timed_app(replay, upstream.url, counter)).url, [("GET", "/fetch", {})])
    assert_same_response(recorded[0], replayed[0])
    assert float(replayed[0].headers["x-process-time"]) > 0
