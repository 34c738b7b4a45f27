"""The writer process's CPU per cassette, for real ``/dep`` and ``/plain`` recordings.

    .venv/bin/python bench/writer_cpu.py [--cassettes 2000] [--rate 500] [--profile]

The reference app (bench/_app.py, record mode) answers requests in this process through
``httpx.ASGITransport`` (its upstream is a real uvicorn process on loopback); the
recordings it finishes are kept, frozen and framed exactly as the application hands them
over. Then a real writer process (``timetracer_otel.exporters._writer_main``) is fed those
messages through a pipe at ``--rate`` per second, one message per write (as requests
finish), and its CPU time (user + system, from ``wait4``) is divided by the cassettes it
wrote, counted from when it had handled the first 200 to when it reports having handled
them all (start-up, imports and the interpreter's exit left out);
user and system time are shown apart (creating a file costs the kernel more on some file
systems than writing the cassette costs timetracer; the cost of creating a plain file in the
same directory is printed first), and the targets as PASS/FAIL.
``--profile`` also runs the writer's handling of the same messages under cProfile in this
process and prints the top functions.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import dataclasses
import os
import pstats
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from overhead import reference_upstream

ROUTES = ("/dep", "/plain")
TARGETS_US = {"/dep": 150, "/plain": 80}  # writer CPU per cassette (printed, never asserted)


def _recordings(count: int, env: dict[str, str], cassette_dir: str) -> dict[str, list[Any]]:
    """``count`` finished recordings of each route, made by the reference app in record mode."""
    os.environ.update(env)
    os.environ.update({"BENCH_MODE": "record", "TIMETRACER_MODE": "record",
                       "TIMETRACER_DIR": cassette_dir})  # fmt: skip
    import _app
    import httpx
    from opentelemetry import trace

    from timetracer_otel._tracing import cassette_processor

    app = _app.create_app()
    kept: list[Any] = []
    processor = cassette_processor(trace.get_tracer_provider())
    processor.writer.submit = lambda recording: kept.append(recording) or True  # type: ignore[method-assign]

    async def drive(route: str) -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            for _ in range(count):
                assert (await client.get(route)).status_code == 200

    made = {}
    for route in ROUTES:
        asyncio.run(drive(route))
        processor.force_flush(10_000)
        made[route], kept[:] = list(kept), []
    return made


def _messages(recordings: list[Any]) -> list[bytes]:
    """The frames the application sends for ``recordings``, one each, after the config's (config id 0)."""
    from timetracer_otel.exporters._frames import frame
    from timetracer_otel.exporters._messages import RecordMessage
    from timetracer_otel.exporters.frozen import freeze

    return [frame(RecordMessage(0, freeze(r)), encode_foreign=True) for r in recordings]


def _config_frame(config: Any) -> bytes:
    """The config message, with a new cassette directory: every run writes new files."""
    from timetracer_otel.exporters._frames import frame
    from timetracer_otel.exporters._messages import ConfigMessage
    from timetracer_otel.exporters.process_writer import _shipped

    os.makedirs(config.cassette_dir, exist_ok=True)  # nothing was written there: submit was kept
    fresh = dataclasses.replace(config, cassette_dir=tempfile.mkdtemp(dir=config.cassette_dir))
    return frame(ConfigMessage(0, _shipped(fresh), dict(os.environ)))


def _process_cpu(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / os.sysconf("SC_CLK_TCK"), int(fields[12]) / os.sysconf("SC_CLK_TCK")


def _writer_cpu(
    config: Any, records: list[bytes], rate: float, warm_up: int = 200
) -> tuple[float, float]:
    """(user, system) CPU seconds per cassette of a writer process handling ``records`` fed at
    ``rate`` per second, counted from when it has handled ``warm_up`` of them (its start-up and
    imports excluded)."""
    from timetracer_otel.exporters._frames import FrameReader

    profile = (
        ["-m", "cProfile", "-o", os.environ["BENCH_PROFILE_TO"]]
        if "BENCH_PROFILE_TO" in os.environ
        else []
    )
    # as ProcessWriter starts it: recordings gather between reads
    urgent, _never_written = os.pipe()
    process = subprocess.Popen(
        [sys.executable, *profile, "-m", "timetracer_otel.exporters._writer_main", str(urgent)],
        pass_fds=[urgent],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(_config_frame(config) + b"".join(records[:warm_up]))
    process.stdin.flush()
    reports, handled = FrameReader(), 0
    while handled < warm_up:
        handled = max(
            [
                handled,
                *(r.handled for r in reports.feed(os.read(process.stdout.fileno(), 1 << 16))),
            ]
        )
    everything = threading.Event()

    def drain() -> None:
        """Read its reports, so it never waits on them; note when it has handled every record."""
        while data := os.read(process.stdout.fileno(), 1 << 16):
            if any(r.handled >= len(records) for r in reports.feed(data)):
                everything.set()

    drainer = threading.Thread(target=drain)
    drainer.start()
    before = _process_cpu(process.pid)
    started = time.perf_counter()
    for index, message in enumerate(records[warm_up:]):
        delay = started + index / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        process.stdin.write(message)
        process.stdin.flush()
    everything.wait(60)
    after = _process_cpu(
        process.pid
    )  # before it exits: the interpreter's teardown is once per process
    process.stdin.close()
    drainer.join()
    _, status, usage = os.wait4(process.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    exiting = usage.ru_utime + usage.ru_stime - sum(after)
    print(f"  (its exit, once everything was written: {exiting * 1e3:.0f} ms of CPU)")
    written = len(records) - warm_up
    return (after[0] - before[0]) / written, (after[1] - before[1]) / written


def _profile(config: Any, records: list[bytes]) -> None:
    from timetracer_otel.exporters._frames import unframe
    from timetracer_otel.exporters._writer_main import _Writer

    writer = _Writer(open(os.devnull, "wb"))  # noqa: SIM115 - lives as long as the run
    decoded = [unframe(m) for m in (_config_frame(config), *records)]
    profiler = cProfile.Profile()
    profiler.enable()
    for message in decoded:
        writer.handle(message)
        if writer.report_due() == 0:
            writer.report()
    profiler.disable()
    pstats.Stats(profiler).sort_stats(os.environ.get("BENCH_SORT", "cumulative")).print_stats(
        int(os.environ.get("BENCH_TOP", "30"))
    )


def _file_creation_cpu(directory: Path, count: int = 2000) -> float:
    """System CPU seconds this file system takes to create, write and close one small file in
    ``directory`` (the floor under any cassette writer there; it differs tenfold between two
    directories of one disk on some machines)."""
    import resource

    directory.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(dir=directory))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_stime
    for number in range(count):
        descriptor = os.open(folder / f"{number}.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(descriptor, b"x" * 2800)
        os.close(descriptor)
    return (resource.getrusage(resource.RUSAGE_SELF).ru_stime - before) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cassettes", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    with reference_upstream("timetracer-bench-writer-") as (workdir, env):
        # uvicorn binds at once (inherited socket); this lets it start accepting
        time.sleep(1.0)
        made = _recordings(args.cassettes, env, str(workdir / "cassettes"))
        config = made["/dep"][0].config
        framed = {route: _messages(recordings) for route, recordings in made.items()}
        floor = _file_creation_cpu(Path(config.cassette_dir))
        print(
            f"creating a file in {config.cassette_dir}: {floor * 1e6:.0f} µs of system CPU (TMPDIR moves it)"
        )
        for route, records in framed.items():
            user, system = min(
                (_writer_cpu(config, records, args.rate) for _ in range(args.runs)), key=sum
            )
            per = (user + system) * 1e6
            size = sum(map(len, records)) / len(records)
            print(f"{route:<7} {per:7.0f} µs of writer CPU per cassette ({user * 1e6:.0f} user +"
                  f" {system * 1e6:.0f} system; least of {args.runs} runs; {size:,.0f} bytes handed over each)")  # fmt: skip
            target = TARGETS_US[route]
            print(
                f"{'PASS' if per <= target else 'FAIL'}  writer CPU per {route} cassette <= {target} µs: {per:.0f} µs"
            )
            if args.profile:
                _profile(config, records)


if __name__ == "__main__":
    main()
