"""How quickly the dashboard's table answers over many cassettes (50,000 by default).

    .venv/bin/python bench/dashboard.py [--count 50000] [--dir DIR] [--loads 10]

Writes the cassettes (as bench/cli_list.py does) and one with a 50 MB body, lists them once
with ``timetracer list`` (which builds the index), then starts ``timetracer serve`` on a free
port and times, over HTTP from this process: serve's start (until it prints its URL), the
table's first load, later loads, a filtered and sorted load, one recording's page, a load after
10 new cassettes were written (a directory changed: a full scan), and the page of the 50 MB
cassette, with how long a stylesheet took meanwhile (reading runs in worker threads, not on the
event loop). Prints each target as PASS or FAIL; figures depend on the machine and what else
runs on it.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
from cli_list import many_cassettes

_FIRST_LOAD_SECONDS = 1.0
_LATER_LOAD_SECONDS = 0.3


def _timed(call: Callable[[], httpx.Response]) -> float:
    started = time.perf_counter()
    response = call()
    elapsed = time.perf_counter() - started
    response.raise_for_status()
    return elapsed


@contextlib.contextmanager
def _serve(directory: Path) -> Iterator[tuple[str, float]]:
    """``timetracer serve`` on a free port: its URL, and the seconds until it printed it."""
    started = time.perf_counter()
    command = [
        str(Path(sys.executable).with_name("timetracer")),
        "serve",
        "--dir",
        str(directory),
        "--port",
        "0",
    ]
    process = subprocess.Popen(
        command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
    )
    assert process.stderr is not None
    line = process.stderr.readline()
    elapsed = time.perf_counter() - started
    try:
        yield line.rsplit(" ", 1)[1].strip().rstrip("/"), elapsed
    finally:
        process.terminate()
        process.wait(30)


def _write_large(directory: Path, megabytes: int) -> str:
    """A copy of the first cassette whose response body is ``megabytes`` MB of text; its key."""
    doc = json.loads(next(directory.rglob("*.json")).read_text("utf-8"))
    doc["id"] = "1a59e000"
    doc["response"]["body"] = {
        "size": megabytes << 20,
        "encoding": "text",
        "text": "0123456789abcdef" * (megabytes << 16),
    }
    (directory / "large").mkdir()
    (directory / "large" / "GET__large__1a59e000.json").write_text(json.dumps(doc), "utf-8")
    return "large/GET__large__1a59e000.json"


def _add_cassettes(directory: Path, count: int) -> None:
    """``count`` more cassettes, copies of the first one with new ids, in a directory of their own day."""
    first = next(directory.rglob("*.json"))
    doc = json.loads(first.read_text("utf-8"))
    folder = directory / "2027-01-01"
    folder.mkdir(exist_ok=True)
    for n in range(count):
        copied = copy.deepcopy(doc)
        copied["id"] = f"f{n:07x}"
        (folder / f"GET__new__{copied['id']}.json").write_text(json.dumps(copied), "utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=50_000)
    parser.add_argument(
        "--dir",
        help="write the cassettes here (default: a temporary directory, removed afterwards)",
    )
    parser.add_argument("--loads", type=int, default=10, help="later loads to time")
    options = parser.parse_args()
    with many_cassettes(options.count, options.dir) as directory:
        large = _write_large(directory, 50)
        started = time.perf_counter()
        subprocess.run(
            [str(Path(sys.executable).with_name("timetracer")), "list", "--dir", str(directory)],
            capture_output=True,
            check=True,
        )
        print(f"timetracer list, building the index:     {time.perf_counter() - started:6.2f} s")
        with _serve(directory) as (url, start), httpx.Client(base_url=url, timeout=120) as client:
            print(f"serve, until it prints its URL:          {start:6.2f} s")
            first = _timed(lambda: client.get("/"))
            print(f"table, first load:                       {first:6.3f} s")
            later = [_timed(lambda: client.get("/")) for _ in range(options.loads)]
            print(
                f"table, later loads (median of {options.loads}):        {statistics.median(later):6.3f} s  (max {max(later):.3f} s)"
            )
            filtered = _timed(
                lambda: client.get("/", params={"status": "5xx", "sort": "duration", "desc": "1"})
            )
            print(f"table, 5xx by duration:                  {filtered:6.3f} s")
            key = (
                next(path for path in sorted(directory.rglob("*.json")))
                .relative_to(directory)
                .as_posix()
            )
            detail = _timed(lambda: client.get(f"/cassettes/{key}"))
            print(f"one recording's page:                    {detail:6.3f} s")
            _add_cassettes(directory, 10)
            after = _timed(lambda: client.get("/"))
            print(f"table, after 10 new cassettes:           {after:6.3f} s")
            pages: list[httpx.Response] = []
            reader = threading.Thread(
                target=lambda: pages.append(client.get(f"/cassettes/{large}"))
            )
            started = time.perf_counter()
            reader.start()
            during = [_timed(lambda: client.get("/static/style.css")) for _ in range(20)]
            reader.join()
            elapsed = time.perf_counter() - started
            print(
                f"the 50 MB cassette's page:               {elapsed:6.3f} s  ({len(pages[0].content)} bytes of HTML, status {pages[0].status_code})"
            )
            print(f"  20 stylesheet loads meanwhile:         {max(during):6.3f} s at most")
        print()
        print(
            f"{'PASS' if first < _FIRST_LOAD_SECONDS else 'FAIL'}  first load of the table under {_FIRST_LOAD_SECONDS} s ({first:.3f} s)"
        )
        print(
            f"{'PASS' if statistics.median(later) < _LATER_LOAD_SECONDS else 'FAIL'}  later loads under {_LATER_LOAD_SECONDS} s (median {statistics.median(later):.3f} s)"
        )


if __name__ == "__main__":
    main()
