"""`.ci/run` stays in step with the README: CI runs exactly the test command users are told to run,
and the Pythons the README and the package metadata claim are the ones that command tests."""

from __future__ import annotations

import ast
import contextlib
import os
import re
import subprocess
from importlib.metadata import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _noxfile_literals() -> dict[str, Any]:
    """The names noxfile.py assigns plain literals to (read, not imported: importing it sets up interpreters)."""
    found = {}
    for node in ast.parse((ROOT / "noxfile.py").read_text("utf-8")).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            with contextlib.suppress(ValueError):
                found[ast.unparse(node.targets[0])] = ast.literal_eval(node.value)
    return found


NOX = _noxfile_literals()
PYTHONS = NOX["PYTHONS"]


def _readme_commands() -> list[str]:
    """The shell commands of the README's code blocks that come before its first section."""
    intro = (ROOT / "README.md").read_text("utf-8").split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", intro, re.S)]


def test_readme_starts_with_the_example_and_the_test_command() -> None:
    """The first two commands install into .venv, then run the example and nox respectively."""
    example, tests = _readme_commands()
    assert example.startswith("python3 -m venv .venv && .venv/bin/pip install -e ")
    assert example.endswith(" && .venv/bin/python examples/starlette_example/run.py")
    assert (
        tests == "python3 -m venv .venv && .venv/bin/pip install -e '.[all,test]' && .venv/bin/nox"
    )


def test_ci_runs_the_readme_test_command_last_and_unchanged() -> None:
    """The script's last command is the README's test command, so its exit status is nox's."""
    script = ROOT / ".ci" / "run"
    lines = [line for line in script.read_text("utf-8").splitlines() if line.strip()]
    assert os.access(script, os.X_OK)
    assert lines[0] == "#!/usr/bin/env bash" and "set -euo pipefail" in lines
    assert lines[-1] == _readme_commands()[1]
    subprocess.run(["bash", "-n", str(script)], check=True)


def test_the_supported_pythons_are_the_ones_ci_tests() -> None:
    """The README and the package's metadata (trove classifiers, Requires-Python) name exactly the Pythons nox runs."""
    readme = (ROOT / "README.md").read_text("utf-8")
    claimed = re.search(r"^Supported Pythons: (.+?), the ones CI tests\.", readme, re.M).group(1)
    assert re.split(r", | and ", claimed) == PYTHONS
    installed = metadata("timetracer-otel")
    classifiers = installed.get_all("Classifier")
    assert [
        c.rsplit(" :: ", 1)[1]
        for c in classifiers
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    ] == PYTHONS
    assert installed["Requires-Python"] == f">={PYTHONS[0]}"
    assert NOX["nox.options.sessions"] == ["lint", "tests", "build", "wheel", "summary"]
    assert NOX["FULL_SUITE_PYTHON"] in PYTHONS


def test_the_representative_part_names_test_files_that_exist() -> None:
    """A renamed test file would fail every other Python's session; this names it at once."""
    paths = [entry.split("=", 1)[-1].split("::")[0] for entry in NOX["REPRESENTATIVE"]]
    assert [path for path in paths if not (ROOT / path).is_file()] == []
