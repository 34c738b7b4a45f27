"""The sessions CI runs (`nox`, the README's test command): lint, the suite on every supported
Python, then the wheel, built from a clean checkout, installed and tried on each of them.

- ``lint`` runs ``ruff check``, ``ruff format --check`` and ``mypy`` (configured in
  pyproject.toml; their versions pinned in the ``test`` extra);
- ``tests-3.11`` runs the whole suite; ``tests-3.10``, ``tests-3.12`` and ``tests-3.13`` a
  representative part of it (each library's recording and replay, the databases, a few
  tests of the draws, the process cassette, the pytest plugin and the CLI), each on two
  pytest-xdist workers;
- ``build`` makes the sdist and the wheel from the repository's tracked files only;
- ``wheel-3.x`` installs that wheel with pip in a new virtual environment and imports it,
  runs ``timetracer --help`` and records and replays the example;
- ``summary`` prints the lint outcome, one line per Python and the totals.

Interpreters are pyenv's when it has them (``$PYENV_ROOT/versions/3.x.y``), else
``python3.x`` on PATH. One that cannot be found skips its sessions, and fails them when
``CI`` is set; one that answers with another version fails. ``nox -s tests-3.12 --
tests/test_redis.py`` runs chosen tests on one Python.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import nox
from nox.command import CommandFailed

PYTHONS = ["3.10", "3.11", "3.12", "3.13"]
FULL_SUITE_PYTHON = "3.11"
# What every other Python runs, a part kept small enough that CI's four Pythons finish within
# its time: each library's recording and replay, the databases, the cassette format, and one
# or two tests of each part whose code meets the interpreter (the app's draws, the process
# cassette: 3.12 starts no thread at interpreter exit; the pytest plugin's hooks; the CLI).
# The wheel sessions run the README's example on each.
REPRESENTATIVE = [
    "tests/test_record_httpx.py",
    "tests/test_record_requests.py",
    "tests/test_record_aiohttp.py",
    "tests/test_urllib3.py",
    "tests/test_asyncpg.py",
    "tests/test_psycopg.py",
    "tests/test_psycopg2.py",
    "tests/test_mysql_drivers.py",
    "tests/test_aiosqlite.py",
    "tests/test_sqlite3.py",
    "tests/test_grpc.py",
    "tests/test_record_inbound.py",
    "tests/test_replay_http.py",
    "tests/test_replay_aiohttp.py",
    "tests/test_replay_errors.py",
    "tests/test_sqlalchemy.py",
    "tests/test_redis.py",
    "tests/test_redis_matching.py",
    "tests/test_mongo.py",
    "tests/test_mongo_matching.py",
    "tests/test_smtp.py",
    "tests/test_amqp.py",
    "tests/test_plugins.py",
    "tests/test_library_units.py",
    "tests/test_cassette_format.py",
    "tests/test_cassette_values.py",
    "tests/test_packaging.py",
    "tests/test_draws.py::test_every_source_replays_identically_through_names_imported_directly",
    "tests/test_draws.py::test_the_cassette_holds_each_draw_with_its_source_kind_and_caller",
    "tests/test_process_cassette.py::test_startup_and_background_calls_replay_from_the_process_cassette",
    "tests/test_process_cassette.py::test_values_drawn_while_the_apps_modules_are_imported_before_auto_setup_replay",
    "tests/test_process_cassette.py::test_the_process_cassette_is_on_disk_once_startup_completed",
    "tests/test_pytest_plugin.py::test_spec_example_records_then_replays_with_the_upstream_down",
    "tests/test_pytest_plugin.py::test_cassettes_recorded_by_one_pytest_xdist_worker_replay_on_another",
    "tests/test_cli.py::test_replay_answers_from_the_cassette_and_exits_1_when_the_response_differs",
    "tests/test_cli.py::test_show_prints_request_response_calls_and_the_span_waterfall",
]

ROOT = Path(__file__).resolve().parent
DIST = ROOT / ".nox" / "dist"

nox.options.sessions = ["lint", "tests", "build", "wheel", "summary"]
nox.options.default_venv_backend = (
    "venv"  # the wheel: each Python's own venv and bundled pip, as a user gets
)
nox.options.download_python = "never"  # a missing interpreter is reported, not fetched
nox.options.error_on_missing_interpreters = "CI" in os.environ
nox.options.reuse_venv = "yes"  # local re-runs; CI starts from a fresh clone


_LINKS = ROOT / ".nox" / "interpreters"


def interpreter(version: str) -> str | None:
    """The newest pyenv-installed ``version`` (3.x.y: no free-threaded or dev build), else ``python{version}`` on PATH."""
    root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    patches = [
        int(path.name.rsplit(".", 1)[1])
        for path in root.glob(f"{version}.*")
        if re.fullmatch(rf"{re.escape(version)}\.\d+", path.name)
    ]
    if patches:
        return str(root / f"{version}.{max(patches)}" / "bin" / f"python{version}")
    elsewhere = os.pathsep.join(
        entry for entry in os.environ["PATH"].split(os.pathsep) if Path(entry) != _LINKS
    )
    found = shutil.which(f"python{version}", path=elsewhere)
    # a pyenv shim may run another Python
    return found if found and _version_of(found) == version else None


def _version_of(python: str) -> str | None:
    """The 3.x that ``python`` runs, or None if it does not run."""
    ran = subprocess.run(
        [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True,
        text=True,
    )
    return ran.stdout.strip() if ran.returncode == 0 else None


def _expose_interpreters() -> dict[str, str | None]:
    """Link each found interpreter as ``python3.x`` in a directory put first on PATH, where nox looks.

    pyenv's shims answer only for its active versions, so they cannot stand for the others.
    """
    _LINKS.mkdir(parents=True, exist_ok=True)
    found = {version: interpreter(version) for version in PYTHONS}
    for version, target in found.items():
        link = _LINKS / f"python{version}"
        link.unlink(missing_ok=True)
        if target:
            link.symlink_to(target)
    os.environ["PATH"] = f"{_LINKS}{os.pathsep}{os.environ['PATH']}"
    return found


_INTERPRETERS = _expose_interpreters()


@dataclass
class _Outcome:
    """What one Python's sessions found, for the summary."""

    python: str  # the full version, 3.x.y
    tests: str = "not run"
    wheel: str = "not tried"
    passed: int = 0
    failed: int = 0


_OUTCOMES: dict[str, _Outcome] = {}  # by "3.x"; sessions run one after the other in this process
_LINTED: dict[str, str] = {}  # check -> "ok" or "failed", for the summary


def _outcome(session: nox.Session) -> _Outcome:
    """This Python's entry, named in the log with the interpreter the venv was made from."""
    found = session.run(
        "python",
        "-c",
        "import os, platform, sys; print(platform.python_version(), os.path.realpath(sys.executable))",
        silent=True,
    )
    version, executable = found.split()
    session.log(f"Python {version}: {executable}")
    if not version.startswith(f"{session.python}."):
        session.error(f"the interpreter found for {session.python} is Python {version}")
    return _OUTCOMES.setdefault(str(session.python), _Outcome(version))


_CHECKS = {
    "ruff check": ["ruff", "check", "."],
    "ruff format": ["ruff", "format", "--check", "."],
    "mypy": ["mypy"],
}


@nox.session(python=FULL_SUITE_PYTHON, venv_backend="uv|venv")
def lint(session: nox.Session) -> None:
    """ruff's lint and format check, and mypy: each runs even when one before it failed."""
    session.install("-e", ".[all,test]")  # mypy reads the dependencies' own types
    for name, command in _CHECKS.items():
        try:
            session.run(*command)
            _LINTED[name] = "ok"
        except CommandFailed:
            _LINTED[name] = "failed"
    failed = [name for name, outcome in _LINTED.items() if outcome == "failed"]
    if failed:
        session.error(f"{', '.join(failed)} failed")


# uv installs the suite's dependencies in seconds, pip in minutes
@nox.session(python=PYTHONS, venv_backend="uv|venv")
def tests(session: nox.Session) -> None:
    """The whole suite on 3.11, the representative part on the others (or the tests given after --)."""
    outcome = _outcome(session)
    outcome.tests = "failed before any test ran"
    session.install("-e", ".[all,test]")
    chosen = session.posargs or ([] if session.python == FULL_SUITE_PYTHON else REPRESENTATIVE)
    scope = (
        "chosen tests" if session.posargs else "representative part" if chosen else "whole suite"
    )
    # not create_tmp(): it moves TMPDIR into the repository
    report = Path(session.virtualenv.location) / "junit.xml"
    report.unlink(missing_ok=True)
    try:
        # two workers: CI's machine has two cores; `-- -n 0` after chosen tests runs them in one
        session.run("python", "-m", "pytest", "-n", "2", f"--junitxml={report}", *chosen)
    finally:
        if report.exists():
            suite = ET.parse(report).getroot().find("testsuite")
            failed = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
            skipped = int(suite.get("skipped", 0))
            outcome.passed, outcome.failed = int(suite.get("tests", 0)) - failed - skipped, failed
            seconds = float(suite.get("time", 0))
            outcome.tests = f"{outcome.passed} passed, {failed} failed, {skipped} skipped ({scope}, {seconds:.0f} s)"


@nox.session(python=FULL_SUITE_PYTHON)
def build(session: nox.Session) -> None:
    """The sdist, and the wheel built from it, of the tracked files only: what a clean checkout holds."""
    session.install("build")
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True
    ).stdout.decode()
    shutil.rmtree(DIST, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix="timetracer-checkout-") as checkout:
        for name in filter(None, tracked.split("\0")):
            if (ROOT / name).is_file():  # tracked, not deleted in the work tree
                (Path(checkout) / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / name, Path(checkout) / name)
        # silent: its hundreds of lines would push the sessions' outcomes out of CI's log tail
        session.run("python", "-m", "build", "--outdir", str(DIST), checkout, silent=True)


# Loads every entry point of the installed distribution (an instrumentor only where its
# library, named as the entry point, is installed).
_IMPORT_ENTRY_POINTS = """
from importlib.metadata import distribution
from importlib.util import find_spec
for entry_point in distribution("timetracer-otel").entry_points:
    if entry_point.group != "opentelemetry_instrumentor" or find_spec(entry_point.name):
        entry_point.load()
"""


@nox.session(python=PYTHONS, requires=["build"], reuse_venv=False)
def wheel(session: nox.Session) -> None:
    """The wheel in a new venv: it imports from there, ``timetracer --help`` works, the example records and replays."""
    (built,) = DIST.glob("timetracer_otel-*.whl")
    outcome = _outcome(session)
    outcome.wheel = "failed"
    session.install(f"{built}[starlette,httpx,cli]", "pytest")  # pytest: to load the plugin
    # not the source tree
    with (
        tempfile.TemporaryDirectory(prefix="timetracer-smoke-") as elsewhere,
        session.chdir(elsewhere),
    ):
        where = session.run(
            "python", "-c", "import timetracer_otel; print(timetracer_otel.__file__)", silent=True
        )
        if not Path(where.strip()).is_relative_to(session.virtualenv.location):
            session.error(
                f"timetracer_otel was imported from {where.strip()}, not from the installed wheel"
            )
        session.run("timetracer", "--help")
        # every entry point's module imports from the wheel (a subpackage left out fails here)
        session.run("python", "-c", _IMPORT_ENTRY_POINTS)
        # its cassette and key stay here
        env = {
            "TIMETRACER_DIR": elsewhere,
            "XDG_CONFIG_HOME": elsewhere,
        }
        session.run("python", str(ROOT / "examples" / "starlette_example" / "run.py"), env=env)
    outcome.wheel = f"ok ({built.name})"


@nox.session(python=False)
def summary(session: nox.Session) -> None:
    """The lint outcome, one line per Python this run tried, then the totals."""
    linted = ", ".join(f"{name} {outcome}" for name, outcome in _LINTED.items()) or "not run"
    lines = []
    for version in PYTHONS:
        found = _OUTCOMES.get(version)
        if found:
            lines.append(f"Python {found.python}: {found.tests}; wheel: {found.wheel}")
        else:
            lines.append(
                f"Python {version}: "
                + ("not run" if _INTERPRETERS[version] else "no interpreter found")
            )
    passed = sum(found.passed for found in _OUTCOMES.values())
    failed = sum(found.failed for found in _OUTCOMES.values())
    print(
        "\n".join(
            [
                "",
                f"lint: {linted}",
                "per-Python summary",
                *lines,
                f"summary: {passed} passed, {failed} failed",
            ]
        ),
        flush=True,
    )
