"""Acceptance: a service's own test suite (tests/apps/real_service_tests, 55 tests of
tests/apps/real_service) taken offline with the pytest plugin, as a user would.

The suite is copied with the service into a scratch project whose ``pytest.ini`` only adds
``timetracer_autouse = true``. It is recorded against PostgreSQL, Redis and an HTTP
upstream on 127.0.0.1, serially and with pytest-xdist's ``-n 2``; then, with PostgreSQL and
Redis on a port nothing answers and the upstream stopped, it passes from its cassettes,
with ``-n 2`` and serially, while ``--timetracer-mode=off`` fails. A change to the
service that alters one Redis key fails exactly the tests that depend on it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from _services import POSTGRES, REDIS, closed_port, postgres_schemas, redis_namespace
from conftest import running_upstream

APPS_DIR = Path(__file__).parent / "apps"
TESTS = 55
_RUN_SECONDS = 300
_INI = "[pytest]\ntimetracer_autouse = true\nasyncio_default_fixture_loop_scope = function\n"


@dataclass
class Project:
    """A copy of the service and its suite, with the environment to run it in."""

    directory: Path
    env: dict[str, str]

    def pytest(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-W",
            "ignore::DeprecationWarning",
            *args,
        ]
        return subprocess.run(
            command,
            cwd=self.directory,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=_RUN_SECONDS,
        )

    def cassettes(self) -> set[str]:
        root = self.directory / "cassettes"
        return {str(path.relative_to(root)) for path in root.rglob("*.json")}


def outcomes(result: subprocess.CompletedProcess[str]) -> dict[str, int]:
    """``{"passed": 52, "failed": 1, ...}`` from pytest's last line."""
    last = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    return {word: int(count) for count, word in re.findall(r"(\d+) (passed|failed|errors?)", last)}


def _assert_all_passed(result: subprocess.CompletedProcess[str]) -> None:
    assert outcomes(result) == {"passed": TESTS}, result.stdout[-6000:] + result.stderr[-3000:]


def project(
    directory: Path, schema: str, redis_port: int, postgres_port: int, prefix: str, rates_url: str
) -> Project:
    """The service and its suite copied to ``directory``, to run against the given services."""
    shutil.copytree(APPS_DIR / "real_service", directory / "real_service")
    for source in (APPS_DIR / "real_service_tests").iterdir():
        if source.suffix == ".py":
            shutil.copy(source, directory)
    (directory / "pytest.ini").write_text(_INI)
    base = {
        k: v for k, v in os.environ.items() if not k.startswith(("TIMETRACER_", "OTEL_", "PYTEST_"))
    }
    env = {
        **base,
        "PYTHONPATH": str(directory),
        "TEST_DATABASE_URL": POSTGRES.replace(":5432/", f":{postgres_port}/"),
        "TEST_DATABASE_SCHEMA": schema,
        "REDIS_URL": REDIS.format(port=redis_port),
        "CACHE_PREFIX": prefix,
        "RATES_API_URL": rates_url,
        "SECRET_KEY": "a-secret-only-this-suite-knows-and-no-one-else",
    }
    return Project(directory, env)


@dataclass
class Recorded:
    serial: Project  # recorded with one process; its env has every service unreachable
    workers: Project  # recorded with -n 2; the same


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recorded]:
    down = closed_port()
    with postgres_schemas("_main", "_gw0", "_gw1") as schema, redis_namespace() as prefix:
        with running_upstream() as rates:
            projects = []
            for name, extra in (("serial", ()), ("workers", ("-n", "2"))):
                live = project(tmp_path_factory.mktemp(name), schema, 6379, 5432, prefix, rates.url)
                _assert_all_passed(live.pytest("--timetracer-mode=all", *extra))
                projects.append(
                    Project(live.directory, {**live.env, **project_env_down(live.env, down)})
                )
        yield Recorded(*projects)  # the rates API is stopped now


def project_env_down(env: dict[str, str], port: int) -> dict[str, str]:
    """PostgreSQL and Redis moved to ``port``, where nothing answers."""
    return {
        "TEST_DATABASE_URL": env["TEST_DATABASE_URL"].replace(":5432/", f":{port}/"),
        "REDIS_URL": REDIS.format(port=port),
    }


def test_the_suite_replays_offline_with_two_workers_and_serially(recorded: Recorded) -> None:
    suite = recorded.serial
    stale = suite.directory / "cassettes" / "test_items" / "test_that_was_removed.json"
    shutil.copy(suite.directory / "cassettes" / "test_items" / "test_read_item.json", stale)

    workers = suite.pytest("--timetracer-mode=none", "-n", "2")
    _assert_all_passed(workers)
    assert f"tests: {TESTS} replayed, 0 recorded" in workers.stdout
    assert ", 0 not answered, 0 recorded but not made" in workers.stdout
    assert (
        "stale: 1 cassettes no test owns any more (remove them with --timetracer-prune):"
        in workers.stdout
    )
    assert "cassettes/test_items/test_that_was_removed.json" in workers.stdout

    serial = suite.pytest("--timetracer-mode=none", "--timetracer-prune")
    _assert_all_passed(serial)
    assert f"tests: {TESTS} replayed, 0 recorded" in serial.stdout
    assert ", 0 not answered, 0 recorded but not made" in serial.stdout
    assert "removed 1 stale cassettes" in serial.stdout and not stale.exists()


def test_cassettes_recorded_with_two_workers_are_those_of_a_serial_run(
    recorded: Recorded,
) -> None:
    """So they replay as the serial run's do, with or without workers (above); each worker's
    instance of a fixture is kept under its name (``user@gw1.json``)."""
    kept = recorded.workers.cassettes()
    assert {re.sub(r"@gw\d+(?=\.json$)", "", name) for name in kept} == recorded.serial.cassettes()
    assert any("@fixtures/" in name and "@gw1.json" in name for name in kept)
    assert len(recorded.serial.cassettes()) > TESTS  # the fixtures' cassettes too


def test_a_live_server_threads_calls_are_in_the_cassette_of_the_test_that_sent_the_request(
    recorded: Recorded,
) -> None:
    """The app served by uvicorn in a thread: its start-up is the fixture's, each request's
    calls the test's; the test's own HTTP requests to it are neither recorded nor answered."""
    root = recorded.serial.directory / "cassettes" / "test_live_server"
    started = json.loads((root / "@fixtures" / "live_url.json").read_text())
    assert [call["request"].get("command") for call in started["calls"]][:1] == ["PING"]
    test = json.loads(
        (root / "test_an_item_made_through_the_live_server_is_in_the_database.json").read_text()
    )
    assert {call["library"] for call in test["calls"]} == {"sqlalchemy", "redis"}
    statements = [call["request"].get("statement", "") for call in test["calls"]]
    assert any(statement.startswith("INSERT INTO item ") for statement in statements)
    # The app's INSERT (the server thread), then the test's own SELECT of the row (its thread).
    inserted = next(i for i, s in enumerate(statements) if s.startswith("INSERT INTO item "))
    assert any(s.startswith("SELECT item.") for s in statements[inserted + 1 :])


def test_without_replay_the_suite_cannot_pass_with_the_services_down(recorded: Recorded) -> None:
    result = recorded.serial.pytest("--timetracer-mode=off", "test_crud.py", "test_cache.py")
    assert outcomes(result).get("passed", 0) == 0, result.stdout[-3000:]


def test_a_change_to_one_call_fails_exactly_the_tests_that_depend_on_it(
    recorded: Recorded, tmp_path: Path
) -> None:
    changed = Project(tmp_path, {**recorded.serial.env, "PYTHONPATH": str(tmp_path)})
    shutil.copytree(recorded.serial.directory, tmp_path, dirs_exist_ok=True)
    cache_module = tmp_path / "real_service" / "cache.py"
    source = cache_module.read_text()
    cache_module.write_text(
        source.replace(
            'return key("items", owner_id, skip, limit)',
            'return key("items", "v2", owner_id, skip, limit)',
        )
    )
    assert cache_module.read_text() != source

    result = changed.pytest("--timetracer-mode=none")
    failed = set(re.findall(r"^FAILED (\S+)", result.stdout, re.MULTILINE))
    assert failed == {
        "test_cache.py::test_invalidate_items_forgets_every_page",
        "test_items.py::test_read_items_lists_mine_newest_first",
        "test_items.py::test_read_items_pages",
        "test_items.py::test_read_items_is_cached_until_a_write",
    }, result.stdout[-6000:]
    assert outcomes(result) == {"passed": TESTS - 4, "failed": 4}
    assert re.search(
        r"no recorded call matches (GET|SETEX) \S+:items:v2:\S+ \(redis\)", result.stdout
    )
    assert re.search(
        r"closest recorded calls:\n.*#\d+ (GET|SETEX) \S+:items:[0-9a-f-]{36}:", result.stdout
    )


def test_a_test_without_its_cassette_fails_in_a_replay_only_run(recorded: Recorded) -> None:
    cassette = (
        recorded.serial.directory
        / "cassettes"
        / "test_login"
        / "test_forged_token_is_rejected.json"
    )
    kept = cassette.read_bytes()
    cassette.unlink()
    try:
        result = recorded.serial.pytest(
            "--timetracer-mode=none", "test_login.py::test_forged_token_is_rejected"
        )
    finally:
        cassette.write_bytes(kept)
    assert outcomes(result) == {"errors": 1} or outcomes(result) == {"error": 1}, result.stdout[
        -3000:
    ]
    assert (
        "no cassette for this test at cassettes/test_login/test_forged_token_is_rejected.json and "
        "--timetracer-mode=none only replays: record it with pytest --timetracer-mode=once"
    ) in result.stdout
