"""CPU time of a process's threads, from ``/proc`` (Linux)."""

from __future__ import annotations

import os
from pathlib import Path


def thread_cpu(pid: int) -> dict[int, tuple[float, float]]:
    """Thread id -> (user, system) CPU seconds, for every thread of ``pid``."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        out[int(task.name)] = (int(fields[11]) / tick, int(fields[12]) / tick)
    return out


def children_cpu(pid: int) -> dict[int, tuple[float, float]]:
    """Child pid -> (user, system) CPU seconds of the live child processes of ``pid`` (the cassette writer)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # exited meanwhile
            continue
        if int(fields[1]) == pid:
            out[int(entry.name)] = (int(fields[11]) / tick, int(fields[12]) / tick)
    return out
