"""A suite that runs with warnings as errors (``filterwarnings = error``, common in real projects)
opts in to the plugin and still passes: the plugin itself emits no warning into the user's tests.

Recent Starlette warns when ``starlette.testclient`` is imported with httpx installed; the
plugin imported it on the first cassette to wrap TestClient, which failed the first test of
every such suite that never used TestClient (fastapi-users-db-sqlalchemy's, for one).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from _services import POSTGRES, closed_port, postgres_schema

_INI = (
    "[pytest]\ntimetracer_autouse = true\nasyncio_default_fixture_loop_scope = function\n"
    "filterwarnings =\n    error\n"
)

_TESTS = """
import os
import sys

import sqlalchemy as sa


def test_reads_the_database():
    engine = sa.create_engine(os.environ["DATABASE_URL"])
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT 40 + 2")).scalar() == 42
    engine.dispose()


def test_the_suite_never_imported_the_test_client():
    assert "starlette.testclient" not in sys.modules
"""


def _pytest(directory: Path, database_url: str, mode: str) -> subprocess.CompletedProcess[str]:
    base = {
        k: v for k, v in os.environ.items() if not k.startswith(("TIMETRACER_", "OTEL_", "PYTEST_"))
    }
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", f"--timetracer-mode={mode}"],
        cwd=directory,
        env={**base, "DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_suite_with_warnings_as_errors_records_and_replays(tmp_path: Path) -> None:
    (tmp_path / "pytest.ini").write_text(_INI)
    (tmp_path / "test_db.py").write_text(_TESTS)
    with postgres_schema() as url:
        recorded = _pytest(tmp_path, url, "all")
    assert "2 passed" in recorded.stdout, recorded.stdout[-4000:] + recorded.stderr[-2000:]
    down = url.replace(POSTGRES.split("@")[1].split("/")[0], f"127.0.0.1:{closed_port()}")
    replayed = _pytest(tmp_path, down, "none")
    assert "2 passed" in replayed.stdout, replayed.stdout[-4000:]
    assert "tests: 2 replayed" in replayed.stdout, replayed.stdout[-4000:]
