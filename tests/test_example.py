"""The README's first command: examples/starlette_example/run.py records one request end to end."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

RUN_PY = Path(__file__).resolve().parents[1] / "examples" / "starlette_example" / "run.py"


def test_example_records_the_upstream_call_in_a_cassette(cassette_dir: Path, tmp_path: Path) -> None:
    """run.py exits 0 and names a cassette holding GET / and its /users/octocat call, both 200.

    It runs from another directory than the repository, as a user might.
    """
    env = {**os.environ, "TIMETRACER_DIR": str(cassette_dir)}
    result = subprocess.run(
        [sys.executable, str(RUN_PY)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'GET /  ->  200 {"user": "octocat"}' in result.stdout
    assert re.search(r"^timetracer \[OK\] recorded GET /  id=\w+  status=200  .*deps=http\.client:1$", result.stdout, re.M)

    path = Path(re.search(r"^cassette  (\S+)", result.stdout, re.M).group(1))
    assert path.is_file() and path.is_relative_to(cassette_dir)
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}/GET____\w+\.json", path.relative_to(cassette_dir).as_posix())
    doc = json.loads(path.read_text("utf-8"))
    assert (doc["request"]["method"], doc["request"]["path"], doc["response"]["status"]) == ("GET", "/", 200)
    assert doc["response"]["body"]["json"] == {"user": "octocat"}
    [call] = doc["calls"]
    assert call["request"]["method"] == "GET"
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/users/octocat", call["request"]["url"])
    assert call["response"]["status"] == 200
    assert call["response"]["body"]["json"]["login"] == "octocat"
