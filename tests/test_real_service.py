"""Acceptance: a service written like real FastAPI backends (tests/apps/real_service) is recorded
under uvicorn against PostgreSQL, Redis and an HTTP upstream on 127.0.0.1, then replayed with
all three unreachable, and answers a scripted client session (tests/_real_service_session.py)
byte for byte as it did when recorded: twice in a row from fresh replay servers, through
``timetracer replay``, and under ``opentelemetry-instrument``.

Each replay is compared step by step; a failure lists every step that differs, with the
recorded and replayed status, the first differing bytes, the differing headers and the
replay report the server logged for that request.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from _real_service_session import HEALTH_PATH, STEPS, Exchange, run_session
from _replay import _SET_BY_SERVER, FreshServer, serving_process
from _services import REDIS, closed_port, postgres_schema, redis_namespace
from conftest import running_upstream

from timetracer_otel.cassette.reader import cassette_files

APPS_DIR = Path(__file__).parent / "apps"
BIN = Path(sys.executable).parent
_UVICORN = ["--app-dir", str(APPS_DIR), "--log-level", "warning"]
# How the service is started: with its own auto_setup line, or with no timetracer code under the distro.
LAUNCHERS = {
    "auto_setup": [sys.executable, "-m", "uvicorn", "real_service.main:app", *_UVICORN],
    "opentelemetry-instrument": [
        str(BIN / "opentelemetry-instrument"),
        str(BIN / "uvicorn"),
        "real_service.plain:app",
        *_UVICORN,
    ],
}
_NO_EXPORT = {
    "OTEL_TRACES_EXPORTER": "none",
    "OTEL_METRICS_EXPORTER": "none",
    "OTEL_LOGS_EXPORTER": "none",
}
_STARTUP_SECONDS = 30
# The second replay server runs two hours ahead (Debian's libfaketime): hour-window keys, token
# expiry and timestamps must still be the recorded ones. Monotonic clocks stay real (timeouts).
_LATER = ["faketime", "-f", "+2h"]


def service_env(
    launcher: str,
    mode: str,
    cassettes: Path,
    database_url: str,
    redis_url: str,
    rates_url: str,
    prefix: str,
) -> dict[str, str]:
    """The service's environment: ours without TIMETRACER_* and OTEL_*, plus its configuration."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("TIMETRACER_", "OTEL_"))}
    return {
        **base,
        **(_NO_EXPORT if launcher == "opentelemetry-instrument" else {}),
        "SECRET_KEY": "a-secret-only-this-test-knows",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "CACHE_PREFIX": prefix,
        "RATES_API_URL": rates_url,
        "RATES_API_KEY": "rates-api-key-of-this-test",
        "TIMETRACER_MODE": mode,
        "TIMETRACER_DIR" if mode == "record" else "TIMETRACER_CASSETTE": str(cassettes),
        "TIMETRACER_EXCLUDE_PATHS": HEALTH_PATH,
    }


# --------------------------------------------------------------------------- the service process
def _ready(server: FreshServer) -> bool:
    """Poll the health check (each try bounded by its timeout) until it answers or the process ends."""
    deadline = time.monotonic() + _STARTUP_SECONDS
    with httpx.Client(base_url=server.url, timeout=1) as client:
        while server.process.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                if client.get(HEALTH_PATH).status_code == 200:
                    return True
    return False


@contextlib.contextmanager
def running_service(
    launcher: str, env: dict[str, str], later: bool = False
) -> Iterator[FreshServer]:
    """The service in a fresh process (its clock two hours ahead if ``later``), serving once its
    lifespan start-up is done; stopped (SIGTERM: uvicorn's shutdown flushes the cassettes) after
    the block, then ``stderr`` is set."""
    command = [*_LATER, *LAUNCHERS[launcher]] if later else LAUNCHERS[launcher]
    env = {**env, "FAKETIME_DONT_FAKE_MONOTONIC": "1"} if later else env
    with serving_process(command, env, cwd=APPS_DIR) as server:
        if _ready(server):
            yield server
            return
    raise AssertionError(
        f"{launcher}: the service did not start (exit status {server.process.returncode}):\n{server.stderr[-6000:]}"
    )


# --------------------------------------------------------------------------- recording
@dataclass
class Recording:
    launcher: str
    cassettes: Path
    exchanges: list[Exchange]
    env: dict[str, str]  # the replay environment: PostgreSQL, Redis and the rates API unreachable
    step_of: dict[str, int]  # cassette path -> index of the step it was recorded for


def cassettes_by_step(directory: Path) -> dict[str, int]:
    """Cassette path -> step index; requests were sent one at a time, so recording order is step order."""
    paths = cassette_files(directory)  # the request cassettes: not the process cassette beside them
    recorded_at = {p: json.loads(p.read_text("utf-8"))["recorded_at"] for p in paths}
    return {str(p): index for index, p in enumerate(sorted(paths, key=recorded_at.__getitem__))}


def record(launcher: str, directory: Path) -> Recording:
    """Run the session against the service with PostgreSQL, Redis and the rates API up; check what it answered."""
    cassettes = directory / "cassettes"
    with (
        postgres_schema() as database_url,
        redis_namespace() as prefix,
        running_upstream() as rates,
    ):
        env = service_env(
            launcher, "record", cassettes, database_url, REDIS.format(port=6379), rates.url, prefix
        )
        with running_service(launcher, env) as server:
            exchanges = run_session(server.url)
    unexpected = [
        f"{e.step.name}: {e.status} (wanted {e.step.status}) {e.body[:300]!r}"
        for e in exchanges
        if e.status != e.step.status
    ]
    assert not unexpected, (
        "the service misbehaved while recording:\n"
        + "\n".join(unexpected)
        + f"\n{server.stderr[-3000:]}"
    )
    step_of = cassettes_by_step(cassettes)
    assert len(step_of) == len(STEPS), (
        f"{len(step_of)} cassettes for {len(STEPS)} requests:\n{server.stderr[-3000:]}"
    )
    unreachable = closed_port()
    database = f"postgresql+psycopg://postgres@127.0.0.1:{unreachable}/test"
    replay_env = service_env(
        launcher, "replay", cassettes, database, REDIS.format(port=unreachable), rates.url, prefix
    )
    return Recording(launcher, cassettes, exchanges, replay_env, step_of)


@pytest.fixture(scope="module")
def auto_setup_recording(tmp_path_factory: pytest.TempPathFactory) -> Recording:
    return record("auto_setup", tmp_path_factory.mktemp("auto_setup"))


# --------------------------------------------------------------------------- comparing
def _first_difference(recorded: bytes, replayed: bytes) -> str:
    at = next(
        (i for i, (a, b) in enumerate(zip(recorded, replayed, strict=False)) if a != b),
        min(len(recorded), len(replayed)),
    )
    start = max(at - 16, 0)
    return f"first difference at byte {at}: recorded {recorded[start : at + 48]!r}, replayed {replayed[start : at + 48]!r}"


def _app_headers(exchange: Exchange) -> dict[str, list[str]]:
    headers: dict[str, list[str]] = {}
    for name, value in exchange.headers:
        if name.lower() not in _SET_BY_SERVER:
            headers.setdefault(name.lower(), []).append(value)
    return headers


def differences(recorded: Exchange, replayed: Exchange) -> list[str]:
    """What differs between two answers to one step: status, body bytes, headers (but Date and Server)."""
    found = []
    if recorded.status != replayed.status:
        found.append(f"status: recorded {recorded.status}, replayed {replayed.status}")
    if recorded.body != replayed.body:
        found.append(f"body: {_first_difference(recorded.body, replayed.body)}")
    old, new = _app_headers(recorded), _app_headers(replayed)
    found.extend(
        f"header {name}: recorded {old.get(name)}, replayed {new.get(name)}"
        for name in sorted({*old, *new})
        if old.get(name) != new.get(name)
    )
    return found


def request_difference(recorded: httpx.Request, replayed: httpx.Request) -> str | None:
    """How the replayed session's request differs from the recorded one: a value it took from an earlier answer."""
    parts = {
        "path": lambda r: r.url.raw_path.decode(),
        "body": lambda r: r.content,
        "authorization": lambda r: r.headers.get("authorization"),
    }
    changed = [
        f"{name} recorded {get(recorded)!r:.90}, sent {get(replayed)!r:.90}"
        for name, get in parts.items()
        if get(recorded) != get(replayed)
    ]
    return "request differs (it uses an earlier answer): " + "; ".join(changed) if changed else None


def report_blocks(stderr: str) -> list[str]:
    """The ``timetracer [OK]/[DIFF] replayed ...`` reports in a server's log, each with its indented lines."""
    blocks: list[list[str]] = []
    open_block = False
    for line in stderr.splitlines():
        if line.startswith("timetracer [") and " replayed " in line:
            blocks.append([line])
            open_block = True
        elif open_block and line.startswith("  "):
            blocks[-1].append(line)
        else:
            open_block = False
    return ["\n".join(block) for block in blocks]


def _whose_cassette(report: str, index: int, recording: Recording) -> str | None:
    """A note when the report's cassette was recorded for another step than this one."""
    for line in report.splitlines():
        if line.startswith("  cassette: "):
            owner = recording.step_of.get(line.removeprefix("  cassette: ").strip())
            if owner is not None and owner != index:
                return f"    ! that cassette was recorded for step [{owner}] {STEPS[owner].name!r}"
    return None


def replay_failures(recording: Recording, replayed: list[Exchange], stderr: str) -> list[str]:
    """One paragraph per step whose replayed answer differs from the recorded one."""
    reports = report_blocks(stderr)
    paragraphs = []
    if len(reports) != len(replayed):
        paragraphs.append(
            f"(the server logged {len(reports)} replay reports for {len(replayed)} requests)"
        )
    for index, (old, new) in enumerate(zip(recording.exchanges, replayed, strict=False)):
        found = differences(old, new)
        if not found:
            continue
        lines = [
            f"[{index}] {old.step.name}: {new.request.method} {new.request.url.raw_path.decode()}",
            *(f"    {d}" for d in found),
        ]
        lines.append(f"    {request_difference(old.request, new.request) or ''}")
        if len(reports) == len(replayed):
            lines.extend(f"    {line}" for line in reports[index].splitlines())
            lines.append(_whose_cassette(reports[index], index, recording) or "")
        paragraphs.append("\n".join(line for line in lines if line))
    return paragraphs


def replay_twice(recording: Recording) -> list[str]:
    """Replay the session in two fresh replay servers, one after the other, the second two hours
    later by its clock; what differed in each."""
    failures: list[str] = []
    for run in (1, 2):
        with running_service(recording.launcher, recording.env, later=run == 2) as server:
            replayed = run_session(server.url)
        differing = replay_failures(recording, replayed, server.stderr)
        if differing:
            failures.append(
                f"=== {recording.launcher}, replay server {run}: {len(differing)} of {len(STEPS)} steps differ"
            )
            failures.extend(differing)
    return failures


# --------------------------------------------------------------------------- the tests
def test_a_replaying_server_answers_the_session_as_recorded(
    auto_setup_recording: Recording,
) -> None:
    failures = replay_twice(auto_setup_recording)
    assert not failures, "\n".join(failures)


def test_timetracer_replay_answers_every_cassette_as_recorded(
    auto_setup_recording: Recording,
) -> None:
    """``timetracer replay DIR --app ...`` sends each cassette's recorded request; every report must be OK."""
    recording = auto_setup_recording
    command = [
        str(BIN / "timetracer"),
        "replay",
        str(recording.cassettes),
        "--app",
        "real_service.main:app",
        "--app-dir",
        str(APPS_DIR),
        "--json",
    ]
    done = subprocess.run(
        command, env=recording.env, cwd=APPS_DIR, capture_output=True, text=True, timeout=120
    )
    try:  # exit status 1 is also Python's for an uncaught exception: then stdout holds no reports
        reports: list[dict[str, Any]] = json.loads(done.stdout)
    except ValueError:
        raise AssertionError(
            f"timetracer replay exited {done.returncode} with no report:\n{done.stderr[-6000:]}"
        ) from None
    assert len(reports) == len(STEPS), f"{len(reports)} reports for {len(STEPS)} cassettes"
    failed = []
    for report in reports:
        if not report["ok"]:
            index = recording.step_of.get(report["cassette"], -1)
            details = [f"unmatched: {u}" for u in report["unmatched"]] + report["differences"]
            failed.append(
                f"[{index}] {STEPS[index].name if index >= 0 else '?'}: {report['method']} {report['path']}  "
                f"status recorded {report['recorded_status']}, replayed {report['status']}\n"
                + "\n".join(f"    {d}" for d in details)
            )
    assert not failed and done.returncode == 0, (
        f"{len(failed)} of {len(reports)} cassettes replay differently:\n" + "\n".join(failed)
    )


def test_a_cassette_replayed_alone_gets_the_answers_its_process_remembered(
    auto_setup_recording: Recording,
) -> None:
    """The service asks the rates API for its currencies once per process: only the first price
    request's cassette holds that call. The second, replayed alone in a fresh process, makes it
    again and is answered from the first one's cassette, and its report says so."""
    recording = auto_setup_recording
    first, second = (
        next(path for path, step in recording.step_of.items() if STEPS[step].name == name)
        for name in ("alice gets item 1's price in EUR", "alice gets item 3's price in GBP")
    )
    command = [str(BIN / "timetracer"), "replay", second, "--app", "real_service.main:app"]
    done = subprocess.run(
        [*command, "--app-dir", str(APPS_DIR), "--json"],
        env=recording.env,
        cwd=APPS_DIR,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (report,) = json.loads(done.stdout)
    assert report["ok"] and report["unmatched"] == [], report
    assert report["from_earlier"] == [
        f"httpx GET {recording.env['RATES_API_URL']}/currencies (answered by {Path(first).name}, recorded before)"
    ]
    (entry,) = [call for call in report["calls"] if call.get("earlier")]
    assert entry["earlier"].startswith(first + "#")


def test_opentelemetry_instrument_records_and_replays_the_session(tmp_path: Path) -> None:
    """The same service with no timetracer code, recorded and replayed under ``opentelemetry-instrument``."""
    failures = replay_twice(record("opentelemetry-instrument", tmp_path))
    assert not failures, "\n".join(failures)
