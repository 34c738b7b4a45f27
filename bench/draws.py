"""What recording the app's draws costs per call: clock, UUIDs, randomness.

    .venv/bin/python bench/draws.py [--calls 50000]

Each function is timed (best of five runs of ``--calls`` calls, garbage collector off)
in four states, in this one process: before timetracer intercepts anything
(``unpatched``), intercepting but outside any request (``outside``: what every other
caller in the process pays, OpenTelemetry included), inside a recorded request
(``record``: the value is kept) and inside a replayed request (``replay``: the value
comes from the recording). Nothing here touches the network.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import os
import random
import time
import uuid
from collections.abc import Callable
from typing import Any

from timetracer_otel.config import DRAW_SOURCES
from timetracer_otel.determinism import (
    DrawRecorder,
    DrawReplayer,
    activate,
    deactivate,
    install,
    real_time_ns,
)
from timetracer_otel.determinism.state import (
    MAX_DRAWS_PER_REQUEST,
    RecordedDraws,
    decode_draws,
    encode_draws,
)

FUNCTIONS: dict[
    str, Callable[[], Any]
] = {  # looked up per call, as an app's module-level call does
    "time.time()": lambda: time.time(),
    "time.time_ns()": lambda: time.time_ns(),
    "datetime.now()": lambda: datetime.datetime.now(),
    "uuid.uuid4()": lambda: uuid.uuid4(),
    "random.random()": lambda: random.random(),
    "os.urandom(16)": lambda: os.urandom(16),
}
STATES = ("unpatched", "outside", "record", "replay")
_RUNS = 5


def _best_ns_per_call(
    function: Callable[[], Any], calls: int, state: Callable[[], Any] = lambda: None
) -> float:
    """The fastest of the runs, each with a fresh draw state (``state()``: None, a recorder or a replayer)."""
    best = float("inf")
    for _ in range(_RUNS):
        token = activate(state())
        gc.disable()
        try:
            started = time.perf_counter_ns()
            for _ in range(calls):
                function()
            best = min(best, (time.perf_counter_ns() - started) / calls)
        finally:
            gc.enable()
            deactivate(token)
    return best


def _recorded(function: Callable[[], Any], calls: int) -> RecordedDraws:
    """The draws of one request that called ``function`` as often as a timing run does."""
    recorder = DrawRecorder(DRAW_SOURCES)
    token = activate(recorder)
    try:
        for _ in range(calls):
            function()
    finally:
        deactivate(token)
    return decode_draws(encode_draws(recorder.draws))


def measure(calls: int = 50_000) -> dict[str, dict[str, float]]:
    """Nanoseconds per call: {function: {state: ns}}. ``calls`` at most the draws a request keeps."""
    calls = min(calls, MAX_DRAWS_PER_REQUEST)
    results: dict[str, dict[str, float]] = {name: {} for name in FUNCTIONS}
    for name, function in FUNCTIONS.items():
        results[name]["unpatched"] = _best_ns_per_call(function, calls)
    install(DRAW_SOURCES)
    for name, function in FUNCTIONS.items():
        recorded = _recorded(function, calls)
        results[name]["outside"] = _best_ns_per_call(function, calls)
        results[name]["record"] = _best_ns_per_call(
            function, calls, lambda: DrawRecorder(DRAW_SOURCES)
        )
        results[name]["replay"] = _best_ns_per_call(
            function,
            calls,
            lambda recorded=recorded: DrawReplayer(recorded, DRAW_SOURCES, real_time_ns),
        )
    return results


def report(results: dict[str, dict[str, float]]) -> list[str]:
    lines = [f"{'function':<18}" + "".join(f"{state:>12}" for state in STATES) + "   (ns per call)"]
    for name, by_state in results.items():
        lines.append(f"{name:<18}" + "".join(f"{by_state[state]:>12.0f}" for state in STATES))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=50_000)
    args = parser.parse_args()
    print("\n".join(report(measure(args.calls))))


if __name__ == "__main__":
    main()
