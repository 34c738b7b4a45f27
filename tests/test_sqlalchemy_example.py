"""The spec's "Example: Complete API" (Starlette + SQLAlchemy + httpx), as written, run by uvicorn
in fresh processes: recorded, then replayed with its SQLite file deleted and its upstream down."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from _replay import assert_same_response
from conftest import running_upstream

# The spec's code block, unchanged but for the import root (timetracer -> timetracer_otel).
EXAMPLE = """
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.responses import JSONResponse
from timetracer_otel.integrations.starlette import auto_setup
from sqlalchemy import create_engine, Column, Integer, String
from sqlalchemy.ext.declarative import declarative_base
from sqlalchemy.orm import sessionmaker
import httpx

Base = declarative_base()

class User(Base):
    __tablename__ = "users"
    id = Column(Integer, primary_key=True)
    username = Column(String)
    github_url = Column(String)

engine = create_engine("sqlite:///./test.db")
Base.metadata.create_all(engine)
Session = sessionmaker(bind=engine)

async def get_user(request):
    user_id = request.path_params["user_id"]

    # Database query (traced)
    session = Session()
    user = session.query(User).filter_by(id=user_id).first()
    session.close()

    if not user:
        return JSONResponse({"error": "not found"}, status_code=404)

    # HTTP call (traced)
    async with httpx.AsyncClient() as client:
        response = await client.get(user.github_url)
        github_data = response.json()

    return JSONResponse({
        "user": user.username,
        "github": github_data,
    })

app = Starlette(debug=True, routes=[
    Route("/users/{user_id:int}", get_user),
])

# Setup with multiple plugins
auto_setup(app, plugins=["httpx", "sqlalchemy"])
"""


@contextlib.contextmanager
def _uvicorn(app_dir: Path, env: dict[str, str], stderr: list[str]) -> Iterator[str]:
    """``uvicorn app:app`` run from ``app_dir`` on a socket bound here (connectable at once); its URL.

    After the block the process has shut down (cassettes flushed) and ``stderr`` holds what it printed.
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            "app:app",
            "--fd",
            str(sock.fileno()),
            "--log-level",
            "warning",
        ]
        process = subprocess.Popen(
            command,
            cwd=app_dir,
            env={**os.environ, **env},
            pass_fds=[sock.fileno()],
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            yield f"http://127.0.0.1:{sock.getsockname()[1]}"
        finally:
            process.terminate()
            stderr.append(process.communicate(timeout=30)[1])


def _get(base_url: str, paths: list[str]) -> list[httpx.Response]:
    with httpx.Client(base_url=base_url, timeout=30) as client:
        return [client.get(path) for path in paths]


def test_complete_api_example_replays_without_its_database_or_upstream(
    tmp_path: Path, cassette_dir: Path
) -> None:
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    (app_dir / "app.py").write_text(EXAMPLE)
    database = app_dir / "test.db"
    record_log: list[str] = []
    with running_upstream() as upstream:
        github_url = f"{upstream.url}/echo?user=octocat"  # stands in for https://api.github.com/users/octocat
        with _uvicorn(
            app_dir, {"TIMETRACER_MODE": "record", "TIMETRACER_DIR": str(cassette_dir)}, record_log
        ) as url:
            # answered once the app is imported: its table exists
            (missing,) = _get(url, ["/users/2"])
            with contextlib.closing(sqlite3.connect(database)) as db, db:
                db.execute(
                    "INSERT INTO users (id, username, github_url) VALUES (1, 'octocat', ?)",
                    (github_url,),
                )
            (found,) = _get(url, ["/users/1"])
    assert (missing.status_code, missing.json()) == (404, {"error": "not found"})
    assert found.status_code == 200, found.text
    assert found.json() == {
        "user": "octocat",
        "github": {"method": "GET", "query": "user=octocat", "body": "", "content_type": None},
    }
    assert re.search(
        r"recorded GET /users/1  id=\w+  status=200 .* deps=(?=.*sql\.client:2)(?=.*http\.client:1)",
        record_log[0],
    )

    database.unlink()
    with pytest.raises(httpx.ConnectError):  # the upstream is down
        httpx.get(github_url)
    replay_log: list[str] = []
    with _uvicorn(
        app_dir, {"TIMETRACER_MODE": "replay", "TIMETRACER_CASSETTE": str(cassette_dir)}, replay_log
    ) as url:
        replayed = _get(url, ["/users/1", "/users/2"])
    assert_same_response(found, replayed[0])
    assert_same_response(missing, replayed[1])
    for path, calls in (("/users/1", 3), ("/users/2", 2)):  # connect + query (+ the upstream call)
        line = f"timetracer [OK] replayed GET {path}  id="
        assert re.search(
            re.escape(line) + rf"\w+  status=\d+  calls={calls}/{calls}  unused=0  response=same",
            replay_log[0],
        )
    # The example's create_all() made an empty database again at import; the user came from the cassette.
    with contextlib.closing(sqlite3.connect(database)) as db:
        assert db.execute("SELECT count(*) FROM users").fetchone() == (0,)
