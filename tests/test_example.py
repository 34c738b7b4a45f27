"""The README's first command: examples/starlette_example/run.py records one request, then replays it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

RUN_PY = Path(__file__).resolve().parents[1] / "examples" / "starlette_example" / "run.py"


def test_example_records_then_replays_with_the_upstream_stopped(
    cassette_dir: Path, tmp_path: Path
) -> None:
    """run.py exits 0, names a cassette holding GET / and its /users/octocat call (both 200),
    and replays it, with its upstream shut down, to the same bytes.

    It runs from another directory than the repository, as a user might.
    """
    env = {**os.environ, "TIMETRACER_DIR": str(cassette_dir)}
    result = subprocess.run(
        [sys.executable, str(RUN_PY)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'record  GET /  ->  200 {"user":"octocat"}' in result.stdout
    assert 'replay  GET /  ->  200 {"user":"octocat"}' in result.stdout
    console_line = r"^timetracer \[OK\] recorded GET /  id=(\w+)  status=200  total=\d+ms  deps=http\.client:1$"
    cassette_id = re.search(console_line, result.stdout, re.M).group(1)
    replay_line = rf"^timetracer \[OK\] replayed GET /  id={cassette_id}  status=200  calls=1/1  unused=0  response=same$"
    assert re.search(replay_line, result.stdout, re.M)

    path = Path(re.search(r"^cassette  (\S+)", result.stdout, re.M).group(1))
    assert path.is_file() and path.is_relative_to(cassette_dir)
    assert re.fullmatch(
        r"\d{4}-\d{2}-\d{2}/GET____\w+\.json", path.relative_to(cassette_dir).as_posix()
    )
    doc = json.loads(path.read_text("utf-8"))
    assert (doc["request"]["method"], doc["request"]["path"], doc["response"]["status"]) == (
        "GET",
        "/",
        200,
    )
    assert doc["response"]["body"]["json"] == {"user": "octocat"}
    [call] = doc["calls"]
    assert call["request"]["method"] == "GET"
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/users/octocat", call["request"]["url"])
    assert call["response"]["status"] == 200
    assert call["response"]["body"]["json"]["login"] == "octocat"
