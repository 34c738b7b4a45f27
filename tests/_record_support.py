"""Helpers shared by the record tests: counters, and scripts run in a fresh Python process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

import timetracer_otel

_TESTS = Path(__file__).parent


def stat(name: str) -> int:
    """One of ``timetracer_otel.stats()``, 0 when it never happened."""
    return timetracer_otel.stats().get(name, 0)


def run_python(script: str, *args: str, cwd: Optional[Path] = None) -> subprocess.CompletedProcess:
    """Run ``script`` in a new interpreter (fresh logging and counters) that can import the test modules."""
    path = os.pathsep.join(filter(None, [str(_TESTS), os.environ.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=25,
    )
