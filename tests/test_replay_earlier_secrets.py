"""A secret one request revealed (a password at sign-up) and a later request carried with
nothing naming it (in its URL, then as an SQL parameter) was sealed in the later cassette
by value. Replayed with the key, the later request's live call hides it the same way and is
answered, and what replay prints shows it hidden, as the cassette does.

Through uvicorn and a SQLite file with SQLAlchemy; the file is gone for the replay, by a
server and by ``timetracer replay`` in a process of its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _replay import APPS_DIR, assert_same_response, new_reports, send
from apps.invite_lookup_app import create_app
from conftest import load_cassettes

import timetracer_otel
from timetracer_otel.config import TraceConfig

PASSWORD = "abcdefghij0123456789"  # token-like, long enough to be looked for in later cassettes
SENT = [("POST", "/signup", {"json": {"password": PASSWORD}}), ("GET", f"/lookup/{PASSWORD}", {})]


def test_a_secret_an_earlier_request_revealed_replays_where_a_later_one_carries_it_unnamed(
    serve: Callable[..., Any], cassette_dir: Path, tmp_path: Path
) -> None:
    database = tmp_path / "app.db"
    url = f"sqlite:///{database}"
    record = serve(create_app(url, TraceConfig(mode="record", cassette_dir=str(cassette_dir))))
    recorded = send(record.url, SENT)
    assert timetracer_otel.flush(30), "cassette writer did not drain"
    assert recorded[1].json() == {"length": len(PASSWORD)}
    assert all(PASSWORD not in json.dumps(doc) for doc in load_cassettes(cassette_dir))
    database.unlink()

    with new_reports() as reports:
        replay = serve(create_app(url, TraceConfig(mode="replay", cassette_path=str(cassette_dir))))
        replayed = send(replay.url, SENT)
        replay.stop()
    for before, after in zip(recorded, replayed, strict=True):
        assert_same_response(before, after)
    assert [(r.unmatched, r.unused, r.differences) for r in reports] == [([], [], [])] * 2
    assert [r.path for r in reports] == ["/signup", "/lookup/[REDACTED]"]

    ran = subprocess.run(
        [sys.executable, "-m", "timetracer_otel.cli", "replay", str(cassette_dir),
         "--app", "invite_lookup_app:app_from_environment", "--factory", "--app-dir", str(APPS_DIR)],
        env={**os.environ, "APP_DATABASE": url}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "replayed 2 cassettes: 2 ok, 0 differ" in ran.stdout + ran.stderr
    assert PASSWORD not in ran.stdout + ran.stderr
    assert not database.exists()
