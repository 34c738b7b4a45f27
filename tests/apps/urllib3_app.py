"""The application of the urllib3 tests: plain urllib3 every way, requests and boto3 on top of it.

Each route answers with what its calls gave it (status, headers but ``Date``, body bytes;
an exception's class and message), so equal responses mean the app got the same.

In-process: ``create_app(upstream_url, s3_url, config)``. As a fresh process:
``uvicorn --factory --app-dir tests/apps urllib3_app:from_environment`` with the upstream
in ``URLLIB3_APP_UPSTREAM``, the S3 endpoint in ``URLLIB3_APP_S3`` and timetracer
configured by ``TIMETRACER_*`` (AWS credentials from ``AWS_*``).
"""

from __future__ import annotations

import base64
import gzip
import os
import threading
from collections.abc import Callable
from typing import Any

import boto3
import requests
import urllib3
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from timetracer_otel.config import TraceConfig
from timetracer_otel.integrations.starlette import auto_setup

CLOSED_PORT_URL = "http://127.0.0.1:1/nothing"
BUCKET = "timetracer-urllib3"
CONCURRENT = 4  # /together/{who} requests (a cassette per path) that wait for one another between their two calls
# (method, upstream path, urllib3 keyword arguments): tests/_outgoing_http.py's SCRIPT, as urllib3 takes it.
SCRIPT: list[tuple[str, str, dict[str, Any]]] = [
    ("GET", "/json", {}),
    ("POST", "/echo?via=json", {"json": {"name": "ada", "n": 1}}),
    ("POST", "/echo?via=form", {"fields": {"a": "1", "b": "two words"}, "encode_multipart": False}),
    ("GET", "/binary", {}),
    ("GET", "/gzip", {}),
    ("GET", "/status/404", {}),
    ("HEAD", "/json", {}),
]


def seen(response: urllib3.BaseHTTPResponse, body: bytes | None = None) -> dict[str, Any]:
    """What the app got: status, headers (``Date`` left out: it changes between runs), body bytes."""
    headers = sorted([k.lower(), v] for k, v in response.headers.items() if k.lower() != "date")
    data = response.data if body is None else body
    return {"status": response.status, "headers": headers, "body": base64.b64encode(data).decode()}


def _name(exc: BaseException) -> str:
    return f"{type(exc).__module__}.{type(exc).__qualname__}"


def raised(call: Callable[[], Any]) -> dict[str, Any]:
    """The class and message of what ``call`` raised (and of its ``reason``), or what it returned."""
    try:
        return {"returned": repr(call())}
    except Exception as exc:  # noqa: BLE001 - the test compares what was raised
        reason = getattr(exc, "reason", None)
        because = {"reason": _name(reason), "reason_message": str(reason)} if reason else {}
        return {"raised": _name(exc), "message": str(exc), **because}


def create_app(upstream: str, s3_url: str, config: TraceConfig | None = None) -> Starlette:
    pool = urllib3.PoolManager()
    host, port = upstream.removeprefix("http://").split(":")
    connection_pool = urllib3.HTTPConnectionPool(host, int(port))
    together = threading.Barrier(CONCURRENT)
    s3 = boto3.client("s3", endpoint_url=s3_url, region_name="us-east-1")

    def script(request: Request) -> JSONResponse:
        return JSONResponse(
            [seen(pool.request(method, upstream + path, **kw)) for method, path, kw in SCRIPT]
        )

    def urlopen(request: Request) -> JSONResponse:
        """A pool's own ``urlopen`` with a path, a body in bytes and one in chunks."""
        calls = [
            connection_pool.urlopen("GET", "/json"),
            connection_pool.urlopen("PUT", "/echo?via=bytes", body=b"raw bytes"),
            connection_pool.urlopen(
                "POST", "/echo?via=chunks", body=iter([b"part-0;", b"part-1;"]), chunked=True
            ),
        ]
        return JSONResponse([seen(response) for response in calls])

    def streamed(request: Request) -> JSONResponse:
        """``preload_content=False`` read every way: ``stream()`` of a chunked body, ``read(amt)``
        of a gzip one (decoded), ``read1``, ``data``, and undecoded gzip bytes."""
        chunked = pool.request("GET", upstream + "/stream?chunks=3", preload_content=False)
        streamed_body = b"".join(chunked.stream(4))
        gzipped = pool.request("GET", upstream + "/gzip", preload_content=False)
        read_body = b"".join(iter(lambda: gzipped.read(10), b""))
        binary = pool.request("GET", upstream + "/binary", preload_content=False)
        read1_body = b"".join(iter(lambda: binary.read1(100), b""))
        whole = pool.request("GET", upstream + "/json", preload_content=False)
        raw = pool.request("GET", upstream + "/gzip", preload_content=False, decode_content=False)
        raw_body = b"".join(raw.stream(decode_content=False))
        return JSONResponse(
            [
                seen(chunked, streamed_body),
                seen(gzipped, read_body),
                seen(binary, read1_body),
                seen(whole),
                # the recorded gzip bytes are compressed again in replay: compare them decoded
                seen(raw, gzip.decompress(raw_body)),
            ]
        )

    def errors(request: Request) -> JSONResponse:
        """Connection refused (with and without retries) and a read timeout, as urllib3 raises them."""
        slow = f"{upstream}/slow?gate={request.query_params['gate']}"
        return JSONResponse(
            [
                raised(lambda: pool.request("GET", CLOSED_PORT_URL, retries=False)),
                raised(lambda: pool.request("GET", CLOSED_PORT_URL, retries=1)),
                raised(
                    lambda: pool.request(
                        "GET", slow, retries=False, timeout=urllib3.Timeout(connect=5, read=0.3)
                    )
                ),
            ]
        )

    def one(request: Request) -> JSONResponse:
        """One call whose URL the request chooses; a mismatch in replay is caught at the call site."""
        who = request.query_params["who"]
        return JSONResponse(raised(lambda: pool.request("GET", f"{upstream}/echo?who={who}").data))

    def with_requests(request: Request) -> JSONResponse:
        """requests sends through urllib3: the calls are requests', recorded once."""
        got = requests.get(upstream + "/json", timeout=5)
        posted = requests.post(upstream + "/echo?via=requests", data=b"sent", timeout=5)
        return JSONResponse([got.json(), posted.json()])

    def with_s3(request: Request) -> JSONResponse:
        """boto3 (botocore on urllib3), signed with the clock: put, get and list an object."""
        key = request.query_params["key"]
        s3.create_bucket(Bucket=BUCKET)
        put = s3.put_object(Bucket=BUCKET, Key=key, Body=b"stored by urllib3_app")
        got = s3.get_object(Bucket=BUCKET, Key=key)
        listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=key)
        return JSONResponse(
            {
                "etag": put["ETag"],
                "body": got["Body"].read().decode(),
                "keys": [(item["Key"], item["Size"]) for item in listed["Contents"]],
            }
        )

    def with_others(request: Request) -> JSONResponse:
        """Two calls, between which every /together/{who} request has made its first."""
        who = request.path_params["who"]
        first = pool.request("GET", f"{upstream}/echo?who={who}&step=1")
        together.wait(timeout=10)
        second = pool.request("GET", f"{upstream}/echo?who={who}&step=2")
        return JSONResponse([seen(first), seen(second)])

    app = Starlette(
        routes=[
            Route("/script", script),
            Route("/urlopen", urlopen),
            Route("/streamed", streamed),
            Route("/errors", errors),
            Route("/one", one),
            Route("/requests", with_requests),
            Route("/s3", with_s3),
            Route("/together/{who}", with_others),
        ]
    )
    auto_setup(app, config=config, plugins=["urllib3", "requests"])
    return app


def from_environment() -> Starlette:
    return create_app(os.environ["URLLIB3_APP_UPSTREAM"], os.environ["URLLIB3_APP_S3"])
