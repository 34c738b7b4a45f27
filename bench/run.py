"""All the benchmarks, then the targets as PASS/FAIL (printed, never asserted anywhere).

    .venv/bin/python bench/run.py [--quick] [--json results.json]

Runs bench/overhead.py (four modes through uvicorn, memory, cassette I/O threads),
bench/matching.py (replay matching per call), bench/exporter.py (writer throughput,
slow disk, drops) and bench/draws.py (clock, UUID and random calls, last: it patches
them in its process) with their default settings, or shorter ones with ``--quick`` (a
smoke run: its figures are not stable). Prints the machine's load before and after: other
work on the machine makes every figure worse, and the ratios noisier.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import draws
import exporter
import matching
import overhead


def _machine() -> dict[str, str]:
    return {
        "cpus": str(os.cpu_count()),
        "python": platform.python_version(),
        "loadavg": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="short runs, to check the benchmark works"
    )
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    args = parser.parse_args()
    quick = args.quick
    started, before = time.time(), _machine()
    print(
        f"machine: {before['cpus']} CPUs, Python {before['python']}, load average before: {before['loadavg']}",
        flush=True,
    )

    results = {
        "overhead": overhead.measure(
            rounds=1 if quick else 5,
            seconds=1.0 if quick else 4.0,
            concurrency=8,
            memory_requests=2_000 if quick else 20_000,
        ),
        "matching": matching.measure(),
        "exporter": exporter.measure(seconds=1.0 if quick else 5.0, delays_ms=[0.0, 2.0, 20.0]),
        "draws": draws.measure(calls=5_000 if quick else 50_000),
    }
    after = _machine()
    sections = [
        ("Requests through uvicorn (overhead.py)", overhead.report(results["overhead"])),
        ("Replay matching (matching.py)", matching.report(results["matching"])),
        ("Cassette exporter (exporter.py)", exporter.report(results["exporter"])),
        ("The app's draws (draws.py)", draws.report(results["draws"])),
    ]
    for title, lines in sections:
        print(f"\n== {title}")
        print("\n".join(lines))
    print("\n== Targets")
    for name, met, evidence in overhead.targets(results["overhead"]) + matching.targets(
        results["matching"]
    ):
        print(f"{'PASS' if met else 'FAIL'}  {name}: {evidence}")
    print(f"\nload average after: {after['loadavg']}; {time.time() - started:.0f} s in all")
    if args.json:
        args.json.write_text(
            json.dumps({"machine": {"before": before, "after": after}, **results}, indent=2)
        )


if __name__ == "__main__":
    main()
