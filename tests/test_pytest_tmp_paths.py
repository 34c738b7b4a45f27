"""pytest's temporary directories replayed as recorded: a suite that sends ``tmp_path`` (or a
session fixture's ``tmp_path_factory.mktemp``) to a service gets the recorded directory back,
made anew and empty, so its calls match; serially, on pytest-xdist's workers, and across the
two. A recorded directory outside this user's pytest root is never made or removed.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import running_upstream

pytest_plugins = ["pytester"]

_CONFTEST = """
import os

import httpx
import pytest


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    made = tmp_path_factory.mktemp("data")
    assert list(made.iterdir()) == []  # new, or made anew: empty either way
    (made / "seed.txt").write_text("seed")
    sent = httpx.post(os.environ["UPSTREAM"] + "/echo", json={"register": str(made)})
    assert sent.json()["body"] == '{"register":"' + str(made) + '"}'
    return made
"""

_CONFTEST += """

@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    # what any other pytest session of this user does as it starts and ends: old runs' directories go
    if os.environ.get("ANOTHER_SESSION_CLEANS_UP"):
        import time

        from _pytest.pathlib import LOCK_TIMEOUT, cleanup_numbered_dir

        root = item.config._tmp_path_factory.getbasetemp().parent
        cleanup_numbered_dir(root, "pytest-", 0, time.time() - LOCK_TIMEOUT)
        assert item.funcargs["tmp_path"].is_dir(), "removed while the test was using it"
    return (yield)
"""

_TESTS = """
import os
import sqlite3

import httpx
import pytest


@pytest.mark.parametrize("n", range(4))
def test_sends_its_directories(data_dir, tmp_path, n):
    assert list(tmp_path.iterdir()) == []
    assert (data_dir / "seed.txt").read_text() == "seed"
    body = {"data": str(data_dir), "own": str(tmp_path / "upload.bin"), "n": n}
    echoed = httpx.post(os.environ["UPSTREAM"] + "/echo", json=body).json()["body"]
    assert echoed == httpx.Request("POST", "http://x", json=body).content.decode()
    (tmp_path / "upload.bin").write_bytes(b"x")


def test_a_sqlite_file_in_tmp_path(tmp_path):
    db = sqlite3.connect(tmp_path / "app.db")  # sqlite3 itself: not a call
    db.execute("create table t (x text)")
    echoed = httpx.post(os.environ["UPSTREAM"] + "/echo", content=str(tmp_path / "app.db"))
    assert echoed.json()["body"] == str(tmp_path / "app.db")
"""


@pytest.fixture
def temproot() -> Iterator[Path]:
    """The suite's own temporary root, outside this run's: under pytest-xdist this run's
    directories are named after its worker (``popen-gw1``), which the suite's replaying
    workers would read as a name of their own."""
    made = Path(tempfile.mkdtemp(prefix="tt-temproot-"))
    yield made
    shutil.rmtree(made, ignore_errors=True)


@pytest.fixture
def suite(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, temproot: Path
) -> pytest.Pytester:
    """The suite, run as ``python -m pytest`` in ``temproot``: pytester's own runs would give
    each run a ``--basetemp`` of its own."""
    monkeypatch.setenv("PYTEST_ADDOPTS", "-p no:hypothesispytest -p no:faker -p no:cacheprovider")
    monkeypatch.setenv("PYTEST_DEBUG_TEMPROOT", str(temproot))
    pytester.makeini("[pytest]\ntimetracer_autouse = true\n")
    pytester.makeconftest(_CONFTEST)
    pytester.makepyfile(test_paths=_TESTS)
    return pytester


def _run(suite: pytest.Pytester, *options: str) -> pytest.RunResult:
    return suite.run(sys.executable, "-m", "pytest", *options)


def _record(suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, *options: str) -> None:
    with running_upstream() as live:
        monkeypatch.setenv("UPSTREAM", live.url)
        _run(suite, "--timetracer-mode=all", *options).assert_outcomes(passed=5)
        assert len(live.requests) == 5 + (2 if options else 1)  # the fixture once per worker


@pytest.mark.parametrize("recorded_with", [(), ("-n", "2")], ids=["serial", "xdist"])
def test_directories_sent_to_a_service_replay_as_recorded(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, recorded_with: tuple[str, ...]
) -> None:
    """Recorded serially or on two workers, replayed twice each way with the upstream down:
    every call is answered, and each directory is empty when the test gets it."""
    _record(suite, monkeypatch, *recorded_with)
    for replayed_with in ((), (), ("-n", "2"), ("-n", "2")):
        replayed = _run(suite, "--timetracer-mode=none", *replayed_with)
        replayed.assert_outcomes(passed=5)
        replayed.stdout.fnmatch_lines(["*0 not answered, 0 recorded but not made*"])


def test_a_recorded_directory_outside_the_users_pytest_root_is_not_made(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, temproot: Path
) -> None:
    """A cassette naming a directory elsewhere (edited, or from another machine's layout):
    the test gets a new one, the call it sends then differs and fails where it is made, and
    the named directory is neither made nor emptied."""
    _record(suite, monkeypatch)
    kept = suite.path / "elsewhere/test_a_sqlite_file_in_tmp_pa0"
    kept.mkdir(parents=True)
    (kept / "precious").write_text("kept")
    cassette = suite.path / "cassettes/test_paths/test_a_sqlite_file_in_tmp_path.json"
    document = json.loads(cassette.read_text())
    (draw,) = [draw for draw in document["draws"] if draw["kind"] == "tmp_path"]
    draw["value"] = str(kept)
    cassette.write_text(json.dumps(document))
    missing = temproot / "pytest-of-x/pytest-1/nowhere/test_a_sqlite_file_in_tmp_pa0"
    replayed = _run(suite, "--timetracer-mode=none", "-k", "sqlite")
    replayed.assert_outcomes(failed=1)
    replayed.stdout.fnmatch_lines(["*no recorded call matches POST*"])
    assert (kept / "precious").read_text() == "kept"
    draw["value"] = str(missing)
    cassette.write_text(json.dumps(document))
    _run(suite, "--timetracer-mode=none", "-k", "sqlite").assert_outcomes(failed=1)
    assert not missing.parent.parent.exists()


@pytest.mark.parametrize("user", ["tt-no-such-user", "nobody"])
def test_another_users_recording_is_replayed_where_no_user_here_has_that_name(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, temproot: Path, user: str
) -> None:
    """Recorded by a user this machine does not have (a laptop's recording replayed in CI):
    that user's pytest root is made here and the suite replays. A user this machine has
    (``nobody``) keeps their root: the test gets a new directory, and its call differs."""
    _record(suite, monkeypatch)
    (own,) = temproot.glob("pytest-of-*")
    for cassette in (suite.path / "cassettes").rglob("*.json"):
        text = cassette.read_text()
        cassette.write_text(text.replace(f"{own}/", f"{temproot}/pytest-of-{user}/"))
    replayed = _run(suite, "--timetracer-mode=none")
    if user == "nobody":
        assert replayed.parseoutcomes().get("passed", 0) == 0
        assert not (temproot / "pytest-of-nobody").exists()
    else:
        replayed.assert_outcomes(passed=5)
        assert (temproot / f"pytest-of-{user}").stat().st_mode & 0o777 == 0o700


def test_a_cassette_naming_a_directory_in_use_or_not_a_directory_never_empties_it(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, temproot: Path
) -> None:
    """A hostile cassette: the test's directory named as the one the session fixture was
    given in this run, then as a FIFO where the recorded directory was. Neither is opened or
    emptied; the test gets a new directory, its call differs, and the run ends."""
    _record(suite, monkeypatch)
    (own,) = temproot.glob("pytest-of-*")
    cassette = suite.path / "cassettes/test_paths/test_a_sqlite_file_in_tmp_path.json"
    document = json.loads(cassette.read_text())
    (draw,) = [draw for draw in document["draws"] if draw["kind"] == "tmp_path"]
    recorded = Path(draw["value"])
    in_use = own / "pytest-0/data0"  # recorded, and made anew for the session fixture first
    draw["value"] = str(in_use)
    cassette.write_text(json.dumps(document))
    _run(suite, "--timetracer-mode=none").assert_outcomes(passed=4, failed=1)
    assert (in_use / "seed.txt").read_text() == "seed"

    draw["value"] = str(recorded)
    cassette.write_text(json.dumps(document))
    shutil.rmtree(recorded)
    os.mkfifo(recorded)
    replayed = suite.run(
        sys.executable, "-m", "pytest", "--timetracer-mode=none", "-k", "sqlite", timeout=120
    )
    replayed.assert_outcomes(failed=1)
    assert stat.S_ISFIFO(os.lstat(recorded).st_mode)


def test_a_directory_made_anew_outlives_another_sessions_clean_up_of_old_runs(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, temproot: Path
) -> None:
    """The recorded directory is made anew in the recording run's directory, an old run by
    now: a pytest session starting or ending meanwhile removes old runs it finds unlocked, and
    removed it while the test was using it. The replaying run holds that run's lock, as pytest
    does its own, and gives it back at its end."""
    _record(suite, monkeypatch)
    monkeypatch.setenv("ANOTHER_SESSION_CLEANS_UP", "1")
    _run(suite, "--timetracer-mode=none", "-k", "sqlite").assert_outcomes(passed=1)
    (own,) = temproot.glob("pytest-of-*")
    assert not list(own.glob("*/.lock"))
