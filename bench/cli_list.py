"""How long ``timetracer list`` takes on a directory of many cassettes (50,000 by default).

    .venv/bin/python bench/cli_list.py [--count 50000] [--dir DIR]

Writes that many cassettes (spread over 50 days, several routes, methods and statuses)
into DIR (a temporary directory by default), then times the real command, its whole
output read through a pipe: the first run (no index yet: every file is read), warm runs
(the index is current: files are only stat'ed), a run after 100 cassettes changed, and
warm runs with a filter and with --json.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

_ROUTES = [("GET", "/users/{name}", "/users/octocat"), ("POST", "/orders", "/orders"), ("GET", "/news", "/news"),
           ("DELETE", "/orders/{id}", "/orders/42"), ("GET", "/", "/")]  # fmt: skip
_STATUSES = [200, 200, 200, 201, 404, 500, 502]


def _template() -> dict:
    body = {
        "size": 30,
        "encoding": "json",
        "json": {"user": "octocat", "note": "hi"},
        "json_format": "compact",
    }
    call = {
        "kind": "http.client", "protocol": "http", "library": "httpx", "span_id": "42936ea839f7eca4", "start_offset_ms": 21.296,
        "request": {"method": "GET", "url": "http://127.0.0.1:8001/users/octocat", "headers": [["Accept", "*/*"]],
                    "body": {"size": 0, "encoding": "empty"}},
        "response": {"status": 200, "headers": [["Content-Type", "application/json"]], "body": body},
        "error": None,
    }  # fmt: skip
    span = {
        "span_id": "dd93a0ee60630f15", "parent_id": None, "name": "GET /users/octocat", "kind": "SERVER",
        "start_offset_ms": 0.0, "duration_ms": 44.287, "start_time_unix_nano": 1, "end_time_unix_nano": 2,
        "status": {"code": "UNSET", "description": None}, "attributes": {"http.method": "GET"}, "events": [],
    }  # fmt: skip
    return {
        "format": "timetracer-cassette", "version": 1, "id": "", "trace_id": "a222aca2edfb138a5899e373d4cd9106",
        "recorded_at": "", "service": "bench-api", "duration_ms": 44.287,
        "request": {"method": "GET", "path": "/", "route": "/", "query": "", "headers": [["host", "127.0.0.1:8000"]], "body": body},
        "response": {"status": 200, "headers": [["content-type", "application/json"]], "body": body},
        "error": None, "calls": [call, call], "spans": [span],
    }  # fmt: skip


def write_cassettes(directory: Path, count: int) -> None:
    template = _template()
    for n in range(count):
        method, route, path = _ROUTES[n % len(_ROUTES)]
        doc = copy.copy(template)
        doc["id"] = f"{n:08x}"
        day = n % 50
        doc["recorded_at"] = (
            f"2026-{1 + day // 28:02d}-{1 + day % 28:02d}T{n % 24:02d}:{n % 60:02d}:{n % 59:02d}.{n % 999999:06d}Z"
        )
        doc["request"] = {**template["request"], "method": method, "path": path, "route": route}
        doc["response"] = {**template["response"], "status": _STATUSES[n % len(_STATUSES)]}
        folder = directory / doc["recorded_at"][:10]
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{method}__{route.strip('/').replace('/', '_').replace('{', '').replace('}', '')}__{doc['id']}.json"
        (folder / name).write_text(json.dumps(doc, indent=2), "utf-8")


def timed(*args: str) -> tuple[float, int]:
    """Seconds the command took with its output read through a pipe, and how many lines it printed."""
    command = [sys.executable, "-m", "timetracer_otel.cli", "list", *args]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return time.perf_counter() - started, done.stdout.count("\n")


@contextlib.contextmanager
def many_cassettes(count: int, where: str | None) -> Iterator[Path]:
    """A directory of ``count`` cassettes (below ``where``, default a temporary directory removed
    afterwards); the commands run meanwhile keep their index there too. Prints how long writing took."""
    with tempfile.TemporaryDirectory() as scratch:
        os.environ["XDG_CACHE_HOME"] = str(Path(scratch) / "cache")
        directory = Path(where or scratch) / "cassettes"
        started = time.perf_counter()
        write_cassettes(directory, count)
        print(f"wrote {count} cassettes in {time.perf_counter() - started:.1f} s to {directory}")
        yield directory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=50_000)
    parser.add_argument(
        "--dir",
        help="write the cassettes here (default: a temporary directory, removed afterwards)",
    )
    options = parser.parse_args()
    with many_cassettes(options.count, options.dir) as directory:
        cold, lines = timed("--dir", str(directory))
        print(f"list, no index yet (reads every file):  {cold:6.2f} s  ({lines - 1} rows)")
        for attempt in range(3):
            warm, lines = timed("--dir", str(directory))
            print(
                f"list, index current (run {attempt + 1}):          {warm:6.2f} s  ({lines - 1} rows)"
            )
        for path in sorted(directory.rglob("*.json"))[:100]:
            os.utime(path)
        changed, _ = timed("--dir", str(directory))
        print(f"list, after 100 cassettes changed:       {changed:6.2f} s")
        filtered, lines = timed(
            "--dir", str(directory), "--status", "5xx", "--sort", "duration", "--desc"
        )
        print(f"list --status 5xx --sort duration --desc: {filtered:5.2f} s  ({lines - 1} rows)")
        as_json, _ = timed("--dir", str(directory), "--json")
        print(f"list --json:                             {as_json:6.2f} s")


if __name__ == "__main__":
    main()
