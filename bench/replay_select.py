"""How fast directory replay starts on 50,000 cassettes, how much memory it holds, and how
long choosing a request's cassette takes.

    .venv/bin/python bench/replay_select.py [--count 50000] [--requests 20000] [--dir DIR]

Writes that many small cassettes (500 paths of 5 routes, each path recorded 100 times
with 10 different bodies and 2 different secret values, so signatures repeat as they do
in real traffic) into DIR (a temporary directory by default). Each measurement runs in a
fresh process, so its peak RSS is its own: building the library with no index yet (every
cassette is parsed and checked once, and the index is saved), building it again with the
index current (files are only stat'ed), and, in that warm process, choosing the cassette
for requests taken from the recordings: each choice includes loading the chosen cassette
unless it is among the last few chosen.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from cli_list import _template

_ROUTES = ["/users/{id}", "/orders/{id}", "/news/{id}", "/carts/{id}", "/items/{id}"]
_KEY = "bench-secret-key-0123456789abcdef"


def write_cassettes(directory: Path, count: int) -> None:
    from timetracer_otel._fingerprint import fingerprint
    from timetracer_otel._keys import Key

    key = Key(_KEY.encode(), "bench")
    template = _template()
    for n in range(count):
        route = _ROUTES[n % len(_ROUTES)]
        path = route.replace("{id}", str(n % 500))
        doc = copy.copy(template)
        doc["id"] = f"{n:08x}"
        doc["recorded_at"] = (
            f"2026-01-{1 + n % 28:02d}T{n % 24:02d}:{n % 60:02d}:{n % 59:02d}.{n:06d}Z"
        )
        body = {"size": 20, "encoding": "json", "json": {"page": n % 10}, "json_format": "compact"}
        secret = [("header authorization", f"Bearer user-{n % 2}")]
        doc["request"] = {
            "method": "POST", "path": path, "route": route, "query": "", "headers": [["authorization", "[REDACTED]"]],
            "body": body, "fingerprint": fingerprint(secret, key),
        }  # fmt: skip
        folder = directory / doc["recorded_at"][:10]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"POST__{route.strip('/').split('/')[0]}_id__{doc['id']}.json").write_text(
            json.dumps(doc, indent=2), "utf-8"
        )


def _rss_mib() -> float:
    """The peak RSS of this process so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _held_mib() -> float:
    """The memory Python's allocator holds now (what stays once the start is over)."""
    return tracemalloc.get_traced_memory()[0] / 2**20


def measure(directory: str, requests: int) -> dict:
    """In this process: import, build the library, then choose ``requests`` cassettes."""
    from timetracer_otel.config import TraceConfig
    from timetracer_otel.replayers.selection import CassetteLibrary, LiveRequest

    imported = _rss_mib()
    started = time.perf_counter()
    library = CassetteLibrary(directory)
    built = time.perf_counter() - started
    result = {"build_s": built, "rss_imports_mib": imported, "rss_after_build_mib": _rss_mib()}
    if requests:
        config = TraceConfig(mode="replay", cassette_path=directory, secret_key=_KEY)
        sent = []
        for n in range(requests):
            route = _ROUTES[n % len(_ROUTES)]
            body = json.dumps({"page": (n // 7) % 10}).encode()
            headers = [  # raw, as ASGI gives them
                (b"content-type", b"application/json"),
                (b"authorization", f"Bearer user-{n % 2}".encode()),
            ]
            sent.append(
                LiveRequest(
                    "POST", route.replace("{id}", str((n * 7) % 500)), route, "", headers, body
                )
            )
        started = time.perf_counter()
        for request in sent:
            library.select(request, config)
        result["select_us"] = (time.perf_counter() - started) / requests * 1e6
        result["rss_after_select_mib"] = _rss_mib()
        paths = library.in_recording_order()[
            :: max(1, len(library.in_recording_order()) // requests)
        ][:requests]
        started = time.perf_counter()
        for path in paths:
            library.load(path)
        result["load_us"] = (time.perf_counter() - started) / len(paths) * 1e6
    del library
    tracemalloc.start()  # last: tracing costs memory of its own
    held = CassetteLibrary(directory)
    result["held_mib"] = _held_mib()
    del held
    return result


def _run(directory: Path, requests: int) -> dict:
    command = [sys.executable, __file__, "--measure", str(directory), "--requests", str(requests)]
    done = subprocess.run(
        command, capture_output=True, text=True, check=True, cwd=Path(__file__).parent
    )
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=50_000)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument(
        "--dir",
        help="write the cassettes here (default: a temporary directory, removed afterwards)",
    )
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.measure:
        print(json.dumps(measure(options.measure, options.requests)))
        return
    with tempfile.TemporaryDirectory() as temporary:
        # the commands' index goes where the cassettes go
        os.environ["XDG_CACHE_HOME"] = str(Path(temporary) / "cache")
        directory = Path(options.dir or temporary)
        started = time.perf_counter()
        write_cassettes(directory, options.count)
        size = sum(f.stat().st_size for f in directory.rglob("*.json"))
        print(
            f"wrote {options.count} cassettes ({size / 2**20:.0f} MiB) in {time.perf_counter() - started:.1f} s"
        )
        cold = _run(directory, 0)
        warm = _run(directory, options.requests)
        print(f"python + timetracer imported:  peak RSS {cold['rss_imports_mib']:.0f} MiB")
        print(
            f"start, no index yet:           {cold['build_s']:.2f} s, peak RSS {cold['rss_after_build_mib']:.0f} MiB"
        )
        print(
            f"start, index current:          {warm['build_s']:.2f} s, peak RSS {warm['rss_after_build_mib']:.0f} MiB"
        )
        print(
            f"held by the library once built: {warm['held_mib']:.1f} MiB ({warm['held_mib'] * 2**20 / options.count:.0f} bytes a cassette)"
        )
        print(
            f"choosing ({options.requests} requests):   {warm['select_us']:.0f} us each, of which loading the cassette "
            f"{warm['load_us']:.0f} us; peak RSS {warm['rss_after_select_mib']:.0f} MiB"
        )


if __name__ == "__main__":
    main()
