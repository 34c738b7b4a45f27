"""urllib3, and the libraries built on it, recorded inside a Starlette app's requests and replayed in a
fresh ``TIMETRACER_MODE=replay`` process with the upstream and the moto S3 server stopped:
byte-identical answers, not one socket connected, each call recorded once as the library the
app called (requests: requests; boto3: urllib3, its signature redacted)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import urllib3
from _outgoing_http import (
    GatedStream,
    check_call_spans,
    check_script,
    check_stream,
    make_app,
    only_cassette,
)
from _replay import (
    ALL_ANSWERED,
    CONNECTS,
    assert_same_response,
    audited_uvicorn_process,
    cassette_files,
    new_reports,
    replay_config,
    send,
)
from _s3 import aws, moto, s3_url  # noqa: F401 - fixtures
from apps.urllib3_app import CONCURRENT, create_app
from conftest import Upstream, load_cassettes, running_upstream
from moto.server import ThreadedMotoServer
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import timetracer_otel
from timetracer_otel.config import TraceConfig
from timetracer_otel.protocols.http import absolute_url

_ERRORS = [
    "urllib3.exceptions.NewConnectionError",
    "urllib3.exceptions.MaxRetryError",
    "urllib3.exceptions.ReadTimeoutError",
]


@pytest.fixture
def own_upstream() -> Iterator[Upstream]:
    """An upstream of this test only: stopped while the test replays."""
    with running_upstream() as state:
        yield state


def _sent(gate: str) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        ("GET", "/script", {}),
        ("GET", "/urlopen", {}),
        ("GET", "/streamed", {}),
        ("GET", f"/errors?gate={gate}", {}),
        ("GET", "/one?who=ada", {}),
        ("GET", "/requests", {}),
        ("GET", "/s3?key=note.txt", {}),
    ]


def _together(base_url: str) -> list[httpx.Response]:
    """The /together/{who} requests, all at once: each waits for the others between its two calls."""
    with ThreadPoolExecutor(CONCURRENT) as pool:
        sent = [
            pool.submit(send, base_url, [("GET", f"/together/w{i}", {})]) for i in range(CONCURRENT)
        ]
        return [future.result()[0] for future in sent]


def _record(
    serve: Callable[..., Any], upstream: Upstream, s3: str, cassette_dir: Path, gate: str
) -> tuple[list[httpx.Response], list[httpx.Response]]:
    config = TraceConfig(mode="record", cassette_dir=str(cassette_dir))
    server = serve(create_app(upstream.url, s3, config))
    responses = send(server.url, _sent(gate))
    upstream.gate(gate).set()  # the timed-out call's upstream handler may finish
    together = _together(server.url)
    server.stop()
    assert timetracer_otel.flush(30), "cassette writer did not drain"
    assert [r.status_code for r in [*responses, *together]] == [200] * (len(responses) + CONCURRENT)
    return responses, together


def _by_target(directory: Path) -> dict[str, dict[str, Any]]:
    docs = load_cassettes(directory)
    return {
        d["request"]["path"] + ("?" + d["request"]["query"] if d["request"]["query"] else ""): d
        for d in docs
    }


def _urls(doc: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(c["library"], c["request"]["method"], c["request"]["url"]) for c in doc["calls"]]


def test_every_way_of_calling_urllib3_is_recorded_once_as_the_library_the_app_called(
    serve: Callable[..., Any],
    own_upstream: Upstream,
    moto: ThreadedMotoServer,
    aws: dict[str, str],
    cassette_dir: Path,
) -> None:
    """urllib3 calls as urllib3 (each with its client span), requests' as requests only, boto3's
    as urllib3 with the AWS signature and session token redacted, concurrent requests apart."""
    upstream = own_upstream
    responses, together = _record(serve, upstream, s3_url(moto), cassette_dir, "rec")
    docs = _by_target(cassette_dir)

    script = docs["/script"]
    check_script(script, upstream, "urllib3", responses[0].json())

    assert _urls(docs["/urlopen"]) == [
        ("urllib3", "GET", upstream.url + "/json"),
        ("urllib3", "PUT", upstream.url + "/echo?via=bytes"),
        ("urllib3", "POST", upstream.url + "/echo?via=chunks"),
    ]
    _, put, chunks = docs["/urlopen"]["calls"]
    assert (put["request"]["body"]["text"], chunks["request"]["body"]["text"]) == (
        "raw bytes",
        "part-0;part-1;",
    )
    assert chunks["response"]["body"]["json"]["body"] == "part-0;part-1;"  # as upstream got it
    check_call_spans(docs["/urlopen"])

    streamed = docs["/streamed"]["calls"]
    app_saw = [base64.b64decode(s["body"]) for s in responses[2].json()]
    assert (
        streamed[0]["response"]["body"]["text"] == "chunk-0;chunk-1;chunk-2;" == app_saw[0].decode()
    )
    assert streamed[1]["response"]["body"]["content_encoding"] == "gzip"
    assert streamed[1]["response"]["body"]["json"] == json.loads(app_saw[1])
    assert base64.b64decode(streamed[2]["response"]["body"]["base64"]) == app_saw[2]
    assert all("truncated" not in c["response"]["body"] for c in streamed)
    check_call_spans(docs["/streamed"])

    errors = docs["/errors?gate=rec"]["calls"]
    assert [c["error"]["type"] for c in errors] == _ERRORS
    app_saw = responses[3].json()
    assert [e["raised"] for e in app_saw] == _ERRORS
    assert app_saw[1]["reason"] == "urllib3.exceptions.NewConnectionError"  # replayed alike
    assert all(c["response"] is None for c in errors)

    assert _urls(docs["/requests"]) == [
        ("requests", "GET", upstream.url + "/json"),
        ("requests", "POST", upstream.url + "/echo?via=requests"),
    ]
    check_call_spans(docs["/requests"])

    s3 = docs["/s3?key=note.txt"]
    bucket = f"{s3_url(moto)}/timetracer-urllib3"
    assert [(method, url) for _, method, url in _urls(s3)] == [
        ("PUT", bucket),
        ("PUT", bucket + "/note.txt"),
        ("GET", bucket + "/note.txt"),
        ("GET", bucket + "?list-type=2&prefix=note.txt&encoding-type=url"),
    ]
    assert {c["library"] for c in s3["calls"]} == {"urllib3"}
    assert s3["calls"][1]["request"]["body"]["text"] == "stored by urllib3_app"
    for call in s3["calls"]:
        headers = {k.lower(): v for k, v in call["request"]["headers"]}
        hidden = (headers["authorization"], headers["x-amz-security-token"])
        assert all(v.startswith(("[REDACTED]", "[SEALED:")) for v in hidden), (
            hidden
        )  # sealed: the suite has a key
    text = json.dumps(s3)
    assert "Signature=" not in text and aws["AWS_SESSION_TOKEN"] not in text
    check_call_spans(s3)

    for i in range(CONCURRENT):
        doc = docs[f"/together/w{i}"]
        assert [url for _, _, url in _urls(doc)] == [
            f"{upstream.url}/echo?who=w{i}&step={step}" for step in (1, 2)
        ]
        check_call_spans(doc)
    assert len(docs) == len(_sent("rec")) + CONCURRENT


def test_a_fresh_replaying_process_answers_every_call_byte_for_byte_without_a_socket(
    serve: Callable[..., Any],
    moto: ThreadedMotoServer,
    aws: dict[str, str],
    cassette_dir: Path,
) -> None:
    """The upstream and moto stopped, botocore signing with a new clock: every route answers as recorded,
    the recorded urllib3 errors are raised again as their own classes, and no socket connects."""
    s3 = s3_url(moto)
    with running_upstream() as upstream:
        recorded, together = _record(serve, upstream, s3, cassette_dir, "fresh")
    moto.stop()
    env = {
        "TIMETRACER_MODE": "replay",
        "TIMETRACER_CASSETTE": str(cassette_dir),
        "URLLIB3_APP_UPSTREAM": upstream.url,
        "URLLIB3_APP_S3": s3,
        **aws,
    }
    with audited_uvicorn_process(env, "urllib3_app:from_environment") as server:
        replayed = send(server.url, _sent("fresh"))
        replayed_together = _together(server.url)
    assert CONNECTS.findall(server.stderr) == [], server.stderr
    for old, new in zip([*recorded, *together], [*replayed, *replayed_together], strict=True):
        assert_same_response(old, new)
    reported = ALL_ANSWERED.findall(server.stderr)
    assert sorted(path for path, _ in reported) == sorted(
        [path.split("?")[0] for _, path, _ in _sent("fresh")]
        + [f"/together/w{i}" for i in range(CONCURRENT)]
    ), server.stderr


def test_a_changed_call_raises_replay_mismatch_at_its_call_site(
    serve: Callable[..., Any],
    upstream: Upstream,
    moto: ThreadedMotoServer,
    aws: dict[str, str],
    cassette_dir: Path,
) -> None:
    record = TraceConfig(mode="record", cassette_dir=str(cassette_dir))
    send(serve(create_app(upstream.url, s3_url(moto), record)).url, [("GET", "/one?who=ada", {})])
    assert timetracer_otel.flush(30)
    (cassette,) = cassette_files(cassette_dir)
    before = len(upstream.requests)
    with new_reports() as reports:
        server = serve(create_app(upstream.url, s3_url(moto), replay_config(cassette)))
        (outcome,) = send(server.url, [("GET", "/one?who=bob", {})])
        server.stop()
    assert len(upstream.requests) == before
    assert outcome.json()["raised"] == "timetracer_otel.replayers.session.ReplayMismatchError"
    assert outcome.json()["message"].splitlines()[0] == (
        f"timetracer replay: no recorded call matches GET {upstream.url}/echo?who=bob (urllib3)"
    )
    assert f"GET {upstream.url}/echo?who=ada" in outcome.json()["message"]
    assert [r.ok for r in reports] == [False]


def test_requests_named_live_goes_to_the_network_past_the_urllib3_replayer(
    serve: Callable[..., Any],
    upstream: Upstream,
    moto: ThreadedMotoServer,
    aws: dict[str, str],
    cassette_dir: Path,
) -> None:
    """``TIMETRACER_LIVE_PLUGINS=requests``: urllib3 is what requests sends through, yet not what the app called."""
    record = TraceConfig(mode="record", cassette_dir=str(cassette_dir))
    (recorded,) = send(
        serve(create_app(upstream.url, s3_url(moto), record)).url, [("GET", "/requests", {})]
    )
    assert timetracer_otel.flush(30)
    (cassette,) = cassette_files(cassette_dir)
    before = len(upstream.requests)
    config = replay_config(cassette, live_plugins=("requests",))
    (replayed,) = send(
        serve(create_app(upstream.url, s3_url(moto), config)).url, [("GET", "/requests", {})]
    )
    assert len(upstream.requests) == before + 2
    assert_same_response(recorded, replayed)


@pytest.mark.parametrize(
    ("scheme", "host", "port", "target", "url"),
    [
        ("http", "127.0.0.1", 8080, "/a?b=1", "http://127.0.0.1:8080/a?b=1"),
        ("https", "example.com", 443, "/", "https://example.com/"),
        ("http", "::1", 80, "/x", "http://[::1]/x"),
        ("http", "proxy", 3128, "http://example.com/y", "http://example.com/y"),
    ],
    ids=["port", "default-port", "ipv6", "through-a-proxy"],
)
def test_a_pool_request_is_named_by_its_absolute_url(
    scheme: str, host: str, port: int, target: str, url: str
) -> None:
    """What capture records and replay matches for a pool's ``urlopen(method, target)``."""
    assert absolute_url(scheme, host, port, target) == url


def test_a_streamed_response_reaches_the_app_chunk_by_chunk(
    serve: Callable[..., Any], upstream: Upstream, record_config: TraceConfig, cassette_dir: Path
) -> None:
    """``preload_content=False`` with ``stream()``: the teed reads must not read ahead."""

    def stream(request: Request) -> JSONResponse:
        gated = GatedStream(upstream)
        response = urllib3.request("GET", gated.url, preload_content=False, timeout=5)
        for data in response.stream():
            gated.received(data)
        return JSONResponse(gated.result())

    app = make_app([Route("/stream", stream)], record_config, "urllib3")
    response = httpx.get(serve(app).url + "/stream", timeout=30)
    assert response.status_code == 200, response.text
    assert timetracer_otel.flush(30)
    check_stream(only_cassette(cassette_dir, "GET", "stream"), response.json())
