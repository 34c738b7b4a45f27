"""Per-request overhead of timetracer: the reference app (bench/_app.py) under uvicorn, four modes in one run.

    .venv/bin/python bench/overhead.py [--rounds 5] [--seconds 4] [--concurrency 8] [--memory-requests 20000]

Every process is separate: the upstream (bench/_upstream.py), one uvicorn server per
mode (bare, otel, record, replay) and the load generator (bench/_load.py, started anew
for each measurement). All four servers run for the whole benchmark; measurements are
interleaved: each round measures every (mode, route) once, in an order that rotates
from round to round, so drift in the machine's speed is spread over all modes.

Then three checks on the record mode: which threads touch the cassette directory
(``strace -f -y`` on the server: none may be the event loop's, the request path);
peak RSS of each server; and RSS sampled across ``--memory-requests`` recorded requests
on a fresh server (flat: the largest sample within 10% of the first, after a warm-up).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _peer import PEER, peer_python
from _proc import children_cpu

BENCH = Path(__file__).resolve().parent
MODES = ("bare", "otel", "record", "replay", "peer")
RECORDING = ("record", "peer")  # the modes that write a cassette per request
ROUTES = ("/dep", "/plain")
_STRACE_CALLS = "openat,write,pwrite64,fsync,fdatasync,link,linkat,rename,renameat,renameat2,unlink,unlinkat,mkdir,mkdirat"


@dataclass
class Server:
    """A uvicorn process serving on 127.0.0.1; ``served`` counts the 200 responses the benchmark got from it."""

    name: str
    url: str
    process: subprocess.Popen
    served: int = 0

    def memory_kib(self, field_name: str) -> int:
        """``VmRSS`` (now) or ``VmHWM`` (peak) of the process plus its child processes (the cassette writer), in KiB."""
        return sum(
            _status_kib(pid, field_name)
            for pid in (self.process.pid, *children_cpu(self.process.pid))
        )


def _status_kib(pid: int, field_name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field_name}:"):
            return int(line.split()[1])
    raise RuntimeError(f"{field_name} not found for pid {pid}")


@contextlib.contextmanager
def uvicorn_server(
    name: str,
    target: str,
    env: dict[str, str],
    log: Path,
    factory: bool = True,
    python: str = sys.executable,
) -> Iterator[Server]:
    """``TARGET`` served by uvicorn (bench/_serve.py) on a socket bound here; stopped by SIGTERM (a clean shutdown) after the block."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1024)
        command = [
            python,
            str(BENCH / "_serve.py"),
            target,
            str(sock.fileno()),
            *(["--factory"] if factory else []),
        ]
        with open(log, "ab") as output:
            process = subprocess.Popen(
                command, env=env, pass_fds=[sock.fileno()], stdout=output, stderr=output
            )
        server = Server(name, f"http://127.0.0.1:{sock.getsockname()[1]}", process)
    try:
        yield server
    finally:
        process.terminate()
        process.wait(60)


def load(
    server: Server,
    route: str,
    concurrency: int,
    seconds: float | None = None,
    requests: int | None = None,
) -> dict[str, Any]:
    """Run the load generator against ``server``; its result (latencies in µs, errors, elapsed seconds)."""
    limit = ["--seconds", str(seconds)] if seconds is not None else ["--requests", str(requests)]
    command = [
        sys.executable,
        str(BENCH / "_load.py"),
        server.url + route,
        "--concurrency",
        str(concurrency),
        *limit,
    ]
    result = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
    server.served += len(result["latencies_us"])
    return result


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(math.ceil(fraction * len(ordered)) - 1, 0)]


def _make_database(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, price REAL NOT NULL)"
        )
        db.executemany(
            "INSERT INTO items VALUES (?, ?, ?)",
            [(i, f"item-{i}", i * 1.25) for i in range(1, 1001)],
        )


def _base_env(upstream: str, database: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIMETRACER_", "OTEL_"))}
    return {**env, "BENCH_UPSTREAM": upstream, "BENCH_SQLITE": str(database)}


@contextlib.contextmanager
def reference_upstream(prefix: str) -> Iterator[tuple[Path, dict[str, str]]]:
    """A temporary directory with the reference app's SQLite database, and its upstream running
    on loopback: (the directory, the environment the app needs besides its mode)."""
    with tempfile.TemporaryDirectory(prefix=prefix) as work:
        workdir = Path(work)
        database = workdir / "items.sqlite"
        _make_database(database)
        with uvicorn_server(
            "upstream", "_upstream:app", dict(os.environ), workdir / "upstream.log", factory=False
        ) as upstream:
            yield workdir, _base_env(upstream.url, database)


def _files(directory: Path, pattern: str = "*.json") -> list[Path]:
    return [p for p in directory.rglob(pattern) if not p.name.startswith(".")]


def _settled(directory: Path, expected: int, timeout: float = 60.0) -> int:
    """Wait (polling) until ``expected`` cassettes exist, or their number stops growing for 2 s; returns it."""
    last, since, deadline = -1, time.monotonic(), time.monotonic() + timeout
    while time.monotonic() < deadline:
        count = len(_files(directory))
        if count >= expected:
            return count
        if count != last:
            last, since = count, time.monotonic()
        elif time.monotonic() - since > 2:
            return count
        time.sleep(0.1)
    return last


def _replay_cassettes(record_dir: Path, replay_dir: Path) -> None:
    """Copy one recorded cassette of each route into ``replay_dir``: the replay server answers from them."""
    replay_dir.mkdir()
    for route in ROUTES:
        recorded = sorted(_files(record_dir, f"GET__{route.strip('/')}__*.json"))
        if not recorded:
            raise RuntimeError(f"no cassette was recorded for {route}")
        shutil.copy(recorded[0], replay_dir / recorded[0].name)


@dataclass
class Series:
    """The measurements of one (mode, route)."""

    latencies_us: list[float] = field(default_factory=list)
    round_medians_us: list[float] = field(default_factory=list)
    round_means_us: list[float] = field(default_factory=list)
    seconds: float = 0.0
    errors: int = 0

    def add(self, result: dict[str, Any]) -> None:
        self.latencies_us += result["latencies_us"]
        self.round_medians_us.append(statistics.median(result["latencies_us"]))
        self.round_means_us.append(statistics.fmean(result["latencies_us"]))
        self.seconds += result["elapsed_s"]
        self.errors += result["errors"]

    def summary(self) -> dict[str, float]:
        medians = self.round_medians_us
        return {
            "requests": len(self.latencies_us),
            "errors": self.errors,
            "median_us": statistics.median(self.latencies_us),
            "mean_us": statistics.fmean(self.latencies_us),
            "p99_us": percentile(self.latencies_us, 0.99),
            "throughput_rps": len(self.latencies_us) / self.seconds,
            "round_spread": (max(medians) - min(medians))
            / statistics.median(medians),  # stability of the rounds
        }


def _interleaved(
    servers: dict[str, Server], rounds: int, seconds: float, concurrency: int
) -> dict[str, dict[str, dict]]:
    """route -> mode -> summary; ``vs_bare`` and ``vs_otel`` are the medians over rounds of the ratio of round
    medians, ``mean_vs_otel`` the same for round means.

    Ratios are taken within a round (the modes were measured minutes apart at most), so a
    change in the machine's load between rounds cancels out.
    """
    configs = [(mode, route) for route in ROUTES for mode in MODES]
    series = {config: Series() for config in configs}
    for index in range(rounds):
        shift = index % len(configs)
        for mode, route in configs[shift:] + configs[:shift]:
            series[(mode, route)].add(load(servers[mode], route, concurrency, seconds=seconds))
    table: dict[str, dict[str, dict]] = {}
    for route in ROUTES:
        table[route] = {mode: series[(mode, route)].summary() for mode in MODES}
        for mode in MODES:
            for base in ("bare", "otel"):
                pairs = zip(
                    series[(mode, route)].round_medians_us,
                    series[(base, route)].round_medians_us,
                    strict=False,
                )
                table[route][mode][f"vs_{base}"] = statistics.median(m / b for m, b in pairs)
            means = zip(
                series[(mode, route)].round_means_us,
                series[("otel", route)].round_means_us,
                strict=False,
            )
            table[route][mode]["mean_vs_otel"] = statistics.median(m / b for m, b in means)
    return table


def _traced_threads(pid: int, timeout: float = 10.0) -> bool:
    """Wait (polling) until every thread of ``pid`` is traced; False if strace did not attach in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
        if all(_tracer(task) != 0 for task in tasks):
            return True
        time.sleep(0.05)
    return False


def _tracer(task: Path) -> int:
    for line in (task / "status").read_text().splitlines():
        if line.startswith("TracerPid:"):
            return int(line.split()[1])
    return 0


def cassette_io_threads(
    server: Server, cassette_dir: Path, workdir: Path, concurrency: int, requests: int = 1000
) -> dict[str, Any]:
    """Which threads of the record server, and of its writer process, make file system calls on the cassette directory (strace -f -y).

    The event loop, which runs every request, is the server process's main thread (tid = pid).
    """
    if shutil.which("strace") is None:
        return {"checked": False, "reason": "strace is not installed"}
    log = workdir / "strace.log"
    before = len(_files(cassette_dir))
    # the server and its writer process
    traced = [
        str(server.process.pid),
        *map(str, children_cpu(server.process.pid)),
    ]
    tracer = subprocess.Popen(["strace", "-f", "-y", "-qq", "-o", str(log), "-e", f"trace={_STRACE_CALLS}", *[a for p in traced for a in ("-p", p)]],
                              stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        if not _traced_threads(server.process.pid):
            return {
                "checked": False,
                "reason": f"strace could not attach: {tracer.stderr.read() if tracer.poll() is not None else 'timeout'}",
            }
        load(server, "/dep", concurrency, requests=requests)
        written = _settled(cassette_dir, before + requests) - before
    finally:
        tracer.terminate()
        tracer.wait(30)
    by_thread: dict[int, int] = {}
    # A file descriptor (-y) or a path argument in the directory; not the console line written to the server's log.
    touched = (f"<{cassette_dir}/", f'"{cassette_dir}/')
    for line in log.read_text(errors="replace").splitlines():
        if any(mark in line for mark in touched):
            tid = int(line.split(None, 1)[0])
            by_thread[tid] = by_thread.get(tid, 0) + 1
    pid = server.process.pid
    return {
        "checked": True,
        "requests": requests,
        "cassettes_written": written,
        "calls_on_request_thread": by_thread.get(pid, 0),
        "calls_by_other_threads": {str(tid): n for tid, n in by_thread.items() if tid != pid},
    }


def memory_flat(
    env: dict[str, str], workdir: Path, concurrency: int, requests: int, batch: int = 1000
) -> dict[str, Any]:
    """RSS of a fresh record server, sampled every ``batch`` requests across ``requests`` (after a warm-up of 2,000)."""
    cassettes = workdir / "memory-cassettes"
    record_env = {
        **env,
        "BENCH_MODE": "record",
        "TIMETRACER_MODE": "record",
        "TIMETRACER_DIR": str(cassettes),
    }
    with uvicorn_server(
        "record-memory", "_app:create_app", record_env, workdir / "memory.log"
    ) as server:
        load(server, "/dep", concurrency, requests=2000)
        samples = [server.memory_kib("VmRSS")]
        for _ in range(requests // batch):
            load(server, "/dep", concurrency, requests=batch)
            samples.append(server.memory_kib("VmRSS"))
        served = server.served
    written = len(_files(cassettes))  # after the server's clean shutdown, which flushes the writer
    return {
        "requests": requests,
        "samples_kib": samples,
        "growth": max(samples) / samples[0] - 1,
        "served": served,
        "cassettes": written,
    }


def _mode_settings(mode: str, workdir: Path, replay_dir: Path) -> dict[str, str]:
    if mode in RECORDING:
        return {"TIMETRACER_MODE": "record", "TIMETRACER_DIR": str(workdir / mode)}
    if mode == "replay":
        return {"TIMETRACER_MODE": "replay", "TIMETRACER_CASSETTE": str(replay_dir)}
    return {}


def _warm(server: Server, concurrency: int, **limit: float) -> None:
    for route in ROUTES:
        load(server, route, concurrency, **limit)


def _bytes_per_request(cassette_dir: Path) -> dict[str, float]:
    out = {}
    for route in ROUTES:
        files = _files(cassette_dir, f"GET__{route.strip('/')}__*.json")
        out[route] = sum(p.stat().st_size for p in files) / max(len(files), 1)
    return out


def measure(rounds: int, seconds: float, concurrency: int, memory_requests: int) -> dict[str, Any]:
    """Run the whole overhead benchmark; the results as a dict (see :func:`report`)."""
    workdir = Path(tempfile.mkdtemp(prefix="timetracer-bench-"))
    try:
        database = workdir / "items.db"
        _make_database(database)
        record_dir, replay_dir = workdir / "record", workdir / "replay"
        with uvicorn_server(
            "upstream", "_upstream:app", dict(os.environ), workdir / "upstream.log", factory=False
        ) as upstream:
            env = _base_env(upstream.url, database)
            with contextlib.ExitStack() as stack:
                servers: dict[str, Server] = {}
                for mode in MODES:
                    if mode == "replay":  # it answers from cassettes the record server wrote
                        _warm(servers["record"], concurrency, requests=200)
                        _settled(record_dir, servers["record"].served)
                        _replay_cassettes(record_dir, replay_dir)
                    mode_env = {
                        **env,
                        "BENCH_MODE": mode,
                        **_mode_settings(mode, workdir, replay_dir),
                    }
                    python = peer_python() if mode == "peer" else sys.executable
                    servers[mode] = stack.enter_context(
                        uvicorn_server(
                            mode,
                            "_app:create_app",
                            mode_env,
                            workdir / f"{mode}.log",
                            python=python,
                        )
                    )
                for server in servers.values():  # warm-up: imports, connection pools, caches
                    _warm(server, concurrency, seconds=1)
                table = _interleaved(servers, rounds, seconds, concurrency)
                io_check = cassette_io_threads(servers["record"], record_dir, workdir, concurrency)
                peak_rss = {mode: servers[mode].memory_kib("VmHWM") for mode in MODES}
                served = {mode: servers[mode].served for mode in RECORDING}
            # the servers have shut down cleanly: the record server flushed its writer
            recorded = {mode: len(_files(workdir / mode)) for mode in RECORDING}
            bytes_per_request = _bytes_per_request(record_dir)
            for (
                mode
            ) in RECORDING:  # tens of thousands of files: free the space before the memory run
                shutil.rmtree(workdir / mode, ignore_errors=True)
            memory = memory_flat(env, workdir, concurrency, memory_requests)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return {
        "settings": {"rounds": rounds, "seconds": seconds, "concurrency": concurrency},
        "latency": table,
        "peak_rss_kib": peak_rss,
        "cassette_bytes_per_request": bytes_per_request,
        "served": served,
        "cassettes": recorded,
        "cassette_io": io_check,
        "memory": memory,
    }


def report(results: dict[str, Any]) -> list[str]:
    """The results as text lines: the latency table, then the checks."""
    lines = [
        "route   mode     requests  median µs   mean µs   p99 µs   req/s   median×bare  median×otel  mean×otel  p99×bare  round spread"
    ]
    for route, modes in results["latency"].items():
        bare = modes["bare"]
        for mode, row in modes.items():
            lines.append(
                f"{route:<7} {mode:<7} {row['requests']:>9}  {row['median_us']:>9.0f} {row['mean_us']:>9.0f} {row['p99_us']:>8.0f}"
                f" {row['throughput_rps']:>7.0f}   {row['vs_bare']:>10.2f} {row['vs_otel']:>12.2f} {row['mean_vs_otel']:>10.2f}"
                f" {row['p99_us'] / bare['p99_us']:>9.2f}  {row['round_spread']:>11.1%}"
                + (f"  ({row['errors']} errors)" if row["errors"] else "")
            )
    lines.append(
        "(median×: the median over rounds of the ratio of round medians; round spread: (max - min) / median of round medians)"
    )
    rss = ", ".join(f"{mode} {kib / 1024:.1f}" for mode, kib in results["peak_rss_kib"].items())
    lines.append(f"peak RSS (MiB): {rss}")
    per_request = ", ".join(
        f"{route} {size:,.0f}" for route, size in results["cassette_bytes_per_request"].items()
    )
    lines.append(f"cassette bytes per request: {per_request}")
    for mode in RECORDING:
        lines.append(
            f"{mode} server: {results['cassettes'][mode]:,} cassettes for {results['served'][mode]:,} requests"
        )
    lines += added_costs(results)
    io = results["cassette_io"]
    if io["checked"]:
        lines.append(
            f"cassette I/O (strace, {io['requests']} requests, {io['cassettes_written']} cassettes): "
            f"{io['calls_on_request_thread']} calls on the event-loop thread, by the writer {io['calls_by_other_threads']}"
        )
    else:
        lines.append(f"cassette I/O: not checked ({io['reason']})")
    memory = results["memory"]
    samples = memory["samples_kib"]
    lines.append(
        f"RSS across {memory['requests']:,} recorded requests: {samples[0] / 1024:.1f} -> max {max(samples) / 1024:.1f} "
        f"-> last {samples[-1] / 1024:.1f} MiB (growth {memory['growth']:+.1%}; {memory['cassettes']:,} cassettes for {memory['served']:,} requests)"
    )
    return lines


def _added(results: dict[str, Any], route: str, mode: str, base: str, p99: bool = False) -> float:
    """What ``mode`` adds over ``base`` on ``route``: the median over rounds of round-median ratios,
    minus one; ``p99``: the ratio of the whole run's 99th percentiles instead."""
    rows = results["latency"][route]
    if p99:
        return rows[mode]["p99_us"] / rows[base]["p99_us"] - 1
    return rows[mode][f"vs_{base}"] - 1


def added_costs(results: dict[str, Any]) -> list[str]:
    """Each instrumented mode's added latency over the uninstrumented app and over plain OTel."""
    lines = [
        "added cost     route   over bare: median    p99   over otel: median    p99   recorded",
    ]
    for route in ROUTES:
        for mode in ("otel", "record", "replay", "peer"):
            recorded = (
                f"{results['cassettes'][mode]:,} of {results['served'][mode]:,}"
                if mode in RECORDING
                else ""
            )
            over_otel = (
                f"{_added(results, route, mode, 'otel'):>+14.1%} {_added(results, route, mode, 'otel', True):>+7.1%}"
                if mode != "otel"
                else f"{'':>14} {'':>7}"
            )
            lines.append(
                f"{mode:<14} {route:<7} {_added(results, route, mode, 'bare'):>+17.1%} {_added(results, route, mode, 'bare', True):>+7.1%}"
                f"{over_otel}   {recorded}"
            )
    lines.append(
        f"(peer: the {PEER} PyPI package's Starlette auto_setup on the same app, without OpenTelemetry)"
    )
    return lines


def targets(results: dict[str, Any]) -> list[tuple[str, bool, str]]:
    """(target, met, evidence) for the targets this benchmark checks."""
    dep = results["latency"]["/dep"]
    record_over_otel = dep["record"]["vs_otel"] - 1
    io = results["cassette_io"]
    growth = results["memory"]["growth"]
    checks = []
    for route in ROUTES:
        own = _added(results, route, "record", "otel")
        peer = _added(results, route, "peer", "bare")
        total = _added(results, route, "record", "bare")
        checks += [
            (
                f"timetracer's own share (record over otel) <= 25% of what {PEER} adds ({route} median)",
                own <= 0.25 * peer,
                f"{own:+.1%} against {peer:+.1%} (limit {0.25 * peer:+.1%})",
            ),
            (
                f"record in all (otel + timetracer) adds no more than {PEER} ({route} median)",
                total <= peer,
                f"{total:+.1%} against {peer:+.1%}",
            ),
        ]
    replay_plain = results["latency"]["/plain"]["replay"]["vs_otel"]
    checks.append(
        (
            "replay of /plain costs <= 1.1x plain OTel (median)",
            replay_plain <= 1.1,
            f"x{replay_plain:.2f}",
        )
    )
    every = all(results["cassettes"][m] >= results["served"][m] for m in ("record",))
    checks.append(
        (
            "every request recorded (record server)",
            every,
            f"{results['cassettes']['record']:,} cassettes for {results['served']['record']:,} requests",
        )
    )
    return checks + [
        (
            "record adds <= 20% over plain OTel (/dep median)",
            record_over_otel <= 0.20,
            f"{record_over_otel:+.1%}",
        ),
        (
            "no cassette I/O on the request path",
            io["checked"]
            and io["calls_on_request_thread"] == 0
            and bool(io["calls_by_other_threads"]),
            f"{io.get('calls_on_request_thread')} on the event loop, {sum(io.get('calls_by_other_threads', {}).values())} on the writer"
            if io["checked"]
            else io["reason"],
        ),
        ("memory flat (within 10%) across recorded requests", growth <= 0.10, f"{growth:+.1%}"),
        (
            "replay of /dep faster than live (same OTel instrumentation, real dependencies; mean latency)",
            dep["replay"]["mean_vs_otel"] < 1,
            f"mean x{dep['replay']['mean_vs_otel']:.2f} of otel (median x{dep['replay']['vs_otel']:.2f});"
            f" median x{dep['replay']['vs_bare']:.2f} of the uninstrumented app",
        ),
    ]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=float, default=4.0, help="per (mode, route) and round")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--memory-requests", type=int, default=20_000)
    return p


def main() -> None:
    args = parser().parse_args()
    results = measure(args.rounds, args.seconds, args.concurrency, args.memory_requests)
    print("\n".join(report(results)))
    for name, met, evidence in targets(results):
        print(f"{'PASS' if met else 'FAIL'}  {name}: {evidence}")


if __name__ == "__main__":
    main()
