"""The writer process's work per cassette in instructions, counted by valgrind's callgrind.

    .venv/bin/python bench/writer_instructions.py [--cassettes 1000]

bench/writer_cpu.py times the writer process; on a shared VM its figures move by 2-5x
from one day to the next (creating a file alone cost 23 µs of system time one day and
370 µs another). This counts the instructions the writer executes in user space for real
``/dep`` and ``/plain`` recordings of the reference app (bench/_app.py): the same for the
same code on any day, so a change to the writer can be judged on a busy machine. The
kernel's share (file creation, the pipe) is not counted: writer_cpu.py shows it.

The recordings are made as writer_cpu.py makes them and framed as the application hands
them over; a child process under ``valgrind --tool=callgrind --instr-atstart=no`` decodes
them all, handles ``--warm-up`` of them uncounted (imports, first cassettes, the key),
then switches counting on (``callgrind_control``) and handles the rest as the writer
process does (``_writer_main._Writer``: build, redact and seal, serialise, store, the
console line), with the garbage collector off so where its collections fall does not move
the figure.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import os
import pickle
import tempfile
import time
from pathlib import Path

from _callgrind import count_from_here, counted
from overhead import reference_upstream
from writer_cpu import ROUTES, _recordings

_WARM_UP = 100


def _count(frames_file: Path) -> None:
    """In the counted process: handle the frames in ``frames_file``, counting all but the warm-up."""
    from timetracer_otel.exporters._frames import unframe
    from timetracer_otel.exporters._writer_main import _Writer

    config_frame, records = pickle.loads(frames_file.read_bytes())
    writer = _Writer(open(os.devnull, "wb"))  # noqa: SIM115 - lives as long as the run
    messages = [unframe(data) for data in (config_frame, *records)]
    for index, message in enumerate(messages):
        if index == _WARM_UP + 1:  # the config message first
            gc.collect()
            gc.disable()
            count_from_here()
        writer.handle(message)
        if writer.report_due() == 0:
            writer.report()
    os._exit(0)  # nothing after the cassettes is counted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cassettes", type=int, default=1000)
    parser.add_argument("--count", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.count:
        _count(args.count)
        return
    from timetracer_otel.exporters._frames import frame
    from timetracer_otel.exporters._messages import ConfigMessage, RecordMessage
    from timetracer_otel.exporters.frozen import freeze
    from timetracer_otel.exporters.process_writer import _shipped

    with reference_upstream("timetracer-bench-writer-instructions-") as (workdir, env):
        time.sleep(1.0)  # uvicorn binds at once (inherited socket); this lets it start accepting
        made = _recordings(args.cassettes + _WARM_UP, env, str(workdir / "cassettes"))
        for route in ROUTES:
            recordings = made[route]
            config = dataclasses.replace(
                recordings[0].config, cassette_dir=tempfile.mkdtemp(dir=workdir)
            )
            config_frame = frame(ConfigMessage(0, _shipped(config), dict(os.environ)))
            records = [frame(RecordMessage(0, freeze(r)), encode_foreign=True) for r in recordings]
            frames_file = workdir / f"frames{route.replace('/', '_')}.pickle"
            frames_file.write_bytes(pickle.dumps((config_frame, records)))
            total = counted(
                [__file__, "--count", str(frames_file)],
                dict(os.environ),
                workdir / f"callgrind{route.replace('/', '_')}.out",
            )
            size = sum(map(len, records)) / len(records)
            print(f"{route:<7} {total / args.cassettes / 1e3:7.0f} K instructions per cassette"
                  f" ({size:,.0f} bytes handed over each)", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
