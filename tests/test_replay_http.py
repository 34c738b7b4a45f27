"""Replay through uvicorn: a recorded request replays to the same response bytes with no call
reaching the upstream; sessions stay per request; mismatches are explained; the report says how it went."""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import re
import secrets
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from _replay import (
    Sent,
    assert_same_response,
    cassette_files,
    new_reports,
    record,
    replay,
    replay_config,
    run_fresh,
    send,
)
from apps.replay_app import CALLS, HTTPX_CLIENTS, Hold, create_app, seen
from conftest import Upstream, load_cassettes
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import timetracer_otel
from timetracer_otel.cassette.body import encode_body
from timetracer_otel.cassette.document import InboundResponse
from timetracer_otel.config import TraceConfig
from timetracer_otel.integrations.starlette import auto_setup
from timetracer_otel.replayers import ReplayMismatchError, ReplayReport
from timetracer_otel.replayers.report import RecordedResponse, compare_response
from timetracer_otel.sealing import redacted

# (path, what the app caught: None when it got responses). "{gate}" holds the upstream's /slow.
_WAYS = [
    *(
        way
        for client in HTTPX_CLIENTS
        for way in [
            (f"/async/{client}", None),
            (f"/sync/{client}", None),
            (f"/stream/{client}", None),
            (f"/fail/{client}", f"{client}.ConnectError"),
            (f"/fail/{client}?gate={{gate}}", f"{client}.ReadTimeout"),
        ]
    ),
    ("/sync/requests", None),
    ("/upload/gzip", None),
    ("/fail/requests", "requests.exceptions.ConnectionError"),
    ("/fail/requests?gate={gate}", "requests.exceptions.ReadTimeout"),
]


@pytest.mark.parametrize("path, caught", _WAYS)
def test_each_way_of_calling_replays_byte_for_byte_without_the_upstream(
    path: str, caught: str | None, serve: Callable[..., Any], upstream: Upstream, cassette_dir: Path
) -> None:
    """httpx async/sync/stream and requests: JSON, form, binary, gzip both ways, 404, connect errors, read timeouts."""
    gate = f"timeout-{uuid.uuid4().hex}"
    path = path.format(gate=gate)
    (recorded,) = record(serve, upstream.url, cassette_dir, [("GET", path, {})])
    upstream.gate(gate).set()  # lets a held /slow finish; the app timed out long before
    (doc,) = load_cassettes(cassette_dir)
    if caught:
        assert recorded.json() == {"caught": caught}
        assert [call["error"]["type"] for call in doc["calls"]] == [caught]
    else:
        assert recorded.status_code == 200 and all(call["response"] for call in doc["calls"])

    before = len(upstream.requests)
    (cassette,) = cassette_files(cassette_dir)
    (replayed,), (report,) = replay(
        serve, upstream.url, replay_config(cassette), [("GET", path, {})]
    )
    assert len(upstream.requests) == before
    assert_same_response(recorded, replayed)
    assert report.ok and not report.unused
    assert report.answered == [
        f"{c['request']['method']} {c['request']['url']}" for c in doc["calls"]
    ]


@pytest.mark.parametrize("how", ["run_in_executor", "submit"])
def test_a_call_made_in_a_thread_pool_is_the_requests_and_replays(
    how: str, serve: Callable[..., Any], upstream: Upstream, cassette_dir: Path
) -> None:
    """``loop.run_in_executor`` and ``ThreadPoolExecutor.submit`` run their work in the context
    of the request that handed it over: recorded in its cassette, answered from it in replay."""
    (recorded,) = record(serve, upstream.url, cassette_dir, [("GET", f"/pool/{how}", {})])
    (doc,) = load_cassettes(cassette_dir)
    assert [call["request"]["url"] for call in doc["calls"]] == [f"{upstream.url}/json?from=pool"]
    before = len(upstream.requests)
    (cassette,) = cassette_files(cassette_dir)
    (replayed,), (report,) = replay(
        serve, upstream.url, replay_config(cassette), [("GET", f"/pool/{how}", {})]
    )
    assert len(upstream.requests) == before
    assert_same_response(recorded, replayed)
    assert report.ok and not report.unused


def test_directory_gives_each_request_the_cassette_of_its_method_route_and_body(
    serve: Callable[..., Any], upstream: Upstream, cassette_dir: Path
) -> None:
    sent = [
        ("GET", "/async/httpx", {}),
        ("GET", "/sync/requests", {}),
        ("POST", "/lookup", {"json": {"name": "ada"}}),
        ("POST", "/lookup", {"json": {"name": "bob"}}),
        ("GET", "/fail/httpx", {}),
    ]
    recorded = record(serve, upstream.url, cassette_dir, sent)
    assert [r.json()["query"] for r in recorded[2:4]] == ["name=ada", "name=bob"]
    ids = sorted(doc["id"] for doc in load_cassettes(cassette_dir))
    assert len(set(ids)) == len(sent)

    before = len(upstream.requests)
    replayed, reports = replay(serve, upstream.url, replay_config(cassette_dir), sent)
    assert len(upstream.requests) == before
    for old, new in zip(recorded, replayed, strict=False):
        assert_same_response(old, new)
    assert sorted(r.cassette_id for r in reports) == ids  # each cassette used once
    assert all(r.ok for r in reports)


def test_concurrent_requests_each_replay_their_own_cassette(
    serve: Callable[..., Any], upstream: Upstream, cassette_dir: Path
) -> None:
    """/pair/first is held between its two calls until /pair/second has been answered."""
    sent = [("GET", "/pair/first", {}), ("GET", "/pair/second", {})]
    recorded = record(serve, upstream.url, cassette_dir, sent)
    assert recorded[0].json() == {"first": "name=first", "second": "name=first&step=2"}

    hold = Hold()
    server = serve(create_app(upstream.url, replay_config(cassette_dir), holds={"first": hold}))
    before = len(upstream.requests)
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(send, server.url, sent[:1])
        assert hold.entered.wait(10), "the first request never reached its hold"
        (second,) = send(server.url, sent[1:])
        assert not first.done()  # still held: the two requests overlapped
        hold.release.set()
        (first_response,) = first.result(30)
    assert len(upstream.requests) == before
    assert_same_response(recorded[0], first_response)
    assert_same_response(recorded[1], second)


def _call(method: str, url: str, options: dict[str, Any], client: str = "httpx") -> Any:
    with importlib.import_module(client).Client() as session:
        return session.request(method, url, **options)


_BINARY = CALLS.index(("GET", "/binary", {}))
_CHANGES = [  # (a recorded call, changed; the index in CALLS of the closest candidate; the line saying what differs)
    (
        ("POST", "/echo?via=JSON", {"json": {"name": "ada", "n": 1}}),
        0,
        "query 'via': recorded json, this call JSON",
    ),
    (
        ("POST", "/echo?via=json", {"json": {"n": 1, "name": "bob"}}),
        0,
        'body: recorded {"n":1,"name":"ada"}, this call {"n":1,"name":"bob"}',
    ),
    (("GET", "/binaries", {}), _BINARY, "path: recorded /binary, this call /binaries"),
]


@pytest.mark.parametrize("changed, candidate, difference", _CHANGES, ids=["query", "body", "url"])
def test_changed_call_raises_mismatch_at_the_call_site(
    changed: tuple[str, str, dict[str, Any]],
    candidate: int,
    difference: str,
    serve: Callable[..., Any],
    upstream: Upstream,
    cassette_dir: Path,
    timetracer_replay: Callable[..., Any],
) -> None:
    """The error names the call, the cassette, the closest recorded call and what differs; nothing goes out."""
    record(serve, upstream.url, cassette_dir, [("GET", "/sync/httpx", {})])
    (cassette,) = cassette_files(cassette_dir)
    method, path, options = changed
    before = len(upstream.requests)
    with timetracer_replay(cassette) as session, pytest.raises(ReplayMismatchError) as raised:
        _call(method, upstream.url + path, options)
    assert len(upstream.requests) == before
    assert str(raised.value).splitlines()[:5] == [
        f"timetracer replay: no recorded call matches {method} {upstream.url}{path} (httpx)",
        f"cassette: {cassette}",
        "closest recorded calls:",
        f"  #{candidate} {CALLS[candidate][0]} {upstream.url}{CALLS[candidate][1]} (unused)",
        f"      {difference}",
    ]
    assert session.unmatched == [raised.value]


def test_unmatched_call_in_the_app_never_reaches_the_network(
    serve: Callable[..., Any], upstream: Upstream, cassette_dir: Path
) -> None:
    """The middleware has no strict switch: a call the cassette cannot answer fails in the app, and is reported."""
    record(serve, upstream.url, cassette_dir, [("POST", "/lookup", {"json": {"name": "ada"}})])
    (cassette,) = cassette_files(cassette_dir)
    before = len(upstream.requests)
    (response,), (report,) = replay(
        serve,
        upstream.url,
        replay_config(cassette),
        [("POST", "/lookup", {"json": {"name": "eve"}})],
    )
    assert len(upstream.requests) == before
    assert response.status_code == 500
    assert report.unmatched == [
        f"timetracer replay: no recorded call matches GET {upstream.url}/echo?name=eve (httpx)"
    ]
    assert report.unused == [f"GET {upstream.url}/echo?name=ada"]
    assert report.error is not None and report.error["type"].endswith("ReplayMismatchError")


# (the library a call was recorded with, the one it answers in replay)
_ACROSS = [("requests", "httpx")] + (
    [("httpx", "httpx2"), ("httpx2", "httpx")] if "httpx2" in HTTPX_CLIENTS else []
)


@pytest.mark.parametrize("recorded_with, answered_for", _ACROSS)
def test_a_call_recorded_with_one_http_client_is_answered_for_another(
    recorded_with: str,
    answered_for: str,
    serve: Callable[..., Any],
    upstream: Upstream,
    cassette_dir: Path,
    timetracer_replay: Callable[..., Any],
) -> None:
    (recorded,) = record(serve, upstream.url, cassette_dir, [("GET", f"/sync/{recorded_with}", {})])
    (cassette,) = cassette_files(cassette_dir)
    before = len(upstream.requests)
    with timetracer_replay(cassette) as session:
        got = [seen(_call(m, upstream.url + path, kw, answered_for)) for m, path, kw in CALLS]
    assert len(upstream.requests) == before
    assert got == recorded.json()
    assert {library for library, _ in session.answered} == {answered_for}
    assert {recorded.call.library for _, recorded in session.answered} == {recorded_with}
    assert session.unused() == []


def test_redacted_password_still_matches(
    serve: Callable[..., Any],
    upstream: Upstream,
    cassette_dir: Path,
    timetracer_replay: Callable[..., Any],
) -> None:
    (recorded,) = record(serve, upstream.url, cassette_dir, [("GET", "/sync/httpx", {})])
    (doc,) = load_cassettes(cassette_dir)
    login = CALLS.index(
        ("POST", "/echo?via=login", {"json": {"user": "ada", "password": "s3cret"}})
    )
    # sealed
    assert redacted(doc)["calls"][login]["request"]["body"]["json"] == {
        "user": "ada",
        "password": "[REDACTED]",
    }
    method, path, options = CALLS[login]
    with timetracer_replay(cassette_files(cassette_dir)[0]) as session:
        response = _call(method, upstream.url + path, options)
    assert seen(response) == recorded.json()[login]
    assert [call.index for _, call in session.answered] == [login]


def test_json_nested_past_the_bound_is_recorded_as_text_and_replays(
    serve: Callable[..., Any], upstream: Upstream, cassette_dir: Path
) -> None:
    """A body deeper than MAX_JSON_DEPTH, in and out: kept as text with its secret hidden, and matched in replay."""
    deep = ('{"password": "s3cret", "tree": ' + "[" * 5000 + "]" * 5000 + "}").encode()
    sent = [
        ("POST", "/forward", {"content": deep, "headers": {"content-type": "application/json"}})
    ]
    (recorded,) = record(serve, upstream.url, cassette_dir, sent)
    (doc,) = load_cassettes(cassette_dir)
    for body in (doc["request"]["body"], doc["calls"][0]["request"]["body"]):
        assert (
            body["encoding"] == "text"
            and body["text"].endswith("]" * 5000 + "}")
            and "s3cret" not in body["text"]
        )

    before = len(upstream.requests)
    (replayed,), (report,) = replay(
        serve, upstream.url, replay_config(cassette_files(cassette_dir)[0]), sent
    )
    assert len(upstream.requests) == before
    assert_same_response(recorded, replayed)
    assert report.ok and report.answered == [f"POST {upstream.url}/echo"]


def _report_of(
    serve: Callable[..., Any],
    upstream: Upstream,
    cassette: Path,
    changed: bool,
    ignore: tuple[str, ...],
    **options: Any,
) -> ReplayReport:
    config = replay_config(cassette, replay_ignore_fields=ignore, **options)
    _, (report,) = replay(serve, upstream.url, config, [("GET", "/report", {})], changed=changed)
    return report


def test_report_of_an_unchanged_app(
    serve: Callable[..., Any],
    upstream: Upstream,
    cassette_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Both calls answered, none unused; the response is the same, its timestamp too (the clock is
    replayed); with the clock left real, the same once the timestamp is ignored."""
    (recorded,) = record(serve, upstream.url, cassette_dir, [("GET", "/report", {})])
    (cassette,), (doc,) = cassette_files(cassette_dir), load_cassettes(cassette_dir)
    with caplog.at_level(logging.INFO, logger="timetracer"):
        report = _report_of(serve, upstream, cassette, changed=False, ignore=("timestamp",))
    assert report.answered == [f"GET {upstream.url}/echo?step=1", f"GET {upstream.url}/echo?step=2"]
    assert (report.unmatched, report.unused, report.differences) == ([], [], [])
    assert report.console_text() == (
        f"timetracer [OK] replayed GET /report  id={doc['id']}  status=200  calls=2/2  unused=0  response=same\n"
        f"  cassette: {cassette}"
    )
    assert report.console_text() in [
        r.getMessage() for r in caplog.records if r.name == "timetracer"
    ]

    assert _report_of(serve, upstream, cassette, changed=False, ignore=()).differences == []
    assert (
        _report_of(
            serve, upstream, cassette, changed=False, ignore=("timestamp",), draws="none"
        ).differences
        == []
    )
    timestamp = recorded.json()["timestamp"]
    (difference,) = _report_of(
        serve, upstream, cassette, changed=False, ignore=(), draws="none"
    ).differences
    assert difference.startswith(f"body $.timestamp: recorded {timestamp}, replayed ")
    assert json.loads(difference.rsplit(" ", 1)[1]) > timestamp


def test_report_of_a_changed_app(
    serve: Callable[..., Any], upstream: Upstream, cassette_dir: Path
) -> None:
    """The code now makes another second call, sends another header and adds a field: unmatched, unused and
    the differences are reported; a header named in the ignored fields is not compared."""
    record(serve, upstream.url, cassette_dir, [("GET", "/report", {})])
    (cassette,), (doc,) = cassette_files(cassette_dir), load_cassettes(cassette_dir)
    report = _report_of(serve, upstream, cassette, changed=True, ignore=("timestamp",))
    assert not report.ok
    assert report.console_text().splitlines() == [
        f"timetracer [DIFF] replayed GET /report  id={doc['id']}  status=200  calls=1/2  unused=1  response=differs",
        f"  cassette: {cassette}",
        f"  unmatched: timetracer replay: no recorded call matches GET {upstream.url}/echo?step=3 (httpx)",
        "    closest recorded call: #1",
        "      query 'step': recorded 2, this call 3",
        f"  unused: GET {upstream.url}/echo?step=2",
        '  header x-version: recorded "1", replayed "2"',
        '  body $.added: recorded <absent>, replayed "new field"',
    ]
    ignoring = _report_of(
        serve, upstream, cassette, changed=True, ignore=("timestamp", "X-Version")
    )
    assert ignoring.differences == ['body $.added: recorded <absent>, replayed "new field"']


def test_a_cassette_given_alone_answering_another_path_says_so_first(
    serve: Callable[..., Any], upstream: Upstream, cassette_dir: Path
) -> None:
    """It answers every request; where the request is another method and path than its
    recording, that explains the differences, not the session cookie the request carries."""
    record(serve, upstream.url, cassette_dir, [("GET", "/whoami", {})])
    (cassette,) = cassette_files(cassette_dir)
    sent: list[Sent] = [("GET", "/whoami", {}), ("GET", "/token", {"cookies": {"session": "s"}})]
    _, reports = replay(serve, upstream.url, replay_config(cassette), sent)
    assert [r.notes for r in reports] == [
        [],
        ["the cassette given alone was recorded for GET /whoami, and answered GET /token"],
    ]
    assert not reports[1].ok


def _leaves_a_task_app(upstream_url: str, config: TraceConfig, done: threading.Event) -> Starlette:
    """A post-call hook as LLM gateways run one: a task the request leaves running, which calls
    out once the response is gone."""
    tasks: set[asyncio.Task[None]] = set()

    async def after() -> None:
        await asyncio.sleep(0.05)
        async with httpx.AsyncClient() as client:
            await client.post(f"{upstream_url}/echo?hook=usage", json={"tokens": 12})
        done.set()

    async def answer(request: Request) -> JSONResponse:
        task = asyncio.create_task(after())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        return JSONResponse({"answer": 42})

    app = Starlette(routes=[Route("/answer", answer)])
    auto_setup(app, config=config, plugins=["httpx"])
    return app


def test_calls_made_after_the_response_are_waited_for_before_the_report(
    serve: Callable[..., Any], upstream: Upstream, cassette_dir: Path
) -> None:
    """The report waits, bounded, for the calls recorded after the response: made before it is
    done, they are answered and checked, not listed unused."""
    recorded_hook = threading.Event()
    config = TraceConfig(mode="record", cassette_dir=str(cassette_dir))
    server = serve(_leaves_a_task_app(upstream.url, config, recorded_hook))
    assert httpx.get(f"{server.url}/answer", timeout=30).status_code == 200
    assert recorded_hook.wait(30)
    server.stop()
    assert timetracer_otel.flush(30), "cassette writer did not drain"
    (doc,) = load_cassettes(cassette_dir)
    assert doc["calls"][0]["start_offset_ms"] > doc["duration_ms"]

    replayed_hook = threading.Event()
    with new_reports() as reports:
        replaying = replay_config(cassette_dir)
        server = serve(_leaves_a_task_app(upstream.url, replaying, replayed_hook))
        assert httpx.get(f"{server.url}/answer", timeout=30).json() == {"answer": 42}
        server.stop()
    (report,) = reports
    assert (report.ok, report.unused, report.answered) == (
        True, [], [f"POST {upstream.url}/echo?hook=usage"]
    )  # fmt: skip
    assert replayed_hook.is_set()


def test_report_names_the_first_unused_calls_and_counts_the_rest() -> None:
    """A cassette whose calls the app no longer makes (hundreds, in an N+1 loop) gives ten
    lines naming them and one counting the rest, not a line for each; the report keeps them all."""
    unused = [f"GET http://127.0.0.1:8001/items/{n}" for n in range(250)]
    report = ReplayReport("c.json", "GET", "/items", "c1", 200, 200, unused=unused)
    assert report.console_text().splitlines() == [
        "timetracer [OK] replayed GET /items  id=c1  status=200  calls=0/0  unused=250  response=same",
        "  cassette: c.json",
        *(f"  unused: GET http://127.0.0.1:8001/items/{n}" for n in range(10)),
        "  unused: ... and 240 more",
    ]
    assert report.unused == unused


def test_report_names_the_apps_exception_with_its_secrets_hidden(
    serve: Callable[..., Any], upstream: Upstream, cassette_dir: Path
) -> None:
    """No server prints a traceback under ``timetracer replay``: the report says what the app raised.
    The bearer token its message quotes is hidden there as in the cassette (the app got the real one)."""
    token = "tok-" + secrets.token_hex(12)
    sent: list[Sent] = [("GET", "/crash", {"headers": {"authorization": f"Bearer {token}"}})]
    record(serve, upstream.url, cassette_dir, sent)
    (cassette,) = cassette_files(cassette_dir)
    _, (report,) = replay(serve, upstream.url, replay_config(cassette), sent)
    assert report.status == 500
    error_lines = [line for line in report.console_text().splitlines() if "error:" in line]
    assert error_lines == [
        "  error: the app raised LookupError: no profile page for octocat (as [REDACTED])"
    ]
    assert token not in json.dumps(report.to_dict())


def test_links_the_app_builds_name_the_host_it_was_recorded_on(
    serve: Callable[..., Any], upstream: Upstream, cassette_dir: Path
) -> None:
    """Replayed by a server on another port, the app still sees the Host it was asked for: an
    absolute link (``url_for``, a redirect's ``Location``) is the recorded one."""
    sent: list[Sent] = [("GET", "/visitor", {})]
    (recorded,) = record(serve, upstream.url, cassette_dir, sent)
    (cassette,) = cassette_files(cassette_dir)
    (replayed,), (report,) = replay(serve, upstream.url, replay_config(cassette), sent)
    assert replayed.json()["link"] == recorded.json()["link"]
    assert report.ok, report.console_text()


def test_an_exception_whose_message_cannot_be_made_still_reaches_the_server(
    serve: Callable[..., Any], upstream: Upstream, cassette_dir: Path
) -> None:
    """The app's exception, not the one its ``str()`` raises, reaches the server (a 500), recorded
    and replayed; the cassette and the report name its class and say its message failed."""
    sent: list[Sent] = [("GET", "/crash/unprintable", {})]
    (recorded,) = record(serve, upstream.url, cassette_dir, sent)
    assert recorded.status_code == 500
    (cassette,) = cassette_files(cassette_dir)
    doc = json.loads(cassette.read_text())
    assert (doc["response"]["status"], doc["error"]) == (
        500,
        {"type": "apps.replay_app.Unprintable", "message": "<str() raised RuntimeError>"},
    )
    (replayed,), (report,) = replay(serve, upstream.url, replay_config(cassette), sent)
    assert (replayed.status_code, report.status, report.ok) == (500, 500, True)
    assert "  error: the app raised apps.replay_app.Unprintable: <str() raised RuntimeError>" in (
        report.console_text().splitlines()
    )


def test_a_response_that_broke_off_is_reported_with_the_error_that_ended_it(
    serve: Callable[..., Any], upstream: Upstream, cassette_dir: Path
) -> None:
    """Recorded: the app raised after its first chunk went out. Replayed by the same code it is
    the same; by code that now sends the whole body, the report names the recorded error and says
    the recording broke off, rather than showing a bare body diff."""

    def get_broken(url: str) -> None:
        with pytest.raises(httpx.RemoteProtocolError):  # the server dropped the connection mid-body
            httpx.get(f"{url}/breaks-off", timeout=30)

    get_broken(
        serve(
            create_app(upstream.url, TraceConfig(mode="record", cassette_dir=str(cassette_dir)))
        ).url
    )
    assert timetracer_otel.flush(30)
    (cassette,) = cassette_files(cassette_dir)
    for changed, expected in (
        (False, []),
        (
            True,
            [
                "error: recorded the app raised RuntimeError, replayed none",
                "body: the recording broke off after 6 bytes, replayed 12 bytes",
            ],
        ),
    ):
        with new_reports() as reports:
            server = serve(create_app(upstream.url, replay_config(cassette), changed=changed))
            if changed:
                assert httpx.get(f"{server.url}/breaks-off", timeout=30).text == "first,second"
            else:
                get_broken(server.url)
            server.stop()
        (report,) = reports
        assert report.differences == expected, report.console_text()


def test_report_shows_where_long_values_and_lists_differ() -> None:
    """Values are cut around where they first differ, never to the same-looking prefix; lists
    of other lengths say so, item by item."""
    long = "value is not a valid email address: " + "x" * 150

    def response(detail: list[str]) -> InboundResponse:
        data = json.dumps({"detail": detail}).encode()
        body = encode_body(data, size=len(data), truncated=False, limit=1 << 20)
        return InboundResponse(200, [], body)  # type: ignore[arg-type]

    replayed = json.dumps({"detail": [long + "!"]}).encode()
    differences = compare_response(
        response([long + "?", "second"]), 200, [], replayed, len(replayed), None
    ).differences
    assert differences[0] == "body $.detail: recorded 2 items, replayed 1"
    old, new = re.fullmatch(
        r"body \$\.detail\[0\]: recorded (.*), replayed (.*)", differences[1]
    ).groups()  # type: ignore[union-attr]
    assert old.startswith("…") and old.endswith('x?"') and new.endswith('x!"') and old != new
    assert differences[2:] == ['body $.detail[1]: recorded "second", replayed <absent>']


def test_a_text_body_of_one_long_line_shows_where_it_differs_in_a_bounded_line() -> None:
    """A page of one 500,000-character line differing near its end printed both copies whole
    (a megabyte in one log line of the replaying server)."""
    page = "x" * 500_000 + " worker={}"
    recorded_data, replayed = page.format(1).encode(), page.format(2).encode()
    headers = [["content-type", "text/plain; charset=utf-8"]]
    body = encode_body(recorded_data, size=len(recorded_data), truncated=False, limit=1 << 20)
    differences = compare_response(
        InboundResponse(200, headers, body),  # type: ignore[arg-type]
        200,
        [("content-type", "text/plain; charset=utf-8")],
        replayed,
        len(replayed),
        None,
    ).differences
    assert differences[0] == "body differs:" and max(map(len, differences)) < 300
    changed = [line for line in differences if line.startswith(("  -", "  +"))][-2:]
    assert [line[:4] for line in changed] == ["  -…", "  +…"]
    assert [line.rsplit(" ", 1)[-1] for line in changed] == ["worker=1", "worker=2"]


def test_report_tells_the_same_json_in_other_bytes_apart() -> None:
    """Bytes a parser reads as the recorded JSON are still not the recorded response: members in
    another order (an ORM filling them from a set) and the same JSON spaced otherwise are named."""

    def response(data: bytes) -> InboundResponse:
        body = encode_body(data, size=len(data), truncated=False, limit=1 << 20)
        return InboundResponse(200, [], body)  # type: ignore[arg-type]

    recorded = response(b'{"data": {"team": {"name": "Z", "headquarters": "Q"}}}')
    reordered = b'{"data": {"team": {"headquarters": "Q", "name": "Z"}}}'
    assert compare_response(recorded, 200, [], reordered, len(reordered), None).differences == [
        "body $.data.team: members in another order: recorded name, headquarters, replayed headquarters, name"
    ]
    compact = b'{"data":{"team":{"name":"Z","headquarters":"Q"}}}'
    assert compare_response(recorded, 200, [], compact, len(compact), None).differences == [
        "body the same JSON written another way: recorded spaced, replayed compact"
    ]


def test_a_text_the_app_quoted_a_redacted_secret_in_its_own_way_is_unverified_not_different() -> (
    None
):
    """Without the key the app gets ``[REDACTED]`` and may write it its own way (Dagster's YAML
    quotes it): where the replayed text is the recorded one with other text in place of each
    marker, the part is unverified; any other change is still a difference."""

    def response(data: bytes) -> InboundResponse:
        body = encode_body(data, size=len(data), truncated=False, limit=1 << 20)
        return InboundResponse(200, [], body)  # type: ignore[arg-type]

    recorded_yaml = "ops:\n  api_key: [REDACTED]\n  region: eu\n  token: [REDACTED]\n"
    recorded = response(json.dumps({"yaml": recorded_yaml}).encode())
    for replayed_yaml, differs in [
        ("ops:\n  api_key: '[REDACTED]'\n  region: eu\n  token: '[REDACTED]'\n", False),
        ("ops:\n  api_key: '[REDACTED]'\n  region: us\n  token: '[REDACTED]'\n", True),
        ("ops:\n  api_key: x\n", True),
    ]:
        replayed = json.dumps({"yaml": replayed_yaml}).encode()
        compared = compare_response(recorded, 200, [], replayed, len(replayed), None)
        assert (bool(compared.differences), compared.unverified) == (
            differs,
            [] if differs else ["body $.yaml"],
        ), compared
    text = response(b"api_key: [REDACTED]\nregion: eu\n")
    quoted = b"api_key: '[REDACTED]'\nregion: eu\n"
    compared = compare_response(text, 200, [], quoted, len(quoted), None)
    assert (compared.differences, compared.unverified) == ([], ["body (its redacted parts)"])


def test_a_list_of_the_same_items_in_another_order_is_one_difference_naming_the_hash_seed() -> None:
    """fastapi_best_architecture's ``/auth/codes`` answers ``list(a_set)``: another process gave
    the permissions in another order, and the report showed a line per item with no hint."""
    codes = [f"sys:menu:{action}" for action in ("add", "edit", "del", "view", "export")]
    data = json.dumps({"code": 200, "data": codes}).encode()
    recorded = InboundResponse(
        200, [], encode_body(data, size=len(data), truncated=False, limit=1 << 20)
    )  # type: ignore[arg-type]
    other = json.dumps({"code": 200, "data": codes[::-1]}).encode()
    assert compare_response(recorded, 200, [], other, len(other), None).differences == [
        "body $.data: the same items in another order: a set's (its order follows the process's "
        "hash seed). Record and replay with the same PYTHONHASHSEED (PYTHONHASHSEED=0 for both)"
    ]
    changed = json.dumps({"code": 200, "data": [*codes[:-1], "sys:menu:import"]}).encode()
    assert compare_response(recorded, 200, [], changed, len(changed), None).differences == [
        'body $.data[4]: recorded "sys:menu:export", replayed "sys:menu:import"'
    ]


def test_a_response_is_told_the_same_without_parsing_only_when_every_compared_part_is() -> None:
    """The prepared recorded response answers "same" for the same status, compared headers (as
    ASGI sends them, in any case, the server's left out) and bytes; a header, the status or one
    byte otherwise, a cut replayed body, or a recording with a hidden value goes through the full
    comparison."""
    data = b'{"id": 7, "name": "ada"}'
    headers = [["content-type", "application/json"], ["x-version", "1"], ["date", "Mon"]]
    body = encode_body(data, size=len(data), truncated=False, limit=1 << 20)
    recorded = RecordedResponse(
        InboundResponse(200, headers, body), ignore_fields=("x-request-id",)
    )
    same = [(b"Content-Type", b"application/json"), (b"X-Version", b"1"), (b"date", b"Tue")]
    assert recorded.same(200, same, data, len(data))
    assert recorded.same(200, [*same, (b"x-request-id", b"r2")], data, len(data))
    changed = [(b"content-type", b"application/json"), (b"x-version", b"2")]
    assert not recorded.same(200, changed, data, len(data))
    assert not recorded.same(200, same[:1], data, len(data))
    assert not recorded.same(201, same, data, len(data))
    assert not recorded.same(200, same, data.replace(b"ada", b"bob"), len(data))
    assert not recorded.same(200, same, data[:10], len(data))
    hidden = json.dumps({"token": "[REDACTED]"}).encode()
    redacted_body = encode_body(hidden, size=len(hidden), truncated=False, limit=1 << 20)
    assert not RecordedResponse(InboundResponse(200, [], redacted_body)).same(
        200, [], hidden, len(hidden)
    )
    cookie = RecordedResponse(InboundResponse(200, [["set-cookie", "[REDACTED]"]], body))
    assert not cookie.same(200, [(b"set-cookie", b"[REDACTED]")], data, len(data))


def test_multipart_upload_matches_despite_its_new_random_boundary(
    upstream: Upstream, tmp_path: Path, timetracer_replay: Callable[..., Any]
) -> None:
    """httpx picks a new multipart boundary per request; matching compares the parts, not the boundary."""
    from timetracer_otel._standalone import record_block

    cassette = tmp_path / "multipart.json"
    form = {"data": {"k": "v"}, "files": {"file": ("a.txt", b"hello", "text/plain")}}
    with record_block(cassette, "multipart"):
        recorded = httpx.post(upstream.url + "/echo", **form)
    before = len(upstream.requests)
    with timetracer_replay(cassette):
        replayed = httpx.post(upstream.url + "/echo", **form)
        with pytest.raises(ReplayMismatchError, match="no recorded call matches POST"):
            httpx.post(
                upstream.url + "/echo",
                data={"k": "v"},
                files={"file": ("a.txt", b"other", "text/plain")},
            )
    assert len(upstream.requests) == before
    assert replayed.status_code == 200 and replayed.content == recorded.content


def test_replayed_calls_still_make_opentelemetry_client_spans(
    upstream: Upstream, tmp_path: Path, timetracer_replay: Callable[..., Any], spans: Any
) -> None:
    """Replay sits under the instrumentors' wrappers: each answered call has its CLIENT span."""
    import requests
    from opentelemetry.trace import SpanKind

    from timetracer_otel._standalone import record_block

    cassette = tmp_path / "spans.json"
    with record_block(cassette, "spans"):
        httpx.get(upstream.url + "/json?via=httpx")
        requests.get(upstream.url + "/json?via=requests", timeout=10)
    spans.clear()
    before = len(upstream.requests)
    with timetracer_replay(cassette, strict=True):
        httpx.get(upstream.url + "/json?via=httpx")
        requests.get(upstream.url + "/json?via=requests", timeout=10)
    assert len(upstream.requests) == before
    client_urls = sorted(
        str(span.attributes.get("url.full") or span.attributes.get("http.url"))
        for span in spans.get_finished_spans()
        if span.kind is SpanKind.CLIENT
    )
    assert client_urls == [upstream.url + "/json?via=httpx", upstream.url + "/json?via=requests"]


def test_a_request_asking_for_another_encoding_than_the_recorded_one_compares_decoded(
    cassette_dir: Path,
) -> None:
    """A health check recorded from a client that accepts no gzip (curl), replayed for one that
    does: the app compresses its answer, as it should. The report notes the other
    ``Content-Encoding`` and compares the bodies decoded: the response is the same."""
    plain: list[Sent] = [("GET", "/health", {"headers": {"accept-encoding": "identity"}})]
    recorded, _ = run_fresh(
        "gzip_app:create_app",
        lambda url: send(url, plain),
        TIMETRACER_MODE="record",
        TIMETRACER_DIR=str(cassette_dir),
    )
    assert "content-encoding" not in recorded[0].headers
    compressed: list[Sent] = [("GET", "/health", {"headers": {"accept-encoding": "gzip"}})]
    replayed, stderr = run_fresh(
        "gzip_app:create_app",
        lambda url: send(url, compressed),
        TIMETRACER_MODE="replay",
        TIMETRACER_CASSETTE=str(cassette_dir),
    )
    assert replayed[0].headers["content-encoding"] == "gzip"
    assert replayed[0].text == recorded[0].text
    assert "[UNVERIFIED] replayed GET /health" in stderr and "response=same" in stderr, stderr
    assert (
        'unverified: header content-encoding: recorded <absent>, replayed "gzip" (the request '
        "asked for another encoding than the recorded one)" in stderr
    )


def test_a_number_the_size_of_a_hash_that_differs_alone_names_the_hash_seed() -> None:
    """fastapi-cache2 answers ``ETag: W/<hash(...)>`` and a body may carry such a hash: replayed
    in another process, only that number differs, and the report says why; a timestamp in
    milliseconds that differs is not taken for one."""
    data = json.dumps({"version": "4722081356421869315", "at": 1733570000123}).encode()
    recorded = InboundResponse(
        200,
        [["etag", "W/4722081356421869315"]],
        encode_body(data, size=len(data), truncated=False, limit=1 << 20),
    )  # type: ignore[arg-type]
    replayed = json.dumps({"version": "-885604717262004433", "at": 1733570000456}).encode()
    headers = [("etag", "W/-885604717262004433")]
    differences = compare_response(recorded, 200, headers, replayed, len(replayed), None)
    notes = [line for line in differences.differences if "PYTHONHASHSEED" in line]
    assert [note.split(":")[0] for note in notes] == ["header etag", "body $.version"]
    assert notes[0].startswith("header etag: only a number the size of Python's hash() differs")
