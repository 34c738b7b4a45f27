"""asyncpg, psycopg, boto3 on urllib3, grpc.aio and httpx2 in one request with httpx and Redis, 100 requests
at once: recorded through uvicorn against the real servers (PostgreSQL, Redis, a moto S3 server, an
Echo gRPC server, the upstream), each request's cassette holding its own calls only; replayed, all
100 at once, by a fresh ``TIMETRACER_MODE=replay`` process with every server stopped or out of
reach: each response the recorded one, and not one socket connected."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from _grpc_echo import (
    generated,
    listening_on,
    no_connection_waiting,
    pythonpath,
    running_echo_server,
)
from _replay import (
    ALL_ANSWERED,
    CONNECTS,
    assert_same_response,
    audited_uvicorn_process,
    get_at_once,
)
from _s3 import aws, moto, s3_url  # noqa: F401 - fixtures
from _services import POSTGRES_ADMIN, REDIS, closed_port, redis_namespace
from conftest import load_cassettes, running_upstream
from moto.server import ThreadedMotoServer

from timetracer_otel._own_io import own_io
from timetracer_otel.cassette.values import decode_value
from timetracer_otel.config import TraceConfig

generated()
from apps.new_libraries_app import BUCKET, Deps, create_app  # noqa: E402 - needs echo_pb2

REQUESTS = 100
RIDS = [f"req-{n:03d}" for n in range(REQUESTS)]
PATHS = [f"/mixed/{rid}" for rid in RIDS]
RID = re.compile(r"req-\d{3}")
# (protocol, library) of the calls each request makes
CALLS = sorted(
    [("http", "httpx"), ("http", "httpx2"), ("redis", "redis"), ("redis", "redis")]
    + [("sql", "asyncpg")]
    + [("sql", "psycopg"), ("http", "urllib3"), ("http", "urllib3"), ("grpc", "grpc")]
)


@pytest.fixture
def prefix() -> Iterator[str]:
    with redis_namespace() as value:
        yield value


def _record(
    serve: Callable[..., Any], s3: str, prefix: str, cassette_dir: Path
) -> tuple[Deps, list[httpx.Response]]:
    """The 100 requests, all at once, recorded against live servers; the upstream and the gRPC
    server are stopped when this returns."""
    with own_io():  # the test's own set-up: recorded nowhere
        boto3.client("s3", endpoint_url=s3).create_bucket(Bucket=BUCKET)
    with running_upstream() as upstream, running_echo_server() as target:
        deps = Deps(upstream.url, POSTGRES_ADMIN, REDIS.format(port=6379), prefix, s3, target)
        config = TraceConfig(mode="record", cassette_dir=str(cassette_dir))
        server = serve(create_app(deps, config), lifespan="on")
        responses = get_at_once(server.url, PATHS, timeout=60)
        server.stop()
    return deps, responses


def _check_response(response: httpx.Response, rid: str) -> None:
    """What each real server answers the request ``rid``."""
    assert response.status_code == 200, response.text
    got, n = response.json(), int(rid.rsplit("-", 1)[1])
    etag = '"' + hashlib.md5(f"body of {rid}".encode()).hexdigest() + '"'
    assert {k: v for k, v in got.items() if k not in ("http", "http2", "grpc")} == {
        "rid": rid,
        "redis": repr((True, rid.encode())),
        "asyncpg": f"<Record rid='{rid}' n={n * 10}>",
        "psycopg": repr((rid, n + 1)),
        "s3": repr((etag, etag, f"body of {rid}".encode())),
    }
    assert (got["http"]["query"], json.loads(got["http"]["body"])) == (f"rid={rid}", {"rid": rid})
    assert got["http2"]["query"] == f"via={rid}"
    reply = got["grpc"]
    assert (reply["text"], reply["index"], reply["sessionToken"]) == (
        f"{rid}!",
        str(n + 1),
        f"srv-token-{rid}",
    )


def _ids_in(call: dict[str, Any]) -> set[str]:
    """The request ids a call's payloads name (headers and metadata left out: signatures and sealed values)."""
    request, response = decode_value(call["request"]), decode_value(call["response"]) or {}
    payloads = [
        {k: v for k, v in part.items() if k not in ("headers", "metadata")}
        for part in (request, response)
    ]
    return set(RID.findall(repr(payloads)))


def test_100_requests_mixing_the_new_libraries_with_httpx_and_redis_record_and_replay_their_own_calls(
    serve: Callable[..., Any],
    moto: ThreadedMotoServer,
    aws: dict[str, str],
    prefix: str,
    cassette_dir: Path,
) -> None:
    """Recorded: 100 cassettes, each with its request's calls of every library and no other
    request's. Replayed, all at once, with PostgreSQL and Redis at closed ports and moto, the
    upstream and the gRPC server stopped: each response the recorded one, every call answered, no
    socket connected (the audit hook), no connection to the gRPC server's port (a listener there:
    gRPC's C core connects where the audit hook does not see)."""
    deps, recorded = _record(serve, s3_url(moto), prefix, cassette_dir)
    moto.stop()
    for rid, response in zip(RIDS, recorded, strict=True):
        _check_response(response, rid)
    documents = load_cassettes(cassette_dir)
    assert sorted(d["request"]["path"] for d in documents) == PATHS
    for document in documents:
        rid = document["request"]["path"].rsplit("/", 1)[1]
        calls = document["calls"]
        assert sorted((c["protocol"], c["library"]) for c in calls) == CALLS, rid
        spans = {span["span_id"]: span for span in document["spans"]}
        assert {spans[c["span_id"]]["kind"] for c in calls} == {"CLIENT"}, rid
        assert [_ids_in(call) for call in calls] == [{rid}] * len(CALLS), rid

    unreachable = dataclasses.replace(
        deps,
        postgres=f"postgresql://postgres@127.0.0.1:{closed_port()}/test",
        redis=REDIS.format(port=closed_port()),
    )
    env = {
        "TIMETRACER_MODE": "replay",
        "TIMETRACER_CASSETTE": str(cassette_dir),
        "NEW_LIBRARIES_APP_DEPS": unreachable.to_json(),
        "PYTHONPATH": pythonpath(),
    }
    with listening_on(deps.grpc) as listener:
        with audited_uvicorn_process(env, "new_libraries_app:from_environment") as fresh:
            replayed = get_at_once(fresh.url, PATHS, timeout=60)
        assert no_connection_waiting(listener), "the replaying process connected to the gRPC server"
    assert CONNECTS.findall(fresh.stderr) == [], fresh.stderr
    for before, after in zip(recorded, replayed, strict=True):
        assert_same_response(before, after)
    answered = ALL_ANSWERED.findall(fresh.stderr)
    assert sorted(answered) == [(path, str(len(CALLS))) for path in PATHS], fresh.stderr
