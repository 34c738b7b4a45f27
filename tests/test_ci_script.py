"""`.ci/run` stays in step with the README: CI runs exactly the test command users are told to run."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    """The shell commands of the README's code blocks that come before its first section."""
    intro = (ROOT / "README.md").read_text("utf-8").split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", intro, re.S)]


def test_readme_starts_with_the_example_and_the_test_command() -> None:
    """The first two commands install into .venv, then run the example and pytest respectively."""
    example, tests = _readme_commands()
    assert example.startswith("python3 -m venv .venv && .venv/bin/pip install -e ")
    assert example.endswith(" && .venv/bin/python examples/starlette_example/run.py")
    assert tests.startswith("python3 -m venv .venv && .venv/bin/pip install -e '.[all,test]'")
    assert tests.endswith(" && .venv/bin/python -m pytest")


def test_ci_runs_the_readme_test_command_last_and_unchanged() -> None:
    """The script's last command is the README's test command, so its exit status is pytest's."""
    script = ROOT / ".ci" / "run"
    lines = [line for line in script.read_text("utf-8").splitlines() if line.strip()]
    assert os.access(script, os.X_OK)
    assert lines[0] == "#!/usr/bin/env bash" and "set -euo pipefail" in lines
    assert lines[-1] == _readme_commands()[1]
    subprocess.run(["bash", "-n", str(script)], check=True)
