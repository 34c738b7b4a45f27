"""The writer process: cassettes are written outside the application's process, which never waits for it.

Real child processes, stopped (SIGSTOP) or killed (SIGKILL) the way an overloaded or
crashed writer would be; recordings are made like the ASGI layer makes them.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.spawn
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind

import timetracer_otel
from timetracer_otel import _diagnostics
from timetracer_otel._recording import TraceRecording
from timetracer_otel.cassette.body import BodySink
from timetracer_otel.cassette.reader import cassette_files, load_cassette
from timetracer_otel.config import TraceConfig
from timetracer_otel.exporters import ProcessWriter

_tracer = TracerProvider().get_tracer("test_process_writer")


def _recording(config: TraceConfig, number: int, body_bytes: int = 0) -> TraceRecording:
    """A finished request ``GET /n/<number>`` with its server span and a response body of ``body_bytes``."""
    with _tracer.start_as_current_span("GET /n", kind=SpanKind.SERVER) as span:
        context = span.get_span_context()
        recording = TraceRecording(config, trace_id=context.trace_id, root_span_id=context.span_id, method="GET",
                                   path=f"/n/{number}", query="", headers=[], service="test")  # fmt: skip
        recording.status, recording.response_headers = (
            200,
            [("content-type", "application/octet-stream")],
        )
        recording.response_body = BodySink(config.max_body_bytes, b"x" * body_bytes, complete=True)
    recording.add_span(span)
    recording.seal()
    return recording


def _written_paths(directory: Path) -> list[str]:
    return sorted(load_cassette(path)["request"]["path"] for path in cassette_files(directory))


def _stat(name: str) -> int:
    return timetracer_otel.stats().get(name, 0)


@pytest.fixture
def caplog(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> pytest.LogCaptureFixture:
    """Log capture with a fresh once-a-minute limiter, so no report is held back by an earlier test."""
    monkeypatch.setattr(_diagnostics, "errors", _diagnostics._RateLimitedErrors())
    return caplog


@pytest.fixture
def python_executable() -> Iterator[Callable[[str], None]]:
    """Set the interpreter child processes start with (``multiprocessing.set_executable``), restored after."""
    before = multiprocessing.spawn.get_executable()
    yield multiprocessing.set_executable
    multiprocessing.set_executable(before)


def test_cassettes_are_written_by_another_process_and_reported_here(
    record_config: TraceConfig, cassette_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    writer = ProcessWriter()
    recorded_before = _stat("recorded")
    with caplog.at_level(logging.INFO, logger="timetracer"):
        assert writer.submit(_recording(record_config, 1))
        assert writer.flush(30)
    assert writer.process_id not in (None, os.getpid())
    # background work: where the CPUs are busy, the application goes first
    assert (
        os.getpriority(os.PRIO_PROCESS, writer.process_id)
        == os.getpriority(os.PRIO_PROCESS, 0) + 10
    )
    # a session of its own: a Ctrl-C for the application's process group does not cut its last cassettes short
    assert os.getsid(writer.process_id) == writer.process_id != os.getsid(0)
    assert _written_paths(cassette_dir) == ["/n/1"]
    assert _stat("recorded") - recorded_before == 1  # counted there, seen here
    assert [r.getMessage().split("  id=")[0] for r in caplog.records] == [
        "timetracer [OK] recorded GET /n/1"
    ]


def test_a_stopped_writer_never_blocks_the_application_and_catches_up(
    record_config: TraceConfig, cassette_dir: Path
) -> None:
    """The pipe and the pending buffer fill; what does not fit is dropped and counted; the rest is written later."""
    writer = ProcessWriter(max_pending_bytes=2 * 1024 * 1024)
    assert writer.submit(_recording(record_config, 0))
    assert writer.flush(30)
    pid = writer.process_id
    assert pid is not None
    dropped_before = _stat("dropped.queue_full")
    # 6 MB: more than fits
    recordings = [_recording(record_config, n, body_bytes=100_000) for n in range(1, 61)]
    accepted: list[bool] = []
    os.kill(pid, signal.SIGSTOP)
    try:
        submitting = threading.Thread(
            target=lambda: accepted.extend(writer.submit(r) for r in recordings)
        )
        submitting.start()
        submitting.join(60)  # joins at once unless submit blocks on the stopped writer
        assert not submitting.is_alive(), "submit blocked while the writer process was stopped"
    finally:
        os.kill(pid, signal.SIGCONT)
    assert 0 < accepted.count(False) < len(recordings)
    assert _stat("dropped.queue_full") - dropped_before == accepted.count(False)
    assert writer.flush(60)
    kept = [f"/n/{n}" for n, ok in zip(range(1, 61), accepted, strict=False) if ok]
    assert _written_paths(cassette_dir) == sorted(["/n/0", *kept])


def test_a_writer_still_behind_when_the_app_stops_is_waited_for_while_it_writes_and_said_otherwise(
    record_config: TraceConfig, cassette_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """At exit the processor waits as long as the writer keeps writing; one that wrote nothing in
    the time given is reported with how many recordings it had not written (they used to go
    unmentioned: a recording server stopped behind a slow writer lost cassettes silently)."""
    from timetracer_otel.exporters.processor import CassetteSpanProcessor

    writer = ProcessWriter()
    processor = CassetteSpanProcessor(writer)
    assert writer.submit(_recording(record_config, 0)) and writer.flush(30)
    pid = writer.process_id
    assert pid is not None
    unwritten_before = _stat("unwritten_at_exit")
    os.kill(pid, signal.SIGSTOP)
    try:
        assert writer.submit(_recording(record_config, 1))
        assert writer.submit(_recording(record_config, 2))
        assert writer.unwritten() == 2
        with caplog.at_level(logging.INFO, logger="timetracer"):
            assert not processor.flush_before_exit(0.3)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert _stat("unwritten_at_exit") - unwritten_before == 2
    assert [r.getMessage() for r in caplog.records if "were not written" in r.getMessage()] == [
        "timetracer: 2 recorded requests were not written: the cassette writer wrote none of them"
        " in 0.3 s as the application stopped; their cassettes may be missing"
    ]
    assert processor.flush_before_exit(30) and writer.unwritten() == 0
    assert _written_paths(cassette_dir) == ["/n/0", "/n/1", "/n/2"]


def test_a_killed_writer_hands_over_to_a_thread_and_nothing_is_lost(
    record_config: TraceConfig, cassette_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    writer = ProcessWriter()
    assert writer.submit(_recording(record_config, 1))
    assert writer.flush(30)
    pid = writer.process_id
    assert pid is not None
    dropped_before = timetracer_otel.stats()
    os.kill(pid, signal.SIGKILL)
    # into the pipe of a dying process, or straight to the thread
    assert writer.submit(_recording(record_config, 2))
    # returns once the process's end is seen and the thread wrote what it had not
    assert writer.flush(30)
    assert writer.process_id is None
    assert writer.submit(_recording(record_config, 3))
    assert writer.flush(30)
    assert _written_paths(cassette_dir) == ["/n/1", "/n/2", "/n/3"]
    assert {k: v for k, v in timetracer_otel.stats().items() if k.startswith("dropped.")} == {
        k: v for k, v in dropped_before.items() if k.startswith("dropped.")
    }
    assert (
        sum("cassette writer process exited (code -9)" in r.getMessage() for r in caplog.records)
        == 1
    )


def test_a_writer_that_cannot_start_python_loses_nothing(
    record_config: TraceConfig,
    cassette_dir: Path,
    python_executable: Callable[[str], None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An interpreter that starts but is not a working Python (exits at once): the thread writes what it was sent."""
    python_executable("/bin/false")
    writer = ProcessWriter()
    assert all(writer.submit(_recording(record_config, n)) for n in range(1, 4))
    assert writer.flush(30)
    assert _written_paths(cassette_dir) == ["/n/1", "/n/2", "/n/3"]
    assert (
        sum("cassette writer process exited (code 1)" in r.getMessage() for r in caplog.records)
        == 1
    )


def test_a_redact_hook_runs_in_the_application_process(cassette_dir: Path) -> None:
    seen_in: list[int] = []

    def hook(doc: dict) -> None:
        seen_in.append(os.getpid())
        doc["request"]["path"] = "/hooked"

    config = TraceConfig(mode="record", cassette_dir=str(cassette_dir), redact_hook=hook)
    writer = ProcessWriter()
    assert writer.submit(_recording(config, 1))
    assert writer.flush(30)
    assert seen_in == [os.getpid()]
    assert _written_paths(cassette_dir) == ["/hooked"]
    assert writer.process_id is None  # nothing needed it


def test_a_forked_process_starts_its_own_writer(
    record_config: TraceConfig, cassette_dir: Path
) -> None:
    """Like a gunicorn worker forked after the app was set up: the parent's pipe is not shared."""
    writer = ProcessWriter()
    assert writer.submit(_recording(record_config, 1))
    assert writer.flush(30)
    parent_writer = writer.process_id
    child = os.fork()
    # the forked process: exit status 0 only if it recorded through a writer of its own
    if child == 0:
        try:
            ok = writer.submit(_recording(record_config, 2)) and writer.flush(30)
            os._exit(0 if ok and writer.process_id not in (None, parent_writer) else 1)
        finally:
            os._exit(2)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert writer.submit(_recording(record_config, 3))
    assert writer.flush(30)
    assert writer.process_id == parent_writer
    assert _written_paths(cassette_dir) == ["/n/1", "/n/2", "/n/3"]


def test_the_writer_starts_the_interpreter_multiprocessing_would(
    record_config: TraceConfig,
    cassette_dir: Path,
    tmp_path: Path,
    python_executable: Callable[[str], None],
) -> None:
    """Where Python is embedded, sys.executable is the host program; set_executable names the real interpreter."""
    used = tmp_path / "used"
    wrapper = tmp_path / "embedded-python"
    wrapper.write_text(f'#!/bin/sh\necho "$@" > {used}\nexec {sys.executable} "$@"\n')
    wrapper.chmod(0o755)
    python_executable(str(wrapper))
    writer = ProcessWriter()
    assert writer.submit(_recording(record_config, 1))
    assert writer.flush(30)
    # and the pipe that wakes it for a flush
    assert used.read_text().startswith("-m timetracer_otel.exporters._writer_main ")
    assert _written_paths(cassette_dir) == ["/n/1"]


def test_without_an_interpreter_to_start_a_thread_writes(
    record_config: TraceConfig,
    cassette_dir: Path,
    tmp_path: Path,
    python_executable: Callable[[str], None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    python_executable(str(tmp_path / "no-such-python"))
    writer = ProcessWriter()
    assert writer.submit(_recording(record_config, 1))
    assert writer.submit(_recording(record_config, 2))
    assert writer.flush(30)
    assert writer.process_id is None
    assert _written_paths(cassette_dir) == ["/n/1", "/n/2"]
    assert (
        sum("cannot start the cassette writer process" in r.getMessage() for r in caplog.records)
        == 1
    )


# An ASGI app without a lifespan: nothing flushes its recordings when its server stops.
_BARE_APP = """
from timetracer_otel.integrations.starlette import TimeTracerMiddleware


import asyncio

import timetracer_otel


async def bare(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["path"] == "/flush":  # once the writer has written what it was handed
        assert await asyncio.to_thread(timetracer_otel.flush, 30)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": scope["path"].encode()})


app = TimeTracerMiddleware(bare)  # configured by TIMETRACER_*
"""


def _writer_of(cassette_dir: Path) -> int | None:
    """The pid of the writer process started for ``cassette_dir`` (found by its environment), if it still runs."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes()
            environment = (entry / "environ").read_bytes().split(b"\0")
        except OSError:  # it ended meanwhile
            continue
        if b"_writer_main" in command and f"TIMETRACER_DIR={cassette_dir}".encode() in environment:
            return int(entry.name)
    return None


def test_an_app_stopped_right_after_its_requests_still_gets_them_written(
    tmp_path: Path, cassette_dir: Path
) -> None:
    """The writer outlives the application (its own session): stopped as soon as it answered, with
    no lifespan to flush at, the app loses no cassette. The writer used to die reporting to the
    application it had lost, before writing what it still had to."""
    from _replay import send, serving_process

    (tmp_path / "bare_app.py").write_text(_BARE_APP, "utf-8")
    command = [sys.executable, "-m", "uvicorn", "--app-dir", str(tmp_path), "bare_app:app"]
    env = {**os.environ, "TIMETRACER_MODE": "record", "TIMETRACER_DIR": str(cassette_dir),
           "TIMETRACER_EXCLUDE_PATHS": "/flush"}  # fmt: skip
    with serving_process([*command, "--log-level", "warning"], env) as server:
        # the writer starts with the first recording, and has written it when /flush answers
        answered = send(server.url, [("GET", "/n/0", {}), ("GET", "/flush", {})])
        writer = _writer_of(cassette_dir)
        assert writer is not None, "the app started no writer process"
        # held until the application has gone: it reads the other recordings after that
        os.kill(writer, signal.SIGSTOP)
        stopped = time.monotonic()
        answered += send(server.url, [("GET", f"/n/{n}", {}) for n in range(1, 5)])
    assert [r.status_code for r in answered] == [200] * 6
    # a report is due when it wakes: one is sent at most every 0.1 s (_writer_main._REPORT_SECONDS)
    time.sleep(max(0.0, stopped + 0.1 - time.monotonic()))
    ended = select.poll()
    ended.register(os.pidfd_open(writer), select.POLLIN)
    os.kill(writer, signal.SIGCONT)
    assert ended.poll(30_000), "the writer did not end within 30 s"
    written = sorted(load_cassette(str(p))["request"]["path"] for p in cassette_files(cassette_dir))
    assert written == [f"/n/{n}" for n in range(5)]
