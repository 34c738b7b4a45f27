"""Where record mode's CPU goes: CPU time per ``/dep`` request, by thread, of three servers.

    .venv/bin/python bench/cpu_split.py [--requests 2000] [--rounds 2] [--concurrency 8]

Servers (bench/_app.py under uvicorn, as in bench/overhead.py): ``otel`` (plain
OpenTelemetry), ``record`` (timetracer recording), and ``capture only`` (timetracer
recording, every finished recording dropped instead of written: ``BENCH_DISCARD=1``).
For each, the user and system CPU time of every thread (``/proc/PID/task/TID/stat``)
and of its child processes
over ``--requests`` requests, divided by the number of requests; for ``record`` the
count waits until the writer has written what was queued. Rounds alternate the servers.

It separates what the request path costs (the event loop's thread in ``capture only``
against ``otel``) from what writing costs (the writer process, a child of the server,
or the writer thread where one writes), and shows what writing does to the event
loop's own CPU time (``record`` against ``capture only``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

import overhead
from _proc import children_cpu, thread_cpu

SERVERS = {
    "otel": ("otel", {}),
    "capture only": ("record", {"BENCH_DISCARD": "1"}),
    "record": ("record", {}),
}


def _cpu(pid: int) -> dict[tuple[str, int], tuple[float, float]]:
    """(where, id) -> (user, system) seconds: the server's threads, and its child processes (the writer)."""
    threads = {
        ("loop" if tid == pid else "other", tid): cpu for tid, cpu in thread_cpu(pid).items()
    }
    return {**threads, **{("child", child): cpu for child, cpu in children_cpu(pid).items()}}


def _per_request(before: dict, after: dict, requests: int) -> dict[str, float]:
    """µs per request: event loop user/system, the server's other threads, its child processes."""
    split = {
        f"{where}_{kind}": 0.0
        for where in ("loop", "other", "child")
        for kind in ("user", "system")
    }
    for (where, key), (user, system) in after.items():
        user0, system0 = before.get((where, key), (0.0, 0.0))
        split[f"{where}_user"] += (user - user0) / requests * 1e6
        split[f"{where}_system"] += (system - system0) / requests * 1e6
    return split


def measure(requests: int, rounds: int, concurrency: int) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="timetracer-bench-cpu-"))
    database = workdir / "items.db"
    overhead._make_database(database)
    results: dict[str, list[dict[str, float]]] = {name: [] for name in SERVERS}
    with overhead.uvicorn_server(
        "upstream", "_upstream:app", dict(os.environ), workdir / "upstream.log", factory=False
    ) as upstream:
        env = overhead._base_env(upstream.url, database)
        with contextlib.ExitStack() as stack:
            servers = {}
            for name, (mode, extra) in SERVERS.items():
                directory = workdir / name.replace(" ", "-")
                settings = overhead._mode_settings(mode, directory, directory)
                servers[name] = (directory, stack.enter_context(
                    overhead.uvicorn_server(name, "_app:create_app", {**env, "BENCH_MODE": mode, **settings, **extra}, workdir / f"{mode}.log")
                ))  # fmt: skip
            for _directory, server in servers.values():
                overhead._warm(server, concurrency, seconds=1)
            for _ in range(rounds):
                for name, (directory, server) in servers.items():
                    pid = server.process.pid
                    if name == "record":
                        overhead._settled(directory, server.served)
                    before = _cpu(pid)
                    overhead.load(server, "/dep", concurrency, requests=requests)
                    if name == "record":
                        overhead._settled(directory, server.served)
                    results[name].append(_per_request(before, _cpu(pid), requests))
    return {
        name: {key: statistics.median(r[key] for r in rows) for key in rows[0]}
        for name, rows in results.items()
    }


def report(results: dict[str, Any]) -> list[str]:
    lines = [
        "server         µs/request (user + system): event loop        other threads       child processes     total"
    ]
    for name, row in results.items():
        parts = [
            (row[f"{where}_user"], row[f"{where}_system"]) for where in ("loop", "other", "child")
        ]
        shown = "".join(
            f" {user + system:>8.0f} ({user:>5.0f} +{system:>5.0f})" for user, system in parts
        )
        lines.append(f"{name:<14}{'':>29}{shown} {sum(u + s for u, s in parts):>8.0f}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    print("\n".join(report(measure(args.requests, args.rounds, args.concurrency))))


if __name__ == "__main__":
    main()
