"""Redis through redis-py (sync and asyncio): recorded through uvicorn against the real server
at 127.0.0.1:6379, replayed with the clients pointed at a closed port and no connection opened."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio
from _replay import assert_same_response, get_at_once, new_reports, send, uvicorn_process
from apps.redis_app import FLAVOURS, HASH_TOKEN, STREAM_TOKEN, TRIMMED_TOKEN, create_app
from conftest import load_cassettes
from opentelemetry import propagate
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from otlp_receiver import exporting_to_receiver
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import timetracer_otel
from timetracer_otel.cassette.values import decode_value
from timetracer_otel.cli.labels import call_label
from timetracer_otel.config import TraceConfig
from timetracer_otel.integrations.starlette import auto_setup
from timetracer_otel.replayers import ReplayMismatchError, ReplaySession, install_replayers
from timetracer_otel.replayers.session import activate, deactivate
from timetracer_otel.sealing import redacted

REDIS_URL = "redis://127.0.0.1:6379/0"
CLOSED_URL = "redis://127.0.0.1:1/0"
REDIS_PORTS = {6379, 1}


@pytest.fixture
def prefix() -> Iterator[str]:
    """A key prefix of the test's own; its keys are deleted afterwards."""
    value = f"tt-test:{uuid.uuid4().hex[:12]}"
    yield value
    with redis.Redis.from_url(REDIS_URL) as client:
        keys = list(client.scan_iter(match=f"{value}:*"))
        if keys:
            client.delete(*keys)


def _redis_connects(seen: list[Any]) -> list[Any]:
    return [address for address in seen if isinstance(address, tuple) and address[1] in REDIS_PORTS]


def _run(
    serve: Callable[..., Any], config: TraceConfig, url: str, prefix: str, paths: list[str]
) -> tuple[list[httpx.Response], Any]:
    """The app's responses to ``paths`` (sent at once) and its redis clients, after the server stopped."""
    app = create_app(url, config, prefix)
    server = serve(app, lifespan="on")
    responses = get_at_once(server.url, paths)
    server.stop()
    return responses, app.state.redis_clients


def _record(
    serve: Callable[..., Any], cassette_dir: Path, prefix: str, paths: list[str]
) -> list[httpx.Response]:
    config = TraceConfig(mode="record", cassette_dir=str(cassette_dir))
    responses, _ = _run(serve, config, REDIS_URL, prefix, paths)
    assert [r.status_code for r in responses] == [200] * len(paths), [r.text for r in responses]
    return responses


def _replay(
    serve: Callable[..., Any], cassette_dir: Path, prefix: str, paths: list[str]
) -> tuple[list[httpx.Response], Any]:
    return _run(
        serve,
        TraceConfig(mode="replay", cassette_path=str(cassette_dir)),
        CLOSED_URL,
        prefix,
        paths,
    )


def _pool_connections(client: Any) -> int:
    pool = client.connection_pool
    return len(pool._available_connections) + len(pool._in_use_connections)


def _steps(response: httpx.Response) -> dict[str, str]:
    return {row["step"]: row["value"] for row in response.json()}


def _redis_calls(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [call for call in document["calls"] if call["protocol"] == "redis"]


def test_record_then_replay_with_no_server_gives_identical_replies(
    serve: Callable[..., Any], cassette_dir: Path, prefix: str, connects: list[Any]
) -> None:
    paths = [f"/scenario/{flavour}" for flavour in FLAVOURS]
    recorded = _record(serve, cassette_dir, prefix, paths)
    assert _redis_connects(connects), "the connect recorder saw no redis connection while recording"

    by_bytes, by_str = _steps(recorded[0]), _steps(recorded[1])
    assert by_bytes["get"] == "b'hello'" and by_str["get"] == "'hello'"
    assert by_bytes["incrbyfloat"] == "2.5" and by_bytes["get missing"] == "None"
    assert by_bytes["hgetall"] == "{b'a': b'1', b'b': b'two'}"
    assert by_str["smembers"] == "set({'m1', 'm2', 'm3'})"
    assert by_bytes["zrange withscores"] == "[(b'one', 1.0,), (b'two', 2.5,)]"
    assert by_str["pipeline"].startswith("[True, 'v', redis.exceptions.ResponseError(WRONGTYPE")
    assert by_str["pipeline"].endswith(", 1, 2.5]")
    assert by_bytes["multi/exec"].startswith("[1, redis.exceptions.ResponseError(WRONGTYPE")
    assert by_bytes["conflict handled"] == "redis.exceptions.WatchError(Watched variable changed.)"
    assert by_str["wrongtype handled"].startswith("redis.exceptions.ResponseError(WRONGTYPE")
    # asyncio gives the same types
    assert _steps(recorded[2]) == by_bytes and _steps(recorded[3]) == by_str

    connects.clear()
    replayed, clients = _replay(serve, cassette_dir, prefix, paths)
    for before, after in zip(recorded, replayed, strict=False):
        assert after.status_code == 200, after.text
        assert after.json() == before.json()
    assert _redis_connects(connects) == []
    assert {
        flavour: _pool_connections(client) for flavour, client in clients.items()
    } == dict.fromkeys(FLAVOURS, 0)


@pytest.mark.parametrize("flavour", ["sync-bytes", "async-bytes"])
def test_cassette_holds_commands_pipelines_and_errors_as_typed_values(
    serve: Callable[..., Any], cassette_dir: Path, prefix: str, flavour: str
) -> None:
    _record(serve, cassette_dir, prefix, [f"/scenario/{flavour}"])
    (document,) = load_cassettes(cassette_dir)
    calls = _redis_calls(document)
    spans = {span["span_id"]: span for span in document["spans"]}
    for call in calls:  # each call hangs under the OpenTelemetry redis span it was made in
        assert call["kind"] == "redis.client" and call["library"] == "redis"
        assert spans[call["span_id"]]["kind"] == "CLIENT"
    requests = [decode_value(call["request"]) for call in calls]
    key = f"{prefix}:{flavour}"
    assert requests[0] == {
        "command": "SET",
        "args": [f"{key}:s", "hello", "EX", 60],
        "decode_responses": False,
    }
    hgetall = calls[[r.get("command") for r in requests].index("HGETALL")]
    assert decode_value(hgetall["response"]) == {"reply": {b"a": b"1", b"b": b"two"}}
    pipeline = next(
        c for c, r in zip(calls, requests, strict=False) if "pipeline" in r and not r["transaction"]
    )
    assert [entry["command"] for entry in decode_value(pipeline["request"])["pipeline"]] == [
        "SET",
        "GET",
        "LPUSH",
        "EXISTS",
        "ZSCORE",
    ]
    response = decode_value(pipeline["response"])
    assert response["replies"] == [True, b"v", None, 1, 2.5]
    assert (
        response["errors"][0]["index"] == 2
        and response["errors"][0]["type"] == "redis.exceptions.ResponseError"
    )
    watch_conflict = next(
        c
        for c, r in zip(calls, requests, strict=False)
        if r.get("pipeline") == [{"command": "SET", "args": [f"{key}:w", "mine"]}]
    )
    assert watch_conflict["error"] == {
        "type": "redis.exceptions.WatchError",
        "message": "Watched variable changed.",
    }
    assert decode_value(watch_conflict["request"])["transaction"] is True


def test_fifty_concurrent_replays_get_their_own_replies(
    serve: Callable[..., Any], cassette_dir: Path, prefix: str, connects: list[Any]
) -> None:
    paths = [f"/item/{number}" for number in range(50)]
    recorded = _record(serve, cassette_dir, prefix, paths)
    connects.clear()
    replayed, _ = _replay(serve, cassette_dir, prefix, paths)
    for number, (before, after) in enumerate(zip(recorded, replayed, strict=False)):
        assert after.status_code == 200, after.text
        assert after.json() == before.json()
        value = f"value-{number}"
        assert _steps(after) == {
            "set": "True",
            "incrby": str(number),
            "pipeline": f"[{value!r}, {len(value)}]",
        }
    assert _redis_connects(connects) == []


def test_a_changed_key_raises_a_mismatch_naming_the_closest_recorded_command(
    serve: Callable[..., Any], cassette_dir: Path, prefix: str
) -> None:
    _record(serve, cassette_dir, prefix, ["/lookup/first"])
    with new_reports() as reports:
        (response,), _ = _replay(serve, cassette_dir, prefix, ["/lookup/second"])
    assert response.status_code == 500
    assert response.json()["error"] == "ReplayMismatchError"
    message = response.json()["message"]
    assert f"no recorded call matches GET {prefix}:lookup:second:k (redis)" in message
    assert f"#0 GET {prefix}:lookup:first:k (unused)" in message
    assert f"key: recorded {prefix}:lookup:first:k, this call {prefix}:lookup:second:k" in message
    assert reports[0].unmatched == [message.splitlines()[0]]


def test_replayed_commands_still_make_opentelemetry_client_spans(
    serve: Callable[..., Any], cassette_dir: Path, prefix: str, spans: InMemorySpanExporter
) -> None:
    _record(serve, cassette_dir, prefix, ["/item/7"])
    spans.clear()
    (response,), _ = _replay(serve, cassette_dir, prefix, ["/item/7"])
    assert response.status_code == 200, response.text
    finished = spans.get_finished_spans()
    servers = {s.context.span_id for s in finished if s.kind is SpanKind.SERVER}
    redis_spans = [
        s
        for s in finished
        if s.kind is SpanKind.CLIENT and s.attributes.get("db.system") == "redis"
    ]
    # a pipeline span is named by its commands
    assert [s.name for s in redis_spans] == [
        "SET",
        "INCRBY",
        "GET STRLEN",
    ]
    assert all(s.parent is not None and s.parent.span_id in servers for s in redis_spans)


def test_passwords_are_sealed_in_the_cassette_and_replay_with_the_key_answers_them(
    serve: Callable[..., Any], cassette_dir: Path, prefix: str
) -> None:
    with exporting_to_receiver() as (receiver, processor):
        (recorded,) = _record(serve, cassette_dir, prefix, ["/credentials"])
        assert timetracer_otel.flush(30), "cassette writer did not drain"
        assert processor.force_flush()
    # The collector got the failing pipeline's span, its error message without the password.
    assert any(b"of pipeline caused error" in body for body in receiver.bodies)
    assert not [body for body in receiver.bodies if b"s3cret" in body]
    (document,) = load_cassettes(cassette_dir)
    # Neither the calls nor the spans hold a password; the span of the failing pipeline
    # recorded the error message quoting it (its exception event and status), hidden there too.
    # (The app's own response quotes it: that is the app's data, see docs/redis.md.)
    assert "s3cret" not in json.dumps(document["calls"])
    assert "s3cret" not in json.dumps(document["spans"])
    # sealed: the tests record with a key
    assert any("[SEALED:" in json.dumps(span["events"]) for span in document["spans"])
    shown = [decode_value(call["request"]) for call in _redis_calls(redacted(document))]
    assert shown[0]["args"] == ["default", "[REDACTED]"]
    assert shown[1]["args"] == [
        "127.0.0.1",
        1,
        "",
        0,
        100,
        "AUTH2",
        "u",
        "[REDACTED]",
        "KEYS",
        f"{prefix}:auth:none",
    ]
    assert [entry["args"] for entry in shown[2]["pipeline"]] == [
        ["default", "[REDACTED]"],
        [f"{prefix}:auth:pipe", "soon", "[REDACTED]"],
    ]

    (replayed,), _ = _replay(serve, cassette_dir, prefix, ["/credentials"])
    # the app saw the real error message (it quotes the command) ...
    assert "pipe-s3cret" in recorded.text
    # ... and the replay, with the key, too
    assert (replayed.status_code, replayed.json()) == (
        200,
        recorded.json(),
    )


@pytest.mark.parametrize("flavour", ["sync-bytes", "async-str"])
def test_hash_and_stream_fields_named_like_secrets_are_sealed_in_every_reply_that_names_them(
    serve: Callable[..., Any], cassette_dir: Path, prefix: str, flavour: str
) -> None:
    """HSCAN, HRANDFIELD WITHVALUES, XADD and the stream reads: a token read back in any of them
    (and in the response that shows it) is sealed, and replay with the key gives it back."""
    (recorded,) = _record(serve, cassette_dir, prefix, [f"/secret-fields/{flavour}"])
    assert timetracer_otel.flush(30)
    shown = recorded.text
    for token in (HASH_TOKEN, STREAM_TOKEN, TRIMMED_TOKEN):
        assert token in shown  # the app read them
    (document,) = load_cassettes(cassette_dir)
    text = json.dumps(document)
    for token in (HASH_TOKEN, STREAM_TOKEN, TRIMMED_TOKEN):
        assert token not in text
        assert base64.b64encode(token.encode()).decode() not in text  # bytes replies
    calls = {
        call["request"]["command"]: decode_value(call) for call in _redis_calls(redacted(document))
    }
    assert calls["XADD"]["request"]["args"][-2:] == ["refresh_token", "[REDACTED]"]
    assert "user" in repr(calls["XRANGE"]["response"])  # other fields are data

    (replayed,), _ = _replay(serve, cassette_dir, prefix, [f"/secret-fields/{flavour}"])
    assert (replayed.status_code, replayed.json()) == (200, recorded.json())


def test_a_secret_of_an_earlier_request_is_sealed_where_a_later_one_reads_it_back_unnamed(
    serve: Callable[..., Any], cassette_dir: Path, prefix: str
) -> None:
    """/invite queues a job whose pickled arguments hold a fresh token (sealed in its cassette:
    drawn from ``secrets``); /job reads the pickle back later, where nothing names the token.
    Its cassette holds it nowhere, not even inside the stored bytes; replay with the key gives
    the job back as read."""
    config = TraceConfig(mode="record", cassette_dir=str(cassette_dir))
    server = serve(create_app(REDIS_URL, config, prefix), lifespan="on")
    with httpx.Client(base_url=server.url) as client:
        invited, read_back = client.get("/invite"), client.get("/job")
    server.stop()
    assert timetracer_otel.flush(30)
    token = _steps(invited)["token"].strip("'")
    assert token in read_back.text  # the app read it back
    by_path = {doc["request"]["path"]: doc for doc in load_cassettes(cassette_dir)}
    for document in by_path.values():
        text = json.dumps(document)
        stored = [decode_value(call["response"])["reply"] for call in _redis_calls(document)]
        assert token not in text and not [s for s in stored if token.encode() in repr(s).encode()]
    (reply,) = [
        decode_value(c["response"])["reply"] for c in _redis_calls(redacted(by_path["/job"]))
    ]
    assert reply == b"[REDACTED]"  # bytes holding a secret are hidden whole, still bytes

    (replayed,), _ = _replay(serve, cassette_dir, prefix, ["/job"])
    assert (replayed.status_code, replayed.json()) == (200, read_back.json())


def test_pubsub_records_its_commands_and_messages_and_replays_them_with_no_server(
    serve: Callable[..., Any], cassette_dir: Path, prefix: str, connects: list[Any]
) -> None:
    paths = [f"/news/{flavour}" for flavour in FLAVOURS]
    recorded = _record(serve, cassette_dir, prefix, paths)
    sync_bytes, async_str = _steps(recorded[0]), _steps(recorded[3])
    assert sync_bytes["first read"].startswith("{'type': 'subscribe'")
    assert sync_bytes["second read"].endswith("'data': b'hello'}")
    assert async_str["second read"].endswith("'data': 'hello'}")
    assert sync_bytes["nothing more"] == "None"
    document = next(d for d in load_cassettes(cassette_dir) if d["request"]["path"] == paths[0])
    requests = [decode_value(call["request"]) for call in _redis_calls(document)]
    assert [request.get("pubsub") for request in requests] == [
        True,  # SUBSCRIBE
        None,  # PUBLISH, on the client
        "message",  # the confirmation
        "message",  # the message (the read that found nothing is no call)
        True,  # UNSUBSCRIBE
    ]
    assert [call_label(call) for call in _redis_calls(document)][::2] == [
        f"redis pub/sub SUBSCRIBE {prefix}:news:sync-bytes:news",
        "redis pub/sub message",
        f"redis pub/sub UNSUBSCRIBE {prefix}:news:sync-bytes:news",
    ]

    connects.clear()
    replayed, _ = _replay(serve, cassette_dir, prefix, paths)
    assert [r.json() for r in replayed] == [r.json() for r in recorded]
    assert _redis_connects(connects) == []


def test_a_blocking_pubsub_read_with_no_recorded_message_left_raises_instead_of_waiting(
    connects: list[Any],
) -> None:
    install_replayers()
    session = ReplaySession({"calls": []}, "empty.json")
    token = activate(session)
    try:
        pubsub = redis.Redis.from_url(CLOSED_URL).pubsub()
        with pytest.raises(ReplayMismatchError, match=r"\(pub/sub\) SUBSCRIBE news"):
            pubsub.subscribe("news")
        with pytest.raises(ReplayMismatchError, match=r"\(pub/sub message\)"):
            pubsub.parse_response(block=True)
        assert pubsub.get_message(timeout=0) is None  # a read that may find nothing finds nothing
    finally:
        deactivate(token)
    assert len(session.unmatched) == 2
    assert _redis_connects(connects) == []


def test_a_listener_started_with_the_app_waits_in_replay_once_its_messages_are_used_up(
    cassette_dir: Path, prefix: str
) -> None:
    """fastapi_best_architecture's cache invalidation listener, started in the lifespan: when
    recorded it was still waiting for a message as the process ended. Replayed, it got its
    recorded messages and then a mismatch, subscribed again, failed again, every few seconds
    for as long as the app ran; now it waits, and stops when the app does."""
    env = {"LISTENER_APP_REDIS": REDIS_URL, "LISTENER_APP_CHANNEL": f"{prefix}:invalidate"}
    record = {**env, "TIMETRACER_MODE": "record", "TIMETRACER_DIR": str(cassette_dir)}
    with uvicorn_process(record, "listener_app:from_environment") as server:
        recorded = httpx.post(f"{server.url}/invalidate", params={"key": "k1"}, timeout=30)
    assert recorded.json() == {"receivers": 1}
    assert "listener_app: stopped, 0 listener errors" in server.stderr, server.stderr

    replay = {**env, "LISTENER_APP_REDIS": CLOSED_URL, "TIMETRACER_MODE": "replay"}
    replay["TIMETRACER_CASSETTE"] = str(cassette_dir)
    with uvicorn_process(replay, "listener_app:from_environment") as server:
        replayed = httpx.post(f"{server.url}/invalidate", params={"key": "k1"}, timeout=30)
        # sent after the listener's read found nothing left: any failure of it is seen here
        health = httpx.get(f"{server.url}/health", timeout=30)
    assert replayed.json() == recorded.json() and health.status_code == 200
    assert "listener_app: stopped, 0 listener errors" in server.stderr, server.stderr
    assert "ReplayMismatchError" not in server.stderr


def _limiter_app(config: TraceConfig, prefix: str, url: str = REDIS_URL) -> Starlette:
    """A sliding-window rate limiter on a Redis sorted set, as pyrate_limiter's Redis bucket:
    its leak task, started by the first request that hits it, trims the window with the time
    it reads in its own function; each hit adds itself and counts the window."""
    client = redis.asyncio.Redis.from_url(url)
    window = f"{prefix}:window"
    tasks: list[asyncio.Task[None]] = []

    async def leak() -> None:
        while True:
            await client.zremrangebyscore(window, 0, time.time_ns() // 10**6 - 60_000)
            await asyncio.sleep(60)

    async def hit(request: Request) -> JSONResponse:
        if not tasks:
            tasks.append(asyncio.create_task(leak()))
        now = time.time_ns() // 10**6
        await client.zadd(window, {f"{request.path_params['name']}:{now}": now})
        return JSONResponse({"in_window": await client.zcount(window, now - 60_000, now)})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        yield
        for task in tasks:
            task.cancel()

    app = Starlette(routes=[Route("/hit/{name}", hit)], lifespan=lifespan)
    auto_setup(app, config=config, plugins=["redis"])
    return app


def test_a_request_replayed_without_the_one_that_started_a_poller_gets_what_that_one_drew(
    serve: Callable[..., Any], cassette_dir: Path, prefix: str
) -> None:
    """The second hit replayed alone starts the leak task itself: its clock read is the one
    the first request's task made (the recording process made it there), so its trim is the
    first request's, answered from that request's cassette, and the report says both."""
    config = TraceConfig(mode="record", cassette_dir=str(cassette_dir))
    server = serve(_limiter_app(config, prefix), lifespan="on")
    recorded = send(server.url, [("GET", "/hit/a", {}), ("GET", "/hit/b", {})])
    server.stop()
    assert timetracer_otel.flush(30)
    assert [r.json() for r in recorded] == [{"in_window": 1}, {"in_window": 2}]
    (second,) = [
        path for path in cassette_dir.rglob("*.json") if '"/hit/b"' in path.read_text("utf-8")
    ]
    with new_reports() as reports:
        replaying = TraceConfig(mode="replay", cassette_path=str(second))
        server = serve(_limiter_app(replaying, prefix, CLOSED_URL), lifespan="on")
        (alone,) = send(server.url, [("GET", "/hit/b", {})])
        server.stop()
    assert_same_response(recorded[1], alone)
    (report,) = reports
    assert report.ok, report.console_text()
    assert report.earlier_draws == {"clock": 1} and report.extra_draws == {}
    assert [text.split(" (answered by")[0] for text in report.from_earlier] == [
        f"redis ZREMRANGEBYSCORE {prefix}:window 0 {report.from_earlier[0].split()[4]}"
    ]


def _queueing_app(config: TraceConfig, prefix: str, url: str = REDIS_URL) -> Starlette:
    """Queues a task message with the request's trace context in its labels, as taskiq's and
    Celery's OpenTelemetry instrumentations do (``propagate.inject``)."""
    client = redis.asyncio.Redis.from_url(url)

    async def send_mail(request: Request) -> JSONResponse:
        labels: dict[str, str] = {}
        propagate.inject(labels)
        task = {"task": "send_mail", "args": [request.path_params["to"]], "labels": labels}
        queued = await client.lpush(f"{prefix}:tasks", json.dumps(task))
        return JSONResponse({"queued": queued})

    app = Starlette(routes=[Route("/mail/{to}", send_mail, methods=["POST"])])
    auto_setup(app, config=config, plugins=["redis"])
    return app


def test_a_message_carrying_the_trace_context_replays(
    serve: Callable[..., Any], cassette_dir: Path, prefix: str
) -> None:
    """The replayed request runs under new trace and span ids: the message's ``traceparent``
    differs from the recorded one and is left out of matching, the rest of it is not."""
    config = TraceConfig(mode="record", cassette_dir=str(cassette_dir))
    url = serve(_queueing_app(config, prefix)).url
    recorded = send(url, [("POST", "/mail/ada", {}), ("POST", "/mail/bob", {})])
    assert timetracer_otel.flush(30)
    (queued,) = redis.Redis.from_url(REDIS_URL).lrange(f"{prefix}:tasks", 0, 0)
    assert json.loads(queued)["labels"]["traceparent"].startswith("00-")

    with new_reports() as reports:
        replaying = TraceConfig(mode="replay", cassette_path=str(cassette_dir))
        server = serve(_queueing_app(replaying, prefix, CLOSED_URL))
        replayed = send(server.url, [("POST", "/mail/ada", {}), ("POST", "/mail/bob", {})])
        server.stop()
    for before, after in zip(recorded, replayed, strict=True):
        assert_same_response(before, after)
    assert [report.ok for report in reports] == [True, True]

    with new_reports() as reports:
        server = serve(_queueing_app(replaying, prefix, CLOSED_URL))
        (other,) = send(server.url, [("POST", "/mail/cy", {})])
        server.stop()
    assert other.status_code == 500 and not reports[0].ok


def test_live_redis_goes_to_the_server_while_the_rest_replays(prefix: str) -> None:
    install_replayers()
    session = ReplaySession({"calls": []}, "empty.json", live_libraries=["redis"])
    token = activate(session)
    try:
        with redis.Redis.from_url(REDIS_URL, decode_responses=True) as client:
            client.set(f"{prefix}:live", "real")
            assert client.get(f"{prefix}:live") == "real"
    finally:
        deactivate(token)
    assert session.unmatched == [] and session.answered == []


def test_a_replaying_process_refuses_redis_calls_outside_any_request(
    monkeypatch: pytest.MonkeyPatch, connects: list[Any]
) -> None:
    install_replayers()
    monkeypatch.setenv("TIMETRACER_MODE", "replay")
    client = redis.Redis.from_url(CLOSED_URL)
    with pytest.raises(
        ReplayMismatchError,
        match=r"no recorded call matches GET k \(redis\)\ncassette: \(no process cassette\)",
    ):
        client.get("k")
    pipe = client.pipeline().set("k", 1).incr("n")
    with pytest.raises(
        ReplayMismatchError, match=r"no recorded call matches MULTI/EXEC \[SET k 1; INCRBY n 1\]"
    ):
        pipe.execute()
    assert _redis_connects(connects) == []


def _counter_app(config: TraceConfig, key: str) -> Any:
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from timetracer_otel.integrations.starlette import auto_setup

    client = redis.asyncio.Redis.from_url(REDIS_URL)

    async def hit(request: Any) -> JSONResponse:
        await client.delete(key)
        return JSONResponse({"a": await client.incr(key), "b": await client.incr(key)})

    app = Starlette(routes=[Route("/hit", hit)])
    auto_setup(app, config=config, plugins=["redis"])
    return app


def _patched_with_wraps(wrapped: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(wrapped)
    def sentry_patched_execute_command(self: Any, *args: Any, **kwargs: Any) -> Any:
        return wrapped(self, *args, **kwargs)

    return sentry_patched_execute_command


def _patched_in_a_closure(old_execute_command: Callable[..., Any]) -> Callable[..., Any]:
    def sentry_patched_execute_command(self: Any, *args: Any, **kwargs: Any) -> Any:
        return old_execute_command(self, *args, **kwargs)

    return sentry_patched_execute_command


@pytest.mark.parametrize("patch", [_patched_with_wraps, _patched_in_a_closure])
def test_a_library_that_wraps_execute_command_over_ours_gets_no_second_layer(
    serve: Callable[..., Any],
    cassette_dir: Path,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    patch: Callable[[Callable[..., Any]], Callable[..., Any]],
) -> None:
    """sentry-sdk's Redis integration replaces ``execute_command`` with a function over what
    was there, timetracer's layer among it: made by ``functools.wraps``, or (2.18) keeping it
    in its closure only. Enabled after that, the plugin added a second layer: every command
    was recorded twice, and replay answered the second INCR with the first one's reply."""
    from timetracer_otel.plugins import enable_redis

    enable_redis()
    for owner in (redis.Redis, redis.asyncio.Redis):
        monkeypatch.setattr(owner, "execute_command", patch(owner.execute_command))
    key = f"{prefix}:hits"
    record = serve(_counter_app(TraceConfig(mode="record", cassette_dir=str(cassette_dir)), key))
    recorded = httpx.get(f"{record.url}/hit")
    assert timetracer_otel.flush(30)
    assert recorded.json() == {"a": 1, "b": 2}
    (document,) = load_cassettes(cassette_dir)
    commands = [decode_value(call["request"])["command"] for call in _redis_calls(document)]
    assert commands == ["DEL", "INCRBY", "INCRBY"]

    with new_reports() as reports:
        replay = serve(
            _counter_app(TraceConfig(mode="replay", cassette_path=str(cassette_dir)), key)
        )
        replayed = httpx.get(f"{replay.url}/hit")
        replay.stop()
    assert replayed.json() == {"a": 1, "b": 2}
    assert [(r.unmatched, r.unused, r.differences) for r in reports] == [([], [], [])]
