"""The distribution holds the whole package: every subpackage of the source tree is declared."""

from __future__ import annotations

import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pytest brings tomli where tomllib is missing
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent


def test_every_subpackage_of_the_source_tree_is_in_the_distribution() -> None:
    """setuptools installs the packages pyproject.toml lists, no others: one left out imports in
    a checkout and fails for everyone who installs the wheel (the pytest plugin did)."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["tool"]["setuptools"]
    declared = set(setuptools["packages"])
    mapped = {ROOT / path: name for name, path in setuptools["package-dir"].items()}
    found = {
        mapped.get(init.parent) or ".".join(init.parent.relative_to(ROOT).parts)
        for root in (ROOT / "timetracer_otel", *mapped)
        for init in root.rglob("__init__.py")
    }
    assert found == declared
