"""The application the replay tests record and replay: each route calls the upstream and
returns exactly what it got, so equal responses mean the app got the same bytes.

In-process: ``create_app(upstream_url, config)``. As a fresh process:
``uvicorn --factory --app-dir tests/apps replay_app:create_app`` with the upstream in
``REPLAY_APP_UPSTREAM`` and timetracer configured by ``TIMETRACER_*``.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import gzip
import importlib
import os
import secrets
import sys
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import requests
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from timetracer_otel.config import TraceConfig
from timetracer_otel.integrations.starlette import auto_setup

CLOSED_PORT_URL = "http://127.0.0.1:1/nothing"


class Unprintable(Exception):
    """An exception whose ``str()`` raises."""

    def __str__(self) -> str:
        raise RuntimeError("Instance <Media> is not bound to a Session")


# The httpx family: one API, two modules (httpx2 needs Python 3.11). Routes named
# ``/{client}`` take either.
HTTPX_CLIENTS = ("httpx", "httpx2") if sys.version_info >= (3, 11) else ("httpx",)
# (method, upstream path, keyword arguments): the same names work for httpx and requests.
CALLS: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/echo?via=json", {"json": {"name": "ada", "n": 1}}),
    ("POST", "/echo?via=form", {"data": {"a": "1", "b": "two words"}}),
    ("POST", "/echo?via=login", {"json": {"user": "ada", "password": "s3cret"}}),
    ("GET", "/binary", {}),
    ("GET", "/gzip", {}),
    ("GET", "/status/404", {}),
    ("GET", "/stream?chunks=3", {}),  # chunked transfer encoding
]


@dataclass
class Hold:
    """Holds ``/pair/{name}`` between its two upstream calls: ``entered`` is set, then it waits for ``release``."""

    entered: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)


def seen(response: Any) -> dict[str, Any]:
    """What the app got from an httpx or requests response: status, every header, the body bytes."""
    headers = sorted([k.lower(), v] for k, v in response.headers.items())
    return {
        "status": response.status_code,
        "headers": headers,
        "body": base64.b64encode(response.content).decode(),
    }


def _caught(exc: Exception) -> JSONResponse:
    cls = type(exc)
    return JSONResponse({"caught": f"{cls.__module__}.{cls.__qualname__}"}, status_code=502)


def _client_routes(name: str, upstream: str, failure_target: Any) -> list[Route]:
    """``/async/{name}``, ``/stream/{name}`` and ``/fail/{name}``: httpx's ways, with httpx or httpx2."""
    lib = importlib.import_module(name)

    async def async_httpx(request: Request) -> JSONResponse:
        async with lib.AsyncClient() as client:
            return JSONResponse(
                [seen(await client.request(m, upstream + p, **kw)) for m, p, kw in CALLS]
            )

    async def stream_httpx(request: Request) -> PlainTextResponse:
        text = ""
        async with (
            lib.AsyncClient() as client,
            client.stream("GET", f"{upstream}/stream?chunks=3") as response,
        ):
            async for data in response.aiter_bytes():
                text += data.decode()
        return PlainTextResponse(text)

    async def fail_httpx(request: Request) -> JSONResponse:
        try:
            async with lib.AsyncClient(timeout=lib.Timeout(10.0, read=0.05)) as client:
                await client.get(failure_target(request))
        except lib.TransportError as exc:
            return _caught(exc)
        return JSONResponse({"caught": None})

    return [
        Route(f"/async/{name}", async_httpx),
        Route(f"/stream/{name}", stream_httpx),
        Route(f"/fail/{name}", fail_httpx),
    ]


def _routes(upstream: str, holds: dict[str, Hold], changed: bool) -> list[Route]:
    def failure_target(request: Request) -> str:
        """The closed port, or with ``?gate=`` the upstream's ``/slow`` (held until the test opens the gate)."""
        gate = request.query_params.get("gate")
        return f"{upstream}/slow?gate={gate}" if gate else CLOSED_PORT_URL

    def sync_script(request: Request) -> JSONResponse:
        library = request.path_params["library"]
        assert library in ("requests", *HTTPX_CLIENTS), library
        with (
            requests.Session()
            if library == "requests"
            else importlib.import_module(library).Client() as client
        ):
            return JSONResponse([seen(client.request(m, upstream + p, **kw)) for m, p, kw in CALLS])

    async def gzip_upload(request: Request) -> JSONResponse:
        """A compressed request body: its bytes change with gzip's timestamp, its content does not."""
        async with httpx.AsyncClient() as client:
            packed = gzip.compress(b'{"packed": true}')
            return JSONResponse(
                seen(
                    await client.post(
                        f"{upstream}/echo", content=packed, headers={"Content-Encoding": "gzip"}
                    )
                )
            )

    def fail_requests(request: Request) -> JSONResponse:
        try:
            requests.get(failure_target(request), timeout=(10.0, 0.05))
        except requests.RequestException as exc:
            return _caught(exc)
        return JSONResponse({"caught": None})

    async def lookup(request: Request) -> JSONResponse:
        name = (await request.json())["name"]
        async with httpx.AsyncClient() as client:
            return JSONResponse(
                (await client.get(f"{upstream}/echo", params={"name": name})).json()
            )

    async def forward(request: Request) -> Response:
        """Posts the request's body, as it came, to the upstream's ``/echo`` and answers with the bytes it got."""
        async with httpx.AsyncClient() as client:
            answer = await client.post(
                f"{upstream}/echo",
                content=await request.body(),
                headers={"content-type": "application/json"},
            )
        return Response(answer.content, media_type="application/json")

    async def pair(request: Request) -> JSONResponse:
        name = request.path_params["name"]
        async with httpx.AsyncClient() as client:
            first = (await client.get(f"{upstream}/echo", params={"name": name})).json()
            hold: Hold | None = holds.get(name)
            if hold is not None:
                hold.entered.set()
                await run_in_threadpool(hold.release.wait, 10)
            second = (
                await client.get(f"{upstream}/echo", params={"name": name, "step": "2"})
            ).json()
        return JSONResponse({"first": first["query"], "second": second["query"]})

    async def report(request: Request) -> JSONResponse:
        async with httpx.AsyncClient() as client:
            first = (await client.get(f"{upstream}/echo?step=1")).json()
            if changed:  # the code changed: a different second call, whose failure it tolerates
                with contextlib.suppress(Exception):
                    await client.get(f"{upstream}/echo?step=3")
            else:
                await client.get(f"{upstream}/echo?step=2")
        body = {"query": first["query"], "timestamp": time.time_ns()}
        if changed:
            body["added"] = "new field"
        return JSONResponse(body, headers={"x-version": "2" if changed else "1"})

    async def login(request: Request) -> JSONResponse:
        """The upstream decides: 200 for the right password, 401 otherwise. A browser holding a
        CSRF cookie must echo it in a header: refused first, its body never read."""
        csrf = request.cookies.get("csrftoken")
        if csrf is not None and request.headers.get("x-csrftoken") != csrf:
            return JSONResponse({"detail": "CSRF token missing or incorrect"}, status_code=403)
        sent = await request.json()
        async with httpx.AsyncClient() as client:
            answer = await client.post(
                f"{upstream}/auth", json={"user": sent["user"], "password": sent["password"]}
            )
        return JSONResponse({"user": sent["user"], **answer.json()}, status_code=answer.status_code)

    async def token(request: Request) -> JSONResponse:
        """A fresh access token and session cookie on every call: secrets the recording cannot keep."""
        async with httpx.AsyncClient() as client:
            login = (await client.get(f"{upstream}/json")).json()["login"]
        # a CSRF token: no secret by its name, but drawn from ``secrets``, so sealed by its value
        response = JSONResponse(
            {
                "user": login,
                "access_token": secrets.token_hex(16),
                "csrf": secrets.token_urlsafe(16),
            }
        )
        response.set_cookie("session", secrets.token_hex(16))
        return response

    async def whoami(request: Request) -> JSONResponse:
        """Whether the request carries a session cookie (one ``/token`` set)."""
        return JSONResponse({"signed_in": "session" in request.cookies})

    def mixed(request: Request) -> JSONResponse:
        with httpx.Client() as client:
            via_httpx = client.get(f"{upstream}/echo?via=httpx").json()
        return JSONResponse(
            {"httpx": via_httpx, "requests": requests.get(f"{upstream}/echo?via=requests").json()}
        )

    async def crash(request: Request) -> JSONResponse:
        """An exception out of the app after an upstream call (its message quoting the credentials
        sent, if any): the client gets a 500."""
        async with httpx.AsyncClient() as client:
            login = (await client.get(f"{upstream}/json")).json()["login"]
        sent = request.headers.get("authorization")
        login += f" (as {sent})" if sent else ""
        raise LookupError(f"no profile page for {login}")

    async def crash_unprintable(request: Request) -> JSONResponse:
        """An exception whose message cannot be made (FastAPI's ``ResponseValidationError``
        showing an ORM object detached from its session): the client still gets a 500."""
        async with httpx.AsyncClient() as client:
            await client.get(f"{upstream}/json")
        raise Unprintable()

    async def breaks_off(request: Request) -> StreamingResponse:
        """A response that breaks off: the app raises after its first chunk went out (the edited
        version of the code sends it to its end)."""

        async def chunks() -> AsyncIterator[bytes]:
            yield b"first,"
            if not changed:
                raise RuntimeError("the feed went away")
            yield b"second"

        return StreamingResponse(chunks(), media_type="text/plain")

    async def visitor(request: Request) -> JSONResponse:
        """An upstream call keyed by the peer's address, as rate limits and audit rows are."""
        host = request.client.host if request.client else "unknown"
        async with httpx.AsyncClient() as client:
            answer = await client.get(f"{upstream}/echo", params={"visitor": host})
        link = str(request.url_for("visitor"))  # the scheme and root path the server gave
        return JSONResponse({"visitor": host, "seen": answer.json()["query"], "link": link})

    async def header_names(request: Request) -> JSONResponse:
        """The names of the headers the request came with (content negotiation reads them)."""
        return JSONResponse(sorted(request.headers.keys()))

    def in_a_thread(request: Request) -> JSONResponse:
        """An upstream call from a plain thread, which does not carry the request's context."""
        outcome: dict[str, Any] = {}

        def work() -> None:
            try:
                outcome["status"] = httpx.get(f"{upstream}/json?from=thread").status_code
            except Exception as exc:  # noqa: BLE001 - the test reads what happened
                outcome["raised"] = f"{type(exc).__module__}.{type(exc).__qualname__}"
                outcome["message"] = str(exc)

        thread = threading.Thread(target=work)
        thread.start()
        thread.join(30)
        return JSONResponse(outcome)

    async def in_a_pool(request: Request) -> JSONResponse:
        """A blocking call handed to a thread pool: ``run_in_executor`` or ``submit``, neither of
        which copies the caller's context as ``run_in_threadpool`` does."""

        def work() -> dict[str, Any]:
            return seen(httpx.get(f"{upstream}/json?from=pool"))

        if request.path_params["how"] == "run_in_executor":
            return JSONResponse(await asyncio.get_running_loop().run_in_executor(None, work))
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return JSONResponse(await asyncio.wrap_future(pool.submit(work)))

    return [
        Route("/thread", in_a_thread),
        Route("/pool/{how}", in_a_pool),
        *(
            route
            for name in HTTPX_CLIENTS
            for route in _client_routes(name, upstream, failure_target)
        ),
        Route("/sync/{library}", sync_script),
        Route("/upload/gzip", gzip_upload),
        Route("/fail/requests", fail_requests),
        Route("/lookup", lookup, methods=["POST"]),
        Route("/forward", forward, methods=["POST"]),
        Route("/pair/{name}", pair),
        Route("/report", report),
        Route("/mixed", mixed),
        Route("/login", login, methods=["POST"]),
        Route("/token", token),
        Route("/whoami", whoami),
        Route("/crash", crash),
        Route("/crash/unprintable", crash_unprintable),
        Route("/breaks-off", breaks_off),
        Route("/visitor", visitor, name="visitor"),
        Route("/header-names", header_names),
    ]


def create_app(
    upstream_url: str | None = None,
    config: TraceConfig | None = None,
    *,
    holds: dict[str, Hold] | None = None,
    changed: bool = False,
) -> Starlette:
    """The app, calling ``upstream_url`` (default ``$REPLAY_APP_UPSTREAM``), set up with ``config`` (default: env).

    ``holds`` gates ``/pair/{name}``; ``changed`` makes ``/report`` behave as an edited version of the code.
    """
    app = Starlette(
        routes=_routes(upstream_url or os.environ["REPLAY_APP_UPSTREAM"], holds or {}, changed)
    )
    auto_setup(app, config=config, plugins=[*HTTPX_CLIENTS, "requests"])
    print("replay_app: ready")  # as apps print at start: never in timetracer replay's report
    return app


def create_changed_app() -> Starlette:
    """The app as an edited version of its code (``changed``), for ``--factory``: upstream from ``$REPLAY_APP_UPSTREAM``."""
    return create_app(changed=True)
