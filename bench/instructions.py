"""Instructions per request, counted by valgrind's callgrind: figures that do not move with the machine's load.

    .venv/bin/python bench/instructions.py [--requests 1000] [--modes otel,record,replay] [--routes /plain,/dep] [--keep DIR]

Modes: ``otel`` (plain OpenTelemetry), ``record``, ``replay``, and two record modes whose
requests are not recorded: ``unsampled`` (``TIMETRACER_SAMPLE_RATE=0``) and ``excluded``
(both routes in ``TIMETRACER_EXCLUDE_PATHS``), which should cost what ``otel`` does.

Timings on a shared VM swing by 2x within the hour; an instruction count is the same for
the same code and inputs whatever else runs. Each mode of the reference app
(bench/_app.py) is driven in-process through ``httpx.ASGITransport``, one request at a
time, in its own process under ``valgrind --tool=callgrind --instr-atstart=no``: imports
and a warm-up run uninstrumented, then counting is switched on (``callgrind_control``)
for ``--requests`` requests. The upstream of ``/dep`` is a real uvicorn process on
loopback; replay answers from one cassette per route recorded first (uninstrumented), as in
bench/overhead.py. Record mode's
writer process is not counted (bench/writer_cpu.py measures it): this is the request path.
The printed ratio is each mode's count over ``otel``'s for the same route. Count a
thousand requests or more: where the garbage collector's collections fall moves a
figure over a hundred by as much as 0.5 M. ``--keep DIR`` keeps each count's callgrind file
(``DIR/<mode><route>.out``) for ``callgrind_annotate --inclusive=yes``: where the instructions go.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
from pathlib import Path

from _callgrind import count_from_here, counted
from overhead import ROUTES, _replay_cassettes, reference_upstream

_WARM_UP = 50


def _drive(route: str, requests: int) -> None:
    """In the counted process: the app for ``BENCH_MODE``, warmed up, then ``requests`` counted requests."""
    import _app
    import httpx

    app = _app.create_app()

    async def run() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            for index in range(_WARM_UP + requests):
                if index == _WARM_UP and counting:
                    count_from_here()
                response = await client.get(route)
                assert response.status_code == 200, response.text
            if counting:
                os._exit(0)  # nothing after the requests is counted: no clean-up, no exit

    counting = os.environ.get("BENCH_COUNT") == "1"
    asyncio.run(run())


def _count(env: dict[str, str], route: str, requests: int, out: Path) -> int:
    """Instructions executed by ``requests`` requests to ``route`` in a process started with ``env``."""
    return counted([__file__, "--drive", route, str(requests)], {**env, "BENCH_COUNT": "1"}, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--modes", default="otel,record,replay")
    parser.add_argument("--routes", default="/plain,/dep")
    parser.add_argument("--keep", type=Path, help="directory to keep the callgrind files in")
    parser.add_argument("--drive", nargs=2, metavar=("ROUTE", "REQUESTS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.drive:
        _drive(args.drive[0], int(args.drive[1]))
        return
    modes, routes = args.modes.split(","), args.routes.split(",")
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    with reference_upstream("timetracer-bench-instructions-") as (workdir, base):
        settings = {
            "otel": {},
            "record": {"TIMETRACER_MODE": "record", "TIMETRACER_DIR": str(workdir / "record")},
            "replay": {"TIMETRACER_MODE": "replay", "TIMETRACER_CASSETTE": str(workdir / "replay")},
            "unsampled": {"BENCH_MODE": "record", "TIMETRACER_MODE": "record",
                          "TIMETRACER_DIR": str(workdir / "unsampled"), "TIMETRACER_SAMPLE_RATE": "0"},
            "excluded": {"BENCH_MODE": "record", "TIMETRACER_MODE": "record",
                         "TIMETRACER_DIR": str(workdir / "excluded"),
                         "TIMETRACER_EXCLUDE_PATHS": ",".join(ROUTES)},
        }  # fmt: skip
        if "replay" in modes:  # one cassette per route to replay, as bench/overhead.py does
            for route in ROUTES:
                subprocess.run(
                    [sys.executable, __file__, "--drive", route, "0"], check=True,
                    env={**base, **settings["record"], "BENCH_MODE": "record"},
                    stderr=subprocess.DEVNULL,
                )  # fmt: skip
            _replay_cassettes(workdir / "record", workdir / "replay")
        counts: dict[tuple[str, str], float] = {}
        for route in routes:
            for mode in modes:
                env = {**base, "BENCH_MODE": mode, **settings[mode]}
                out = (args.keep or workdir) / f"{mode}{route.replace('/', '_')}.out"
                total = _count(env, route, args.requests, out)
                counts[mode, route] = total / args.requests
                ratio = (
                    f"  x{counts[mode, route] / counts['otel', route]:.2f} of otel"
                    if ("otel", route) in counts and mode != "otel"
                    else ""
                )
                print(f"{route:<7} {mode:<7} {counts[mode, route] / 1e6:6.3f} M instructions per request{ratio}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
