"""The process cassette: the calls an app makes outside its requests (lifespan startup, a background
task), recorded by a process started to record and answered in a fresh process that replays with
Redis and PostgreSQL unreachable; without one, dependency checks get their usual answers."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import redis
import sqlalchemy
from _replay import ALL_ANSWERED, assert_same_response, send, serving_process, uvicorn_process
from click.testing import CliRunner
from conftest import SCHEMA_PATH

from timetracer_otel import _diagnostics, _time_zone
from timetracer_otel._process_recording import MAX_CALLS, ProcessRecording
from timetracer_otel._recording import ProtocolCall
from timetracer_otel.cassette.reader import (
    CassetteError,
    cassette_files,
    load_cassette,
    process_cassette_files,
)
from timetracer_otel.cli._commands import cli
from timetracer_otel.config import TraceConfig
from timetracer_otel.exporters.writer import CassetteWriter
from timetracer_otel.protocols.redis import command_request, request_view, usual_answer
from timetracer_otel.replayers import install_replayers
from timetracer_otel.replayers.process import ProcessSession, find_process_cassette
from timetracer_otel.replayers.session import ReplayMismatchError
from timetracer_otel.sealing import is_sealed

PG = "postgresql+{driver}://postgres@127.0.0.1:{port}/test"
REDIS = "redis://127.0.0.1:{port}/0"
CLOSED = 1  # nothing listens there: a replay that tried to connect would fail
SENT = [("GET", "/state", {}), ("GET", "/items", {})]
BIN = Path(sys.executable).parent
APPS_DIR = Path(__file__).parent / "apps"


@pytest.fixture
def suffix() -> Iterator[str]:
    """This test's Redis keys and PostgreSQL table, removed afterwards."""
    suffix = uuid.uuid4().hex[:12]
    yield suffix
    engine = sqlalchemy.create_engine(PG.format(driver="psycopg", port=5432))
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text(f"DROP TABLE IF EXISTS tt_startup_{suffix}"))
    engine.dispose()
    with redis.Redis.from_url(REDIS.format(port=6379)) as client:
        keys = list(client.scan_iter(f"tt-startup:{suffix}:*"))
        if keys:
            client.delete(*keys)


def _deps(suffix: str, redis_port: int, postgres_port: int, **extra: str) -> dict[str, str]:
    return {
        "STARTUP_APP_REDIS": REDIS.format(port=redis_port),
        "STARTUP_APP_POSTGRES": PG.format(driver="asyncpg", port=postgres_port),
        "STARTUP_APP_SUFFIX": suffix,
        **extra,
    }


def _record_env(cassette_dir: Path, suffix: str, **extra: str) -> dict[str, str]:
    return {
        "TIMETRACER_MODE": "record",
        "TIMETRACER_DIR": str(cassette_dir),
        "TIMETRACER_SERVICE": "startup-app",
        **_deps(suffix, 6379, 5432, **extra),
    }


def _replay_env(cassette: Path, suffix: str, **extra: str) -> dict[str, str]:
    return {
        "TIMETRACER_MODE": "replay",
        "TIMETRACER_CASSETTE": str(cassette),
        **_deps(suffix, CLOSED, CLOSED, **extra),
    }


def _record(
    cassette_dir: Path,
    suffix: str,
    sent: list = SENT,
    factory: str = "startup_app:traced",
    **extra: str,
) -> list[httpx.Response]:
    """The app's responses, recorded in a fresh uvicorn process that has shut down when this returns."""
    with uvicorn_process(_record_env(cassette_dir, suffix, **extra), factory) as server:
        responses = send(server.url, sent)
    assert [r.status_code for r in responses] == [200] * len(sent), server.stderr
    return responses


def _replays_state(
    recorded: httpx.Response,
    cassette: Path,
    suffix: str,
    work: str,
    factory: str = "startup_app:traced",
) -> str:
    """What a fresh process replaying ``/state`` from ``cassette`` (Redis and PostgreSQL at a closed
    port) logged, once its response was found the recorded one and its calls all answered."""
    with uvicorn_process(_replay_env(cassette, suffix, STARTUP_APP_WORK=work), factory) as server:
        (replayed,) = send(server.url, SENT[:1])
    assert_same_response(recorded, replayed)
    assert ALL_ANSWERED.findall(server.stderr) == [("/state", "0")], server.stderr
    return server.stderr


def _labels(doc: dict[str, Any]) -> list[str]:
    """Each call of a cassette as ``redis GET key`` or ``sql <operation> <statement's first words>``."""
    labels = []
    for call in doc["calls"]:
        request = call["request"]
        if call["protocol"] == "redis":
            labels.append(" ".join(["redis", request["command"], *map(str, request["args"])]))
        else:
            labels.append(
                " ".join(
                    ["sql", request["operation"], *str(request.get("statement", "")).split()[:2]]
                ).upper()
            )
    return labels


def _startup_labels(suffix: str) -> list[str]:
    key = f"tt-startup:{suffix}:config"
    return [
        "redis PING",
        "SQL CONNECT",
        "SQL EXECUTE SELECT PG_CATALOG.PG_CLASS.RELNAME",
        "SQL EXECUTE CREATE TABLE",
        f"redis GET {key}",
        f"redis SET {key} warm-v1",
        f"redis GET {key}",
    ]


def test_startup_and_background_calls_replay_from_the_process_cassette(
    cassette_dir: Path, suffix: str
) -> None:
    """One process cassette, beside (not among) the request cassettes, holds startup's PING, create_all and
    cache warming and the background task's INCRBY; a fresh process with Redis and PostgreSQL at a closed
    port starts from it and replays both requests identically."""
    recorded = _record(cassette_dir, suffix)
    assert recorded[0].json() == {"ping": "True", "cache": "'warm-v1'", "ticks": "1"}
    (process_file,) = process_cassette_files(cassette_dir)
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d/process__startup-app__[0-9a-f]{8}\.json",
        process_file.relative_to(cassette_dir).as_posix(),
    )
    assert sorted(p.name.split("__")[1] for p in cassette_files(cassette_dir)) == ["items", "state"]
    doc = load_cassette(process_file, scope="process")
    assert (doc["scope"], doc["service"], doc["dropped_calls"]) == ("process", "startup-app", 0)
    assert _labels(doc) == [*_startup_labels(suffix), f"redis INCRBY tt-startup:{suffix}:ticks 1"]

    with uvicorn_process(_replay_env(cassette_dir, suffix), "startup_app:traced") as server:
        replayed = send(server.url, SENT)
    for old, new in zip(recorded, replayed, strict=False):
        assert_same_response(old, new)
    assert [path for path, _ in ALL_ANSWERED.findall(server.stderr)] == ["/state", "/items"], (
        server.stderr
    )
    assert "ReplayMismatchError" not in server.stderr
    # which process cassette answers, said once as the server starts (a directory may hold several)
    announced = (
        f"timetracer [OK] replaying calls outside requests  id={doc['id']}  calls={len(doc['calls'])}\n"
        f"  cassette: {process_file}\n"
    )
    assert server.stderr.count(announced) == 1, server.stderr
    # the path recording printed shows with `timetracer show`
    shown = subprocess.run(
        [str(BIN / "timetracer"), "show", str(process_file)],
        capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].startswith(f"calls outside requests  id={doc['id']}  service=startup-app")
    assert "8 calls, " in lines[2]
    assert f"INCRBY tt-startup:{suffix}:ticks" in shown.stdout


def test_a_startup_seeding_with_uuid4_and_now_replays_with_the_recorded_values(
    cassette_dir: Path, suffix: str
) -> None:
    """The clock, UUIDs and secrets drawn while the app starts are kept in the process cassette
    (secrets sealed) and handed back while the replaying app starts: its seed command matches,
    with Redis unreachable, and its signing key is the recorded one."""
    (recorded,) = _record(cassette_dir, suffix, SENT[:1], STARTUP_APP_WORK="seed")
    (process_file,) = process_cassette_files(cassette_dir)
    doc = load_cassette(process_file, scope="process")
    assert sorted({(d["source"], d["kind"]) for d in doc["draws"]}) == [
        ("clock", "time"), ("secrets", "urandom"), ("uuid", "uuid4"),
    ]  # fmt: skip
    assert all(is_sealed(d["value"]) for d in doc["draws"] if d["source"] == "secrets")
    assert "ReplayMismatchError" not in _replays_state(recorded, cassette_dir, suffix, "seed")


def test_a_startup_that_migrates_with_thousands_of_calls_replays_every_one(
    cassette_dir: Path, suffix: str
) -> None:
    """A start making more calls than a process cassette keeps after it (mealie's migrations):
    the process cassette keeps them all, and the app starts in replay (it failed to start at
    the first dropped call)."""
    (recorded,) = _record(cassette_dir, suffix, SENT[:1], STARTUP_APP_WORK="migrate")
    (process_file,) = process_cassette_files(cassette_dir)
    doc = load_cassette(process_file, scope="process")
    assert len(doc["calls"]) > MAX_CALLS and doc["dropped_calls"] == 0
    assert "ReplayMismatchError" not in _replays_state(recorded, cassette_dir, suffix, "migrate")


def test_a_seed_run_at_import_after_auto_setup_replays_with_the_recorded_values(
    cassette_dir: Path, suffix: str
) -> None:
    """A seed run as the module is set up, after ``auto_setup`` and before the server starts,
    draws through the hooks too: its ``uuid4()`` is in the process cassette, and the replaying
    process sends the recorded value (its SET matches with Redis unreachable)."""
    factory = "startup_app:seeded_at_import"
    (recorded,) = _record(cassette_dir, suffix, SENT[:1], factory, STARTUP_APP_WORK="checks")
    (process_file,) = process_cassette_files(cassette_dir)
    doc = load_cassette(process_file, scope="process")
    assert ("uuid", "uuid4") in {(d["source"], d["kind"]) for d in doc["draws"]}
    assert "ReplayMismatchError" not in _replays_state(
        recorded, cassette_dir, suffix, "checks", factory
    )


def test_values_drawn_while_the_apps_modules_are_imported_before_auto_setup_replay(
    cassette_dir: Path, suffix: str
) -> None:
    """The app's own modules, imported after timetracer's integration and before ``auto_setup``
    runs, draw a ``uuid4()``, the time and a secret: the process cassette keeps them, and the
    replaying process gets them back before its modules are imported, so the instance id it
    announces in Redis matches and ``/state`` is the recorded one."""
    factory = "import_draws_app:traced"
    (recorded,) = _record(cassette_dir, suffix, SENT[:1], factory, STARTUP_APP_WORK="checks")
    (process_file,) = process_cassette_files(cassette_dir)
    draws = load_cassette(process_file, scope="process")["draws"]
    assert {(d["source"], d["caller"]) for d in draws} >= {
        ("uuid", "import_draws_settings"),
        ("clock", "import_draws_settings"),
        ("secrets", "import_draws_settings"),
    }
    assert "ReplayMismatchError" not in _replays_state(
        recorded, cassette_dir, suffix, "checks", factory
    )


def test_a_background_task_started_with_the_app_replays_its_recorded_values(
    cassette_dir: Path, suffix: str
) -> None:
    """A heartbeat started by the lifespan stamps Redis with ``now()`` after the app has started:
    the task draws from the process cassette as its startup did, so each stamp it sends is the
    recorded one and the process cassette answers its SETs in order."""
    (recorded,) = _record(cassette_dir, suffix, SENT[:1], STARTUP_APP_WORK="heartbeat")
    beats = json.loads(recorded.json()["ticks"].replace("'", '"'))
    assert len(beats) == 3
    (process_file,) = process_cassette_files(cassette_dir)
    assert _labels(load_cassette(process_file, scope="process")) == [
        f"redis SET tt-startup:{suffix}:heartbeat {beat}" for beat in beats
    ]
    assert "ReplayMismatchError" not in _replays_state(recorded, cassette_dir, suffix, "heartbeat")


def test_a_startup_that_fails_leaves_its_calls_in_the_process_cassette(
    cassette_dir: Path, suffix: str
) -> None:
    """The lifespan raises after its first calls: the process cassette is written when startup
    failed (at exit no thread may start), and the process's exit reports no dropped recording."""
    with uvicorn_process(
        _record_env(cassette_dir, suffix, STARTUP_APP_WORK="fail"), "startup_app:traced"
    ) as server:
        assert server.process.wait(timeout=60) != 0
    (process_file,) = process_cassette_files(cassette_dir)
    assert _labels(load_cassette(process_file, scope="process")) == ["redis PING"]
    assert "queue is full" not in server.stderr and "RuntimeError: no config" in server.stderr


def test_the_process_cassette_is_on_disk_once_startup_completed(
    cassette_dir: Path, suffix: str
) -> None:
    """Written before the first request is served: a process killed afterwards leaves it whole."""
    with uvicorn_process(_record_env(cassette_dir, suffix), "startup_app:traced") as server:
        (response,) = send(server.url, SENT[:1])
        (process_file,) = process_cassette_files(cassette_dir)
        server.process.kill()
        server.process.wait(timeout=30)
    assert response.status_code == 200
    assert _labels(load_cassette(process_file, scope="process"))[:7] == _startup_labels(suffix)


def test_without_a_process_cassette_dependency_checks_get_their_usual_answers(
    cassette_dir: Path, suffix: str
) -> None:
    """A request cassette whose recording left no process cassette: startup's PING and SELECT 1 (engine
    with pool_pre_ping) are answered as the servers answered them, nothing listening."""
    (recorded,) = _record(cassette_dir, suffix, SENT[:1], STARTUP_APP_WORK="checks")
    assert recorded.json() == {"ping": "True", "select1": "1"}
    for process_file in process_cassette_files(cassette_dir):
        Path(process_file).unlink()
    (request_file,) = cassette_files(cassette_dir)
    _replays_state(recorded, request_file, suffix, "checks")


def test_a_cassette_given_alone_starts_with_the_process_cassette_of_its_own_recording(
    cassette_dir: Path, suffix: str
) -> None:
    """``TIMETRACER_CASSETTE`` (or ``timetracer replay``) naming one request cassette: startup is answered
    by the process cassette of the run that recorded it, not by a later run's (which only checked
    its dependencies, and holds no create_all)."""
    recorded = _record(cassette_dir, suffix)
    first_run = set(cassette_files(cassette_dir))
    _record(cassette_dir, suffix, SENT[:1], STARTUP_APP_WORK="checks")
    assert len(process_cassette_files(cassette_dir)) == 2
    (items_file,) = [f for f in first_run if "__items__" in Path(f).name]
    with uvicorn_process(_replay_env(Path(items_file), suffix), "startup_app:traced") as server:
        (replayed,) = send(server.url, SENT[1:])
    assert_same_response(recorded[1], replayed)
    assert [path for path, _ in ALL_ANSWERED.findall(server.stderr)] == ["/items"], server.stderr
    assert "ReplayMismatchError" not in server.stderr


def test_without_a_process_cassette_create_all_stops_the_app_naming_the_call(
    cassette_dir: Path, suffix: str
) -> None:
    """PING gets its usual answer; create_all's first statement carries data: startup fails, naming it."""
    _record(cassette_dir, suffix)
    for process_file in process_cassette_files(cassette_dir):
        Path(process_file).unlink()
    with uvicorn_process(_replay_env(cassette_dir, suffix), "startup_app:traced") as server:
        assert server.process.wait(timeout=60) != 0
    lines = server.stderr.splitlines()
    mismatch = next(line for line in lines if "no recorded call matches" in line)
    assert re.search(
        r"ReplayMismatchError: timetracer replay: no recorded call matches execute SELECT pg_catalog\.pg_class\.relname",
        mismatch,
    )
    assert "cassette: (no process cassette)" in lines
    assert (
        "This call was made outside every request and no process cassette answered it: replay with"
        in lines
    )


def _distro_app(env: dict[str, str]) -> Any:
    """``opentelemetry-instrument uvicorn --factory startup_app:plain``: the app has no timetracer code."""
    command = [
        str(BIN / "opentelemetry-instrument"), str(BIN / "uvicorn"), "--factory", "--app-dir", str(APPS_DIR),
        "startup_app:plain", "--log-level", "warning",
    ]  # fmt: skip
    base = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    return serving_process(command, {**base, "OTEL_TRACES_EXPORTER": "none", **env}, cwd=APPS_DIR)


def test_the_distro_records_and_replays_the_process_cassette(
    cassette_dir: Path, suffix: str
) -> None:
    """The same through ``opentelemetry-instrument``: startup recorded, then answered with nothing
    reachable. A helper script the app runs as it starts loads the distro too, and wrote a
    process cassette of its own at exit, the newest: the replay started the app from it and
    failed."""
    with _distro_app(_record_env(cassette_dir, suffix, STARTUP_APP_HELPER="1")) as server:
        recorded = send(server.url, SENT)
    assert [r.status_code for r in recorded] == [200, 200], server.stderr
    (process_file,) = process_cassette_files(cassette_dir)
    assert _labels(load_cassette(process_file, scope="process"))[:7] == _startup_labels(suffix)
    with _distro_app(_replay_env(cassette_dir, suffix)) as server:
        replayed = send(server.url, SENT)
    for old, new in zip(recorded, replayed, strict=False):
        assert_same_response(old, new)
    assert [path for path, _ in ALL_ANSWERED.findall(server.stderr)] == ["/state", "/items"], (
        server.stderr
    )


# --------------------------------------------------------------------------- the cassette itself
def _process_recording(
    cassette_dir: Path, writer: CassetteWriter, calls: int, after_start: int = 0
) -> ProcessRecording:
    """A process recording given ``calls`` calls while the app starts and ``after_start`` after."""
    recording = ProcessRecording(
        TraceConfig(mode="record", cassette_dir=str(cassette_dir)), "svc", writer
    )
    for number in range(calls + after_start):
        if number == calls:
            recording.started()
        recording.add_call(
            ProtocolCall(
                "redis",
                "redis",
                {"command": "GET", "args": [f"k{number}"], "decode_responses": False},
                response={"reply": None},
            )
        )
    return recording


def test_a_process_recording_keeps_its_start_and_at_most_max_calls_after_it(
    cassette_dir: Path,
) -> None:
    """Every call made while the app starts (migrations make thousands) and :data:`MAX_CALLS`
    after; the rest are dropped and counted."""
    before = _diagnostics.counters.snapshot().get("dropped.process_calls", 0)
    writer = CassetteWriter()
    recording = _process_recording(cassette_dir, writer, MAX_CALLS + 10, MAX_CALLS + 3)
    writer.submit(recording)
    assert writer.flush(30)
    doc = load_cassette(recording.fixed_path, scope="process")
    assert (len(doc["calls"]), doc["dropped_calls"]) == (2 * MAX_CALLS + 10, 3)
    assert _diagnostics.counters.snapshot()["dropped.process_calls"] - before == 3
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text("utf-8")))
    assert list(validator.iter_errors(doc)) == []


def test_request_cassette_readers_leave_the_process_cassette_alone(cassette_dir: Path) -> None:
    """Listings skip it, loading it as a request's cassette says what it is, ``timetracer list`` shows no row for it."""
    writer = CassetteWriter()
    recording = _process_recording(cassette_dir, writer, 1)
    writer.submit(recording)
    assert writer.flush(30)
    assert cassette_files(cassette_dir) == [] and process_cassette_files(cassette_dir) == [
        Path(recording.fixed_path)
    ]
    with pytest.raises(CassetteError, match="is a process cassette"):
        load_cassette(recording.fixed_path)
    listed = CliRunner().invoke(cli, ["list", "--dir", str(cassette_dir)])
    assert "process__" not in listed.output and recording.fixed_path not in listed.output


def test_a_thread_reading_the_clock_across_the_start_sees_no_jump_in_replay(
    cassette_dir: Path,
) -> None:
    """A start-up watchdog's thread reads the clock from before the app started to after: in
    replay it was given the recorded times while the app started and then the real ones, a jump
    of the time between recording and replay (recorded a day earlier here, under faketime)."""
    recording = {"TIMETRACER_MODE": "record", "TIMETRACER_DIR": str(cassette_dir)}
    earlier = ["faketime", "-f", "-1d"]
    with uvicorn_process(recording, "watchdog_app:create_app", wrapper=earlier) as server:
        recorded = httpx.get(f"{server.url}/steps", timeout=60)
    assert recorded.json() == {"finished": True, "smooth": True}, server.stderr
    replaying = {"TIMETRACER_MODE": "replay", "TIMETRACER_CASSETTE": str(cassette_dir)}
    with uvicorn_process(replaying, "watchdog_app:create_app") as server:
        replayed = httpx.get(f"{server.url}/steps", timeout=60)
    assert replayed.json() == {"finished": True, "smooth": True}, server.stderr


def test_search_and_show_reach_the_process_cassette(cassette_dir: Path) -> None:
    """A search for a secret must see every file: the process cassette's calls are searched (not
    when a filter that only requests answer is given), and ``show`` finds it by its id."""
    writer = CassetteWriter()
    recording = _process_recording(cassette_dir, writer, 2)
    writer.submit(recording)
    assert writer.flush(30)
    runner = CliRunner()
    found = runner.invoke(cli, ["search", "k1", "--dir", str(cassette_dir), "--json"])
    assert (found.exit_code, json.loads(found.stdout)) == (
        0,
        [{"process_cassette": recording.fixed_path, "matches": ["calls[1].request"]}],
    )
    table = runner.invoke(cli, ["search", "k1", str(cassette_dir)])  # the directory given as list's
    assert table.stdout.startswith(f"process cassette {recording.fixed_path}  FOUND IN calls[1]")
    assert "1 of 1 cassettes contain 'k1' (1 of them process cassettes)" in table.stderr
    filtered = runner.invoke(cli, ["search", "k1", "--method", "GET", "--dir", str(cassette_dir)])
    assert filtered.exit_code == 1
    process_id = Path(recording.fixed_path).name.rsplit("__", 1)[1].split(".")[0]
    shown = runner.invoke(cli, ["show", process_id[:6], "--dir", str(cassette_dir), "--json"])
    assert (shown.exit_code, json.loads(shown.stdout)["calls"][1]["request"]["args"]) == (
        0,
        ["k1"],
    )


def test_the_most_recently_recorded_process_cassette_answers(cassette_dir: Path) -> None:
    """Several recording runs in one directory: the latest ``recorded_at`` wins, whatever the names."""
    writer = CassetteWriter()
    first, second = (_process_recording(cassette_dir, writer, 1) for _ in range(2))
    first.started_ns = second.started_ns + 10**9  # the first made is the most recently recorded
    for recording in (first, second):
        writer.submit(recording)
    assert writer.flush(30)
    found = find_process_cassette(str(cassette_dir))
    assert found is not None and str(found[0]) == first.fixed_path


@pytest.mark.parametrize(
    "args",
    [
        ("PING",),
        ("SELECT", 0),
        ("CLIENT SETNAME", "tt-process"),
        ("CLIENT", "SETNAME", "tt-process"),
    ],
)
def test_without_a_process_cassette_redis_checks_answer_what_a_real_server_did(
    args: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outside requests in a replaying process, with nothing listening, the reply redis-py returns is
    the one it returns from the real server, with and without ``decode_responses``."""
    install_replayers()
    for decode in (False, True):
        with redis.Redis.from_url(REDIS.format(port=6379), decode_responses=decode) as client:
            live = client.execute_command(*args)
        with (
            monkeypatch.context() as replaying,
            redis.Redis.from_url(REDIS.format(port=CLOSED), decode_responses=decode) as client,
        ):
            replaying.setenv("TIMETRACER_MODE", "replay")
            assert client.execute_command(*args) == live


def test_commands_that_return_data_get_no_usual_answer() -> None:
    with redis.Redis.from_url(REDIS.format(port=CLOSED)) as client:
        for args in (("PING", "hello"), ("HELLO", 3), ("GET", "k"), ("ECHO", "x")):
            assert usual_answer(request_view(command_request(client, args))) is None


def test_the_documented_process_cassette_matches_the_schema() -> None:
    text = (Path(__file__).parents[1] / "docs" / "cassette-format.md").read_text("utf-8")
    section = text[text.index("## Process cassettes") : text.index("## Validating a cassette")]
    example = json.loads(re.search(r"```json\n(.*?)\n```", section, re.S).group(1))
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text("utf-8")))
    assert example["scope"] == "process" and list(validator.iter_errors(example)) == []


def test_timetracer_replay_of_the_directory_starts_the_app_from_its_process_cassette(
    cassette_dir: Path, suffix: str
) -> None:
    """``timetracer replay DIR`` runs the app's lifespan once: its process cassette answers startup."""
    _record(cassette_dir, suffix)
    command = [
        str(BIN / "timetracer"),
        "replay",
        str(cassette_dir),
        "--app",
        "startup_app:traced",
        "--app-dir",
        str(APPS_DIR),
        "--factory",
    ]
    done = subprocess.run(
        command,
        env={**os.environ, **_deps(suffix, CLOSED, CLOSED)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "replayed 2 cassettes: 2 ok, 0 differ" in done.stdout


def _replay_directory(
    cassette_dir: Path, suffix: str, factory: str
) -> subprocess.CompletedProcess[str]:
    """``timetracer replay`` of the directory through ``factory``, its dependencies unreachable."""
    command = [
        str(BIN / "timetracer"), "replay", str(cassette_dir), "--app", factory,
        "--app-dir", str(APPS_DIR), "--factory",
    ]  # fmt: skip
    env = {**os.environ, **_deps(suffix, CLOSED, CLOSED, STARTUP_APP_WORK="checks")}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)


def test_timetracer_replay_of_a_directory_two_processes_recorded_into_starts_the_app_for_each(
    cassette_dir: Path, suffix: str
) -> None:
    """Two runs of a server recorded into one directory (Monday's and Tuesday's), each drawing a
    signing key as its modules were imported: each run's request replays after its own start,
    in a process of its own, so the key it answers with is its run's."""
    factory = "import_draws_app:traced"
    recorded = [
        _record(cassette_dir, suffix, SENT[:1], factory, STARTUP_APP_WORK="checks")[0]
        for _ in range(2)
    ]
    assert recorded[0].json()["imported"] != recorded[1].json()["imported"]
    process_files = sorted(map(str, process_cassette_files(cassette_dir)))
    assert len(process_files) == 2
    done = _replay_directory(cassette_dir, suffix, factory)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "replayed 2 cassettes: 2 ok, 0 differ" in done.stdout, done.stdout + done.stderr
    assert (
        f"timetracer: 2 processes recorded into {cassette_dir}: the requests of each replay in a "
        "process of their own, after its start"
    ) in done.stderr
    announced = re.findall(r"replaying calls outside requests .*\n  cassette: (.*)", done.stderr)
    assert sorted(announced) == process_files, done.stderr
    # a server replaying the directory starts once, from the newest of the two that recorded
    # one request each, and says so
    with uvicorn_process(
        _replay_env(cassette_dir, suffix, STARTUP_APP_WORK="checks"), factory
    ) as server:
        send(server.url, SENT[:1])
    assert (
        "note: the one whose process recorded the most requests (1 of 2), of 2 process "
        "cassettes here"
    ) in server.stderr, server.stderr


def test_timetracer_replay_starts_the_app_from_the_run_that_recorded_not_a_later_one_that_only_started(
    cassette_dir: Path, suffix: str
) -> None:
    """A second run that served only health checks (excluded, not recorded) wrote the newest
    process cassette: the recorded request still replays after its own run's start, whose
    generated key it answered with, in ``timetracer replay`` and in a server replaying the
    directory."""
    factory = "import_draws_app:traced"
    (recorded,) = _record(cassette_dir, suffix, SENT[:1], factory, STARTUP_APP_WORK="checks")
    _record(
        cassette_dir, suffix, SENT[:1], factory,
        STARTUP_APP_WORK="checks", TIMETRACER_EXCLUDE_PATHS=SENT[0][1],
    )  # fmt: skip
    first, _ = sorted(
        process_cassette_files(cassette_dir),
        key=lambda path: load_cassette(path, scope="process")["recorded_at"],
    )
    assert len(cassette_files(cassette_dir)) == 1
    done = _replay_directory(cassette_dir, suffix, factory)
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.findall(r"replaying calls outside requests .*\n  cassette: (.*)", done.stderr) == [
        str(first)
    ], done.stderr
    assert "response=same" in done.stdout, done.stdout + done.stderr
    with uvicorn_process(
        _replay_env(cassette_dir, suffix, STARTUP_APP_WORK="checks"), factory
    ) as server:
        (replayed,) = send(server.url, SENT[:1])
    assert_same_response(recorded, replayed)
    assert re.findall(r"replaying calls outside requests .*\n  cassette: (.*)", server.stderr) == [
        str(first)
    ], server.stderr
    assert (
        "note: the one whose process recorded the most requests (1 of 1), of 2 process "
        "cassettes here"
    ) in server.stderr, server.stderr


def test_timetracer_replay_starts_each_request_after_the_start_of_the_worker_that_served_it(
    cassette_dir: Path, suffix: str
) -> None:
    """``uvicorn --workers 2``: both workers start at once, each drawing a signing key as its
    modules are imported. A request cassette names its worker's process cassette, so it replays
    after that worker's start: by time alone, every request went to the worker started last."""
    factory = "import_draws_app:traced"
    env = _record_env(cassette_dir, suffix, STARTUP_APP_WORK="checks")
    keys: set[str] = set()
    with uvicorn_process(env, factory, "--workers", "2") as server:
        for _ in range(60):  # new connections until both workers have answered
            keys.add(httpx.get(f"{server.url}/state", timeout=60).json()["imported"])
            if len(keys) == 2:
                break
    assert len(keys) == 2 and len(process_cassette_files(cassette_dir)) == 2, server.stderr
    done = _replay_directory(cassette_dir, suffix, factory)
    sent = len(cassette_files(cassette_dir))
    assert f"replayed {sent} cassettes: {sent} ok, 0 differ" in done.stdout, (
        done.stdout + done.stderr
    )


def test_a_call_the_process_cassette_lacks_is_refused_saying_what_to_do() -> None:
    """Background work that went on longer than the recording: the error says how to let it out."""
    session = ProcessSession(
        {"calls": []}, "process__shop__5d0c7a21.json", TraceConfig(mode="replay")
    )
    client = redis.Redis(decode_responses=True)
    with pytest.raises(ReplayMismatchError) as error:
        session.answer("redis", request_view(command_request(client, ("GET", "jobs:next"))))
    assert str(error.value).endswith(
        "This call was made outside every request and the process cassette does not answer it (background\n"
        "work that went on longer, or took another turn, than while recording): let redis go live with "
        "TIMETRACER_LIVE_PLUGINS=redis."
    )


def test_calls_outside_requests_are_accounted_for_in_bounded_memory() -> None:
    """A replay server runs for days beside a poller started with the app, whose every call
    fails: the process session keeps the most recent of its mismatches only, and counts all."""
    session = ProcessSession(
        {"calls": []}, "process__shop__5d0c7a21.json", TraceConfig(mode="replay")
    )
    client = redis.Redis(decode_responses=True)
    for number in range(2500):
        with pytest.raises(ReplayMismatchError):
            session.answer(
                "redis", request_view(command_request(client, ("GET", f"jobs:{number}")))
            )
    kept = (len(session.unmatched), len(session.made), session.unmatched_in_all)
    assert kept == (1000, 1000, 2500)
    assert "GET jobs:2499" in str(session.unmatched[-1])


# An app telling the time as naive local time, the way many do (``datetime.now()`` in a
# response, ``fromtimestamp`` of a token's expiry)
_LOCAL_TIME_APP = """
import time
from datetime import datetime

from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from timetracer_otel.integrations.starlette import auto_setup


async def now(request):
    return JSONResponse({"now": datetime.now().isoformat(), "zone": time.strftime("%Z")})


app = Starlette(routes=[Route("/now", now)])
auto_setup(app, plugins=[])
"""


def test_a_process_replays_in_the_time_zone_it_was_recorded_in(tmp_path: Path) -> None:
    """Recorded in Tokyo, replayed on a machine set to New York: each cassette keeps the zone,
    and the replaying process takes it up, so naive local times come out as recorded."""
    (tmp_path / "local_time_app.py").write_text(_LOCAL_TIME_APP, "utf-8")
    cassettes = tmp_path / "cassettes"
    command = [sys.executable, "-m", "uvicorn", "--app-dir", str(tmp_path), "local_time_app:app",
               "--log-level", "warning"]  # fmt: skip
    recording = {**os.environ, "TZ": "Asia/Tokyo", "TIMETRACER_MODE": "record",
                 "TIMETRACER_DIR": str(cassettes)}  # fmt: skip
    with serving_process(command, recording) as server:
        (recorded,) = send(server.url, [("GET", "/now", {})])
    assert recorded.json()["zone"] == "JST"
    (cassette,) = cassettes.rglob("GET__now__*.json")  # no process cassette: nothing at start
    assert json.loads(cassette.read_text("utf-8"))["time_zone"] == "Asia/Tokyo"

    replaying = {**os.environ, "TZ": "America/New_York", "TIMETRACER_MODE": "replay",
                 "TIMETRACER_CASSETTE": str(cassettes)}  # fmt: skip
    with serving_process(command, replaying) as server:
        (replayed,) = send(server.url, [("GET", "/now", {})])
    assert_same_response(recorded, replayed)
    assert (
        "timetracer: replaying in the recording's time zone, TZ=Asia/Tokyo (this machine's: America/New_York)"
        in server.stderr
    )
    assert ALL_ANSWERED.search(server.stderr) or "response=same" in server.stderr, server.stderr


@pytest.mark.parametrize(
    "zone",
    [
        "/etc/passwd",
        "../../etc/passwd",
        ":/etc/localtime",
        "EST5EDT,M3.2.0,M11.1.0",
        "No/Such_Zone",
        5,
        None,
    ],
)
def test_a_time_zone_from_a_cassette_is_taken_up_only_by_its_iana_name(zone: Any) -> None:
    """A hostile file's path or rule is never set as the process's TZ, nor a name this machine lacks."""
    before = os.environ.get("TZ")
    assert _time_zone.replay_in(zone) is None
    assert os.environ.get("TZ") == before


def test_a_time_zone_named_otherwise_with_the_same_rules_is_not_taken_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``UTC`` recorded, ``Etc/UTC`` here: nothing to take up, nothing said."""
    monkeypatch.setenv("TZ", "Etc/UTC")
    assert _time_zone.replay_in("UTC") is None
    assert os.environ["TZ"] == "Etc/UTC"
