"""kill -9 in the middle of heavy recording leaves only whole, valid cassettes.

A fresh uvicorn process records a route whose cassettes are large (a 256 KiB upstream
body each), so the writer thread is busy building and fsync-ing files when the test
sends SIGKILL under concurrent load. Whatever was written by then must be complete:
every ``*.json`` loads and (through the ``cassette_dir`` fixture) matches the schema.
Temporary files (``.tmp-*.part``) may remain; no reader ever lists them.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
from opentelemetry.instrumentation.utils import suppress_http_instrumentation
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from timetracer_otel.cassette.reader import cassette_files, load_cassette
from timetracer_otel.integrations.starlette import auto_setup

_BODY_BYTES = 256 * 1024
_CLIENTS = 16
_KILL_AFTER_RESPONSES = 40
_KILL_AFTER_CASSETTES = 5


def create_app() -> Starlette:
    """``/relay/{i}``: one upstream call with a large body; timetracer configured from ``TIMETRACER_*``."""
    upstream = os.environ["HARDENING_UPSTREAM"]

    async def relay(request: Request) -> JSONResponse:
        async with httpx.AsyncClient(timeout=30) as client:
            response = await client.get(
                f"{upstream}/bytes", params={"size": _BODY_BYTES, "i": request.path_params["i"]}
            )
        return JSONResponse({"size": len(response.content)})

    app = Starlette(routes=[Route("/relay/{i:int}", relay)])
    auto_setup(app, plugins=["httpx"])
    return app


def _recording_server(sock: socket.socket, cassettes: Path, upstream_url: str) -> subprocess.Popen:
    """``uvicorn --factory test_hardening_crash:create_app`` recording into ``cassettes``, serving ``sock``."""
    command = [
        sys.executable, "-m", "uvicorn", "--factory", "--app-dir", str(Path(__file__).parent),
        "test_hardening_crash:create_app", "--fd", str(sock.fileno()), "--log-level", "warning",
    ]  # fmt: skip
    env = {
        **os.environ,
        "TIMETRACER_MODE": "record",
        "TIMETRACER_DIR": str(cassettes),
        "HARDENING_UPSTREAM": upstream_url,
    }
    return subprocess.Popen(
        command,
        env=env,
        pass_fds=[sock.fileno()],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


async def _load_until_killed(url: str, process: subprocess.Popen, cassettes: Path) -> int:
    """Keep ``_CLIENTS`` requests in flight; SIGKILL the server once enough cassettes exist. Returns the 200s seen."""
    answered = 0
    killed = asyncio.Event()
    next_id = iter(range(1_000_000))

    async def client_loop(client: httpx.AsyncClient) -> None:
        nonlocal answered
        while not killed.is_set():
            try:
                response = await client.get(f"{url}/relay/{next(next_id)}")
            except httpx.TransportError:
                assert killed.is_set(), "the server failed before it was killed"
                return
            assert response.status_code == 200, response.text
            answered += 1
            if (
                answered >= _KILL_AFTER_RESPONSES
                and len(list(cassettes.rglob("*.json"))) >= _KILL_AFTER_CASSETTES
            ):
                if not killed.is_set():
                    # requests are in flight and cassettes queued
                    process.send_signal(signal.SIGKILL)
                    killed.set()

    with suppress_http_instrumentation():
        async with httpx.AsyncClient(
            timeout=30, limits=httpx.Limits(max_connections=_CLIENTS)
        ) as client:
            await asyncio.gather(*(client_loop(client) for _ in range(_CLIENTS)))
    return answered


def test_kill_9_during_heavy_recording_leaves_only_whole_cassettes(
    upstream, cassette_dir: Path
) -> None:
    # closed here once the server has it: a killed server refuses at once
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(256)
        process = _recording_server(sock, cassette_dir, upstream.url)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        answered = asyncio.run(_load_until_killed(url, process, cassette_dir))
    finally:
        if process.poll() is None:
            process.kill()
        stderr = process.communicate(timeout=30)[1].decode(errors="replace")
    assert process.returncode == -signal.SIGKILL, stderr

    written = sorted(cassette_dir.rglob("*.json"))
    assert _KILL_AFTER_CASSETTES <= len(written) <= answered
    for path in written:
        cassette = load_cassette(path)  # parses, and has every part replay relies on
        (call,) = cassette["calls"]
        assert call["response"]["body"]["size"] == _BODY_BYTES
        assert len(call["response"]["body"]["text"]) == _BODY_BYTES  # nothing cut short
    leftovers = [p for p in cassette_dir.rglob("*") if p.is_file() and p.suffix != ".json"]
    assert all(p.name.startswith(".tmp-") and p.name.endswith(".part") for p in leftovers), (
        leftovers
    )
    assert cassette_files(cassette_dir) == written  # temporary files are never taken for cassettes
