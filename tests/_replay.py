"""What the replay tests share: recording requests to the replay app, replaying them
(in uvicorn threads or a fresh uvicorn process), and comparing what the app answered."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from apps.replay_app import create_app

import timetracer_otel
from timetracer_otel.config import TraceConfig
from timetracer_otel.replayers import ReplayReport, recent_reports

APPS_DIR = Path(__file__).parent / "apps"

# Put before a script: it reports every socket connect of the process (asyncio's too) on stderr.
AUDIT_HOOK = """
import os, sys
def report(event, args):
    if event == "socket.connect":
        os.write(2, ("connect-audit %r\\n" % (args[1],)).encode())
sys.addaudithook(report)
"""
CONNECTS = re.compile(r"^connect-audit (.*)$", re.M)
# A replaying process's report of a GET whose calls were all answered, none left unused, and whose
# response was the recorded one: the path and the number of calls.
ALL_ANSWERED = re.compile(
    r"^timetracer \[OK\] replayed GET (\S+)  id=\w+  status=200  calls=(\d+)/\2  unused=0  response=same$",
    re.M,
)

# A replaying process's report of any request: verdict, method, path, status, calls answered and
# made, unused calls, and whether the response was the recorded one.
REPLAYED = re.compile(
    r"^timetracer \[(\w+)\] replayed (\w+) (\S+)  id=\w+  status=(\d+)  calls=(\d+)/(\d+)  unused=(\d+)  response=(\w+)$",
    re.M,
)

# (method, path, httpx keyword arguments) of a request to the app
Sent = tuple[str, str, dict[str, Any]]
_SET_BY_SERVER = {"date", "server"}  # uvicorn's own headers, new on every response


def send(base_url: str, sent: list[Sent]) -> list[httpx.Response]:
    """Send the requests to the app one after the other."""
    with httpx.Client(base_url=base_url, timeout=30) as client:
        return [client.request(method, path, **options) for method, path, options in sent]


def get_at_once(base_url: str, paths: list[str], timeout: float = 30) -> list[httpx.Response]:
    """GET every path at once (one connection each), in the given order of results."""

    async def all_at_once() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=base_url, timeout=timeout) as client:
            return await asyncio.gather(*(client.get(path) for path in paths))

    return asyncio.run(all_at_once())


def record(
    serve: Callable[..., Any],
    upstream_url: str,
    cassette_dir: Path,
    sent: list[Sent],
    **app_options: Any,
) -> list[httpx.Response]:
    """The app's responses to ``sent``, recorded into ``cassette_dir`` (written when this returns)."""
    config = TraceConfig(mode="record", cassette_dir=str(cassette_dir))
    responses = send(serve(create_app(upstream_url, config, **app_options)).url, sent)
    assert timetracer_otel.flush(30), "cassette writer did not drain"
    return responses


def replay_config(cassette: Path, **options: Any) -> TraceConfig:
    return TraceConfig(mode="replay", cassette_path=str(cassette), **options)


def replay(
    serve: Callable[..., Any],
    upstream_url: str,
    config: TraceConfig,
    sent: list[Sent],
    **app_options: Any,
) -> tuple[list[httpx.Response], list[ReplayReport]]:
    """The app's responses to ``sent`` replayed per ``config``, and the replay reports, once all are final."""
    with new_reports() as reports:
        server = serve(create_app(upstream_url, config, **app_options))
        responses = send(server.url, sent)
        server.stop()  # waits for the requests' tasks: each report is made after its response went out
    return responses, reports


@contextlib.contextmanager
def new_reports() -> Iterator[list[ReplayReport]]:
    """After the block, the list holds the replay reports made during it."""
    before = recent_reports()
    found: list[ReplayReport] = []
    yield found
    found.extend(r for r in recent_reports() if all(r is not b for b in before))


def cassette_files(directory: Path) -> list[Path]:
    """The request cassettes under ``directory`` (not the process cassette)."""
    return sorted(p for p in directory.rglob("*.json") if not p.name.startswith("process__"))


def assert_same_response(recorded: httpx.Response, replayed: httpx.Response) -> None:
    """Same status, same body bytes, same headers but uvicorn's Date and Server."""
    assert replayed.status_code == recorded.status_code, replayed.text
    assert replayed.content == recorded.content
    app_headers = [(k, v) for k, v in recorded.headers.multi_items() if k not in _SET_BY_SERVER]
    assert [
        (k, v) for k, v in replayed.headers.multi_items() if k not in _SET_BY_SERVER
    ] == app_headers


@dataclass
class FreshServer:
    url: str
    process: subprocess.Popen
    stderr: str = ""  # filled in once the process has ended


def assert_replayed_alike(
    recorded: list[httpx.Response], replayed: list[httpx.Response], stderr: str, sent: list[Sent]
) -> None:
    """Each replayed response byte-identical to its recording, and the replaying process's report
    of each request ``OK``: every recorded call answered, none unused, the response the same."""
    for before, after in zip(recorded, replayed, strict=True):
        assert after.text == before.text
        assert_same_response(before, after)
    reports = REPLAYED.findall(stderr)
    assert [(r[0], r[2], r[4] == r[5], r[6], r[7]) for r in reports] == [
        ("OK", path, True, "0", "same") for _, path, _ in sent
    ], stderr


@contextlib.contextmanager
def serving_process(
    command: list[str],
    env: dict[str, str],
    cwd: Path | None = None,
    given: Callable[[int], list[str]] = lambda fd: ["--fd", str(fd)],
) -> Iterator[FreshServer]:
    """``command --fd N`` in a fresh process with exactly ``env``, serving on a socket bound
    here (connectable at once); ``given`` says how the command takes the socket's descriptor
    (gunicorn: ``--bind fd://N``). The process is terminated after the block; then ``stderr``
    holds what it printed.

    Its output goes to files, not pipes: nobody reads a pipe before the process ends, and a
    server that logs more than a pipe holds (64 KiB: a few tracebacks) would block in its
    logging call, mid-request."""
    with socket.socket() as sock, tempfile.TemporaryFile("w+") as stderr:
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        process = subprocess.Popen(
            [*command, *given(sock.fileno())],
            env=env,
            cwd=cwd,
            pass_fds=[sock.fileno()],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            text=True,
            start_new_session=True,  # its own process group: a wrapper's child (faketime's) is stopped too
        )
        server = FreshServer(f"http://127.0.0.1:{sock.getsockname()[1]}", process)
        try:
            yield server
        finally:
            _stop_group(process)
            stderr.seek(0)
            server.stderr = stderr.read()


def _stop_group(process: subprocess.Popen) -> None:
    """SIGTERM to the process and everything it started; return once all have exited (their
    logs complete). faketime forks the command and does not pass signals on, so terminating
    faketime alone would leave the server running, its last lines unwritten."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.killpg(process.pid, 0)  # raises once no process of the group is left
        except ProcessLookupError:
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    raise AssertionError(f"the processes of {process.args[0]} did not exit within 30 s of SIGTERM")


def uvicorn_process(
    env: dict[str, str],
    app: str = "replay_app:create_app",
    *options: str,
    wrapper: Sequence[str] = (),
) -> contextlib.AbstractContextManager[FreshServer]:
    """``uvicorn --factory <app> *options`` (an app factory in tests/apps) in a fresh process with
    ``env`` added to ours, run by ``wrapper`` if given (``faketime -f -1d``)."""
    return serving_process(
        [*wrapper, *_uvicorn(["-m", "uvicorn"], app), *options], {**os.environ, **env}
    )


def audited_uvicorn_process(
    env: dict[str, str], app: str
) -> contextlib.AbstractContextManager[FreshServer]:
    """:func:`uvicorn_process` with :data:`AUDIT_HOOK` installed first: its ``stderr`` names every
    socket the process connected (:data:`CONNECTS` finds them)."""
    command = _uvicorn(["-c", AUDIT_HOOK + "from uvicorn.main import main\nmain()"], app)
    return serving_process(command, {**os.environ, **env})


def run_fresh(
    app: str, run: Callable[[str], list[httpx.Response]], **env: str
) -> tuple[list[httpx.Response], str]:
    """``run(url)``'s responses from the app factory ``app`` of tests/apps in a fresh audited uvicorn
    process with ``env`` (the mode from the environment, as in production: timetracer starts
    before the app's modules open their connections), and what that process printed."""
    with audited_uvicorn_process(env, app) as server:
        try:
            responses = run(server.url)
        except httpx.HTTPError:
            responses = []
    assert responses, server.stderr
    return responses, server.stderr


def _uvicorn(start: list[str], app: str) -> list[str]:
    """The command running uvicorn (``python *start``) on the app factory ``app`` of tests/apps."""
    return [
        sys.executable,
        *start,
        "--factory",
        "--app-dir",
        str(APPS_DIR),
        app,
        "--log-level",
        "warning",
    ]
