"""Does a fresh ``pip install '.[all,test]'`` resolve at once on every supported Python?

    .venv/bin/python bench/resolve.py [--python 3.12 ...] [--newest-pip]

For each Python of noxfile.py (pyenv's, as CI finds them), makes a new virtual environment
in a temporary directory and runs ``pip install --dry-run '.[all,test]'`` with the pip that
comes with that Python, as the README's test command does (``--newest-pip`` upgrades pip
first). PASS when pip never backtracked, i.e. never printed "pip is looking at multiple
versions of ..."; FAIL names the packages it backtracked on. A new upstream release can
turn this red without any change here, which is why it is a check to run, not a test.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from noxfile import PYTHONS, interpreter  # noqa: E402 - the repository root is on the path only now

_BACKTRACKED = re.compile(r"pip is (?:still )?looking at multiple versions of (\S+)")
_RESOLVED = re.compile(r"^Would install (.+)$", re.M)


def _check(version: str, newest_pip: bool) -> tuple[bool, str]:
    """(passed, one line saying how it went) for one Python."""
    python = interpreter(version)
    if python is None:
        return False, f"Python {version}: no interpreter found"
    with tempfile.TemporaryDirectory(prefix="timetracer-resolve-") as scratch:
        venv = Path(scratch) / "venv"
        subprocess.run([python, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
        if newest_pip:
            subprocess.run([*pip, "install", "--quiet", "--upgrade", "pip"], check=True)
        pip_version = subprocess.run(
            [*pip, "--version"], check=True, capture_output=True, text=True
        ).stdout.split()[1]
        started = time.perf_counter()
        run = subprocess.run(
            [*pip, "install", "--dry-run", ".[all,test]"], cwd=ROOT, capture_output=True, text=True
        )
        seconds = time.perf_counter() - started
    output = run.stdout + run.stderr
    where = f"Python {version} (pip {pip_version}): "
    if run.returncode != 0:
        return False, where + f"pip failed ({run.returncode}):\n{output[-2000:]}"
    backtracked = sorted(set(_BACKTRACKED.findall(output)))
    resolved = _RESOLVED.search(output)
    opentelemetry = (
        sorted(name for name in resolved.group(1).split() if name.startswith("opentelemetry"))
        if resolved
        else []
    )
    trains = sorted({name.rsplit("-", 1)[1] for name in opentelemetry})
    outcome = f"backtracked on {', '.join(backtracked)}" if backtracked else "no backtracking"
    return (
        not backtracked,
        where
        + f"{outcome}, {seconds:.0f} s, {len(opentelemetry)} OpenTelemetry packages at {' / '.join(trains)}",
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--python", action="append", choices=PYTHONS, help="only this Python (repeatable)"
    )
    parser.add_argument(
        "--newest-pip", action="store_true", help="upgrade pip in each new venv first"
    )
    args = parser.parse_args()
    results = [_check(version, args.newest_pip) for version in args.python or PYTHONS]
    for passed, line in results:
        print(f"{'PASS' if passed else 'FAIL'}  {line}")
    return 0 if all(passed for passed, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
