"""Makes every cassette file written wait ``BENCH_DISK_DELAY_MS`` first, like a slow network volume.

Python imports ``sitecustomize`` at start from its path; the cassette writer process gets
the application's path, so this module slows the disk for the writer process of
``bench/exporter.py`` as well as for its own process. Without the variable it does nothing.
"""

from __future__ import annotations

import os
import time
from typing import Any


def slow_disk(delay: float) -> None:
    """Every cassette file written (by this process) waits ``delay`` seconds first, not holding the GIL."""
    from timetracer_otel.cassette import storage

    real = storage._write_temp

    def write_temp(*args: Any) -> str:
        time.sleep(delay)
        return real(*args)

    storage._write_temp = write_temp  # type: ignore[assignment]


if os.environ.get("BENCH_DISK_DELAY_MS"):
    slow_disk(float(os.environ["BENCH_DISK_DELAY_MS"]) / 1000)
