"""Instructions counted by valgrind's callgrind: figures that do not move with the machine's load."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def counted(arguments: list[str], env: dict[str, str], out: Path) -> int:
    """Instructions a Python process run with ``arguments`` executed once it called
    :func:`count_from_here` (its imports and warm-up are not counted); the callgrind file is ``out``."""
    subprocess.run(
        ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
         sys.executable, *arguments],
        env={**env, "PYTHONHASHSEED": "0"}, check=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    for line in out.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError(f"no total in {out}")


def count_from_here() -> None:
    """In the counted process: switch counting on."""
    subprocess.run(
        ["callgrind_control", "-i", "on", str(os.getpid())], check=True, stdout=subprocess.DEVNULL
    )
