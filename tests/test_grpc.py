"""gRPC through grpcio's sync client: recorded through uvicorn against a real Echo server on
loopback, replayed by a fresh ``TIMETRACER_MODE=replay`` process with the server stopped.

gRPC's sockets are opened by its C core, which Python's audit hooks do not see: that no
connection is made in replay is shown by a plain listener on the recorded address, which
must have no connection waiting once the replaying process has exited."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import httpx
import pytest
from _grpc_echo import (
    generated,
    listening_on,
    no_connection_waiting,
    pythonpath,
    running_echo_server,
)
from _replay import cassette_files, get_at_once, new_reports, send, uvicorn_process
from conftest import load_cassettes
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from timetracer_otel.cassette.values import decode_value
from timetracer_otel.config import TraceConfig
from timetracer_otel.replayers import ReplayMismatchError, ReplaySession, install_replayers
from timetracer_otel.replayers.session import activate, deactivate
from timetracer_otel.sealing import redacted

generated()
from apps.grpc_app import create_app  # noqa: E402 - echo_pb2 is importable once generated

SCENARIO = [("GET", "/scenario", {}), ("GET", "/aio/scenario", {})]


@pytest.fixture
def echo() -> Iterator[str]:
    with running_echo_server() as target:
        yield target


def _record(
    serve: Callable[..., Any], target: str, cassette_dir: Path, paths: list[str]
) -> list[httpx.Response]:
    config = TraceConfig(mode="record", cassette_dir=str(cassette_dir))
    server = serve(create_app(target, config), lifespan="on")
    responses = get_at_once(server.url, paths)
    server.stop()
    assert [r.status_code for r in responses] == [200] * len(paths), [r.text for r in responses]
    return responses


def _replay(
    serve: Callable[..., Any], target: str, cassette_dir: Path, paths: list[str]
) -> list[httpx.Response]:
    config = TraceConfig(mode="replay", cassette_path=str(cassette_dir))
    server = serve(create_app(target, config), lifespan="on")
    responses = get_at_once(server.url, paths)
    server.stop()
    return responses


def _grpc_calls(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [call for call in document["calls"] if call["protocol"] == "grpc"]


def _expected_scenario(outcome: dict[str, Any]) -> None:
    """What the real server answered, as the app saw it."""
    assert outcome["first_only"]["text"] == "first!"
    assert outcome["call"] == {"type": "ttecho.EchoReply", **_reply("plain", "1")}
    reply, code, initial, trailing = outcome["with_call"]
    assert (reply["text"], code) == ("with-call!", "OK")
    assert initial == [["served-by", "echo"]]
    assert trailing == [["tenant", "acme"], ["checksum-bin", "00ff"]]
    assert outcome["future"]["text"] == "future!"
    assert [r.get("index", "0") for r in outcome["unary_stream"]] == ["0", "1", "2"]
    assert outcome["stream_unary"] == {"type": "ttecho.EchoReply", "text": "a+b", "index": "2"}
    *replies, code, trailing = outcome["stream_stream"]
    assert [r["text"] for r in replies] == ["x!", "y!", "z!"]
    assert (code, trailing) == ("OK", [["chatted", "3"]])
    assert outcome["not_found"] == {
        "error": "NOT_FOUND",
        "details": "no echo for missing",
        "trailing": [["why", "no such text"], ["retry-token", "srv-s3cret"]],
    }
    assert outcome["stream_fails"]["error"] == "NOT_FOUND"
    deadline = outcome["deadline"]
    assert (deadline["error"], deadline["trailing"]) == ("DEADLINE_EXCEEDED", [])
    assert "Deadline Exceeded" in deadline["details"]  # gRPC words it as the stream stood


def _expected_aio_scenario(outcome: dict[str, Any]) -> None:
    """What the real server answered the aio channel, as the app saw it."""
    assert outcome["await"] == {"type": "ttecho.EchoReply", **_reply("aio", "1")}
    reply, code, trailing = outcome["call_object"]
    assert (reply["text"], code) == ("aio-call!", "OK")
    assert trailing == [["tenant", "acme"], ["checksum-bin", "00ff"]]
    assert [r.get("index", "0") for r in outcome["unary_stream"]] == ["0", "1", "2"]
    assert outcome["stream_unary"] == {"type": "ttecho.EchoReply", "text": "m+n", "index": "2"}
    *replies, code, trailing = outcome["stream_stream"]
    assert [r["text"] for r in replies] == ["p!", "q!"]
    assert (code, trailing) == ("OK", [["chatted", "2"]])
    assert outcome["not_found"] == {
        "error": "NOT_FOUND",
        "details": "no echo for aio-missing",
        "trailing": [["why", "no such text"], ["retry-token", "srv-s3cret"]],
    }
    assert outcome["stream_fails"]["error"] == "NOT_FOUND"
    assert outcome["deadline"]["error"] == "DEADLINE_EXCEEDED"


def _reply(text: str, index: str) -> dict[str, Any]:
    import base64
    import hashlib

    digest = base64.b64encode(hashlib.sha256(text.encode()).digest()[:8]).decode()
    return {
        "text": f"{text}!",
        "index": index,
        "digest": digest,
        "sessionToken": f"srv-token-{text}",
    }


def test_record_then_a_fresh_replay_process_answers_every_call_with_the_server_stopped(
    serve: Callable[..., Any], cassette_dir: Path
) -> None:
    with running_echo_server() as target:
        recorded = _record(serve, target, cassette_dir, ["/scenario", "/aio/scenario"])
    _expected_scenario(recorded[0].json())
    _expected_aio_scenario(recorded[1].json())
    load_cassettes(cassette_dir)
    env = {
        "TIMETRACER_MODE": "replay",
        "TIMETRACER_CASSETTE": str(cassette_dir),
        "GRPC_APP_TARGET": target,
        "PYTHONPATH": pythonpath(),
    }
    with listening_on(target) as listener:
        with uvicorn_process(env, app="grpc_app:from_environment") as server:
            replayed = send(server.url, SCENARIO)
        for before, after in zip(recorded, replayed, strict=True):
            assert after.status_code == 200, server.stderr
            assert after.json() == before.json()
        assert no_connection_waiting(listener), "the replaying process connected to the server"
    for path in ("/scenario", "/aio/scenario"):
        assert f"timetracer [OK] replayed GET {path} " in server.stderr, server.stderr


def test_the_cassette_holds_messages_metadata_and_status_under_their_client_spans(
    serve: Callable[..., Any], echo: str, cassette_dir: Path
) -> None:
    _record(serve, echo, cassette_dir, ["/scenario"])
    (document,) = load_cassettes(cassette_dir)
    calls = _grpc_calls(document)
    spans = {span["span_id"]: span for span in document["spans"]}
    assert [call["request"]["method"] for call in calls] == [
        "/ttecho.Echo/Count",
        "/ttecho.Echo/Say",
        "/ttecho.Echo/Say",
        "/ttecho.Echo/Say",
        "/ttecho.Echo/Count",
        "/ttecho.Echo/Join",
        "/ttecho.Echo/Chat",
        "/ttecho.Echo/Say",
        "/ttecho.Echo/Count",
        "/ttecho.Echo/Say",
    ]
    for call in calls:  # each call hangs under the OpenTelemetry client span it was made in
        assert call["kind"] == "grpc.client" and call["library"] == "grpc"
        span = spans[call["span_id"]]
        assert (span["kind"], span["name"]) == ("CLIENT", call["request"]["method"])

    shown = [decode_value(call) for call in _grpc_calls(redacted(document))]
    first_only = shown[0]["response"]  # the app read one message and let the stream go
    assert (first_only["code"], len(first_only["messages"])) == ("CANCELLED", 1)
    plain = shown[1]["request"]
    assert plain["messages"] == [
        {
            "type": "ttecho.EchoRequest",
            "json": {
                "text": "plain",
                "count": "1",
                "api_token": "[REDACTED]",
                "tags": {"k": "v"},
            },
        }
    ]
    metadata = dict(plain["metadata"])
    assert metadata["authorization"] == "[REDACTED]" and metadata["x-tenant"] == "acme"
    assert "traceparent" in metadata  # OpenTelemetry's interceptor added it before the call
    with_call = shown[2]["response"]
    assert with_call["code"] == "OK" and with_call["details"] == ""
    assert with_call["initial_metadata"] == [["served-by", "echo"]]
    assert with_call["trailing_metadata"] == [["tenant", "acme"], ["checksum-bin", b"\x00\xff"]]
    assert with_call["messages"][0]["json"]["session_token"] == "[REDACTED]"
    assert len(shown[5]["request"]["messages"]) == 2  # the client stream, every message sent
    assert len(shown[6]["response"]["messages"]) == 3
    not_found = shown[7]
    assert not_found["error"] == {"type": "grpc.RpcError", "message": "no echo for missing"}
    assert not_found["response"]["code"] == "NOT_FOUND"
    assert not_found["response"]["trailing_metadata"] == [
        ["why", "no such text"],
        ["retry-token", "[REDACTED]"],
    ]
    assert len(shown[8]["response"]["messages"]) == 2  # read before the stream failed
    assert shown[9]["response"]["code"] == "DEADLINE_EXCEEDED"
    # nothing secret in clear anywhere: sealed with the tests' key
    text = json.dumps(document)
    for secret in ("client-s3cret", "client-token-1", "srv-s3cret", "srv-token-plain"):
        assert secret not in text


def test_a_changed_request_raises_a_mismatch_naming_the_method_and_the_closest_calls(
    serve: Callable[..., Any], echo: str, cassette_dir: Path
) -> None:
    _record(serve, echo, cassette_dir, ["/lookup/first"])
    with new_reports() as reports:
        (response,) = _replay(serve, echo, cassette_dir, ["/lookup/second"])
    assert response.status_code == 500
    assert response.json()["error"] == "ReplayMismatchError"
    message = response.json()["message"]
    assert "no recorded call matches /ttecho.Echo/Say " in message
    assert '"text": "second"' in message.splitlines()[0]
    assert "#0 /ttecho.Echo/Say" in message and '"text": "first"' in message
    assert "messages: recorded" in message
    assert reports[0].unmatched == [message.splitlines()[0]]


@pytest.mark.parametrize("route", ["/item", "/aio/item"], ids=["sync", "aio"])
def test_concurrent_requests_record_and_replay_only_their_own_calls(
    serve: Callable[..., Any], cassette_dir: Path, route: str
) -> None:
    paths = [f"{route}/{number}" for number in range(20)]
    with running_echo_server() as target:
        recorded = _record(serve, target, cassette_dir, paths)
    documents = load_cassettes(cassette_dir)
    assert len(documents) == 20
    for document in documents:
        (call,) = _grpc_calls(document)
        number = document["request"]["path"].rsplit("/", 1)[1]
        assert decode_value(call["request"])["messages"][0]["json"]["text"] == f"item-{number}"
    replayed = _replay(serve, target, cassette_dir, paths)
    for number, (before, after) in enumerate(zip(recorded, replayed, strict=True)):
        assert after.status_code == 200, after.text
        assert after.json() == before.json()
        assert after.json()["text"] == f"item-{number}!"
    assert len(cassette_files(cassette_dir)) == 20


def test_replayed_calls_still_make_opentelemetry_client_spans(
    serve: Callable[..., Any], echo: str, cassette_dir: Path, spans: InMemorySpanExporter
) -> None:
    _record(serve, echo, cassette_dir, ["/item/7"])
    spans.clear()
    (response,) = _replay(serve, echo, cassette_dir, ["/item/7"])
    assert response.status_code == 200, response.text
    finished = spans.get_finished_spans()
    servers = {s.context.span_id for s in finished if s.kind is SpanKind.SERVER}
    # the app's client spans (not the test's own request to it, when an HTTP client's
    # instrumentor was enabled by an earlier test)
    clients = [
        s
        for s in finished
        if s.kind is SpanKind.CLIENT and s.parent is not None and s.parent.span_id in servers
    ]
    assert [s.name for s in clients] == ["/ttecho.Echo/Say"]


def _stub(channel: Any) -> Any:
    import echo_pb2_grpc

    return echo_pb2_grpc.EchoStub(channel)


def _say(text: str) -> Any:
    import echo_pb2

    return echo_pb2.EchoRequest(text=text)


@contextlib.contextmanager
def _replaying(**options: Any) -> Iterator[ReplaySession]:
    install_replayers()
    session = ReplaySession({"calls": []}, "empty.json", **options)
    token = activate(session)
    try:
        yield session
    finally:
        deactivate(token)


def test_an_unanswerable_grpc_aio_call_raises_a_mismatch_and_connects_nowhere() -> None:
    with listening_on("127.0.0.1:0") as listener:
        target = f"127.0.0.1:{listener.getsockname()[1]}"

        async def call() -> None:
            async with grpc.aio.insecure_channel(target) as channel:
                await _stub(channel).Say(_say("hi"))

        with _replaying() as session, pytest.raises(ReplayMismatchError) as raised:
            asyncio.run(call())
        assert no_connection_waiting(listener)
    assert str(raised.value).splitlines() == [
        'timetracer replay: no recorded call matches /ttecho.Echo/Say {"text": "hi"} (grpc)',
        "cassette: empty.json",
        "the cassette has no recorded grpc calls",
    ]
    assert len(session.unmatched) == 1


def test_live_grpc_goes_to_the_server_while_the_rest_replays(echo: str) -> None:
    with _replaying(live_libraries=["grpc"]) as session, grpc.insecure_channel(echo) as channel:
        assert _stub(channel).Say(_say("live")).text == "live!"
    assert session.unmatched == [] and session.answered == []


def test_a_replaying_process_refuses_grpc_calls_outside_any_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    install_replayers()
    monkeypatch.setenv("TIMETRACER_MODE", "replay")
    with listening_on("127.0.0.1:0") as listener:
        target = f"127.0.0.1:{listener.getsockname()[1]}"
        with grpc.insecure_channel(target) as channel, pytest.raises(ReplayMismatchError) as raised:
            _stub(channel).Say(_say("hi"))
        assert no_connection_waiting(listener)
    assert str(raised.value).splitlines()[:2] == [
        'timetracer replay: no recorded call matches /ttecho.Echo/Say {"text": "hi"} (grpc)',
        "cassette: (no process cassette)",
    ]


def test_grpc_aio_calls_are_recorded_under_their_client_spans_and_replayed(
    serve: Callable[..., Any], cassette_dir: Path
) -> None:
    with running_echo_server() as target:
        (recorded,) = _record(serve, target, cassette_dir, ["/aio/scenario"])
    _expected_aio_scenario(recorded.json())
    (document,) = load_cassettes(cassette_dir)
    calls = _grpc_calls(document)
    spans = {span["span_id"]: span for span in document["spans"]}
    methods = [call["request"]["method"].rsplit("/", 1)[1] for call in calls]
    assert methods == ["Say", "Say", "Count", "Join", "Chat", "Say", "Count", "Say"]
    for call in calls:  # under the span of OpenTelemetry's aio interceptor
        span = spans[call["span_id"]]
        assert (span["kind"], span["name"]) == ("CLIENT", call["request"]["method"])
    shown = [decode_value(call) for call in _grpc_calls(redacted(document))]
    assert [m["json"]["text"] for m in shown[3]["request"]["messages"]] == ["m", "n"]
    assert [m["json"]["text"] for m in shown[4]["request"]["messages"]] == ["p", "q"]  # written
    assert dict(shown[0]["request"]["metadata"])["authorization"] == "[REDACTED]"
    assert shown[5]["error"] == {"type": "grpc.RpcError", "message": "no echo for aio-missing"}
    assert len(shown[6]["response"]["messages"]) == 2  # read before the stream failed

    (replayed,) = _replay(serve, target, cassette_dir, ["/aio/scenario"])
    assert replayed.status_code == 200, replayed.text
    assert replayed.json() == recorded.json()
