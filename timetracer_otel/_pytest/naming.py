"""Where a test's or a fixture's cassette lives: a path derived from pytest node ids.

``tests/api/test_users.py::TestMe::test_update[alice-1]`` becomes
``<dir>/tests/api/test_users/TestMe/test_update[alice-1].json``: each part of the node id a
directory, readable, and safe on every file system (Windows included). A part that had to
change to be safe, or that is too long, ends with a short hash of the original, so two
ids never share a cassette. Two files pytest gives the same node id (test files outside the
rootdir, ``plugins/a/tests/test_api.py`` and ``plugins/b/tests/test_api.py``, are both
``test_api.py``) are told apart by their paths (:class:`NodeNames`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any

__all__ = [
    "NodeNames",
    "safe_part",
    "cassette_of_test",
    "cassette_of_fixture",
    "cassettes_of_module",
    "FIXTURES_DIR",
]

FIXTURES_DIR = "@fixtures"  # beside a scope's tests: the cassettes of the fixtures of that scope
_MAX_PART_BYTES = (
    120  # a file name stays far below every file system's 255 bytes, suffixes included
)
# Forbidden in file names on Windows or anywhere, and control characters.
_UNSAFE = re.compile(r'[\x00-\x1f\x7f<>:"/\\|?*]')
_RESERVED = re.compile(r"^(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?$", re.IGNORECASE)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]


def safe_part(text: str) -> str:
    """``text`` as one path component: unchanged when it is safe, else cleaned and tagged with a hash of it."""
    cleaned = _UNSAFE.sub("_", text).rstrip(". ") or "_"
    if _RESERVED.match(cleaned):
        cleaned = "_" + cleaned
    if cleaned == text and len(text.encode("utf-8", "surrogatepass")) <= _MAX_PART_BYTES:
        return text
    encoded = cleaned.encode("utf-8", "surrogatepass")[:_MAX_PART_BYTES]
    return f"{encoded.decode('utf-8', 'ignore')}-{_digest(text)}"


def _node_parts(nodeid: str) -> list[str]:
    """``path/to/test_x.py::Class::test`` as safe parts: the module path without ``.py``, then each name."""
    module, *names = nodeid.split("::")
    parts = list(PurePosixPath(module).parts) if module else []
    if parts and parts[-1].endswith(".py"):
        parts[-1] = parts[-1][: -len(".py")]
    return [safe_part(part) for part in parts + names if part not in ("", ".", "..")]


def cassette_of_test(directory: Path, nodeid: str) -> Path:
    """The cassette of the test ``nodeid``."""
    parts = _node_parts(nodeid)
    return directory.joinpath(*parts[:-1], f"{parts[-1]}.json")


def cassette_of_fixture(
    directory: Path, scope_nodeid: str, fixture: str, param: Any = None
) -> Path:
    """The cassette of one instance of a fixture whose scope is the node ``scope_nodeid`` ("" for the session)."""
    name = fixture if param is None else f"{fixture}[{param}]"
    return directory.joinpath(*_node_parts(scope_nodeid), FIXTURES_DIR, f"{safe_part(name)}.json")


def cassettes_of_module(directory: Path, nodeid: str) -> Path:
    """The directory holding the cassettes of the tests of ``nodeid``'s module."""
    return directory.joinpath(*_node_parts(nodeid.split("::")[0]))


class NodeNames:
    """The id a node's cassettes are named by: its node id, unless pytest gave the same id to
    another file or directory (collected from outside the rootdir), whose tests would then
    replay this one's cassettes; then its path from the rootdir takes the place of that part."""

    def __init__(self, rootpath: Path) -> None:
        self._root = rootpath
        self._shared: frozenset[str] = frozenset()

    def learn(self, items: Iterable[Any]) -> None:
        """Find the node ids of ``items``' files and directories that stand for several paths."""
        paths: dict[str, set[Path]] = {}
        for item in items:
            for node in item.listchain():
                if "::" not in node.nodeid and node.nodeid:
                    paths.setdefault(node.nodeid, set()).add(Path(node.path))
        self._shared = frozenset(nodeid for nodeid, found in paths.items() if len(found) > 1)

    def of(self, node: Any) -> str:
        """The id ``node``'s cassettes are named by."""
        where, separator, rest = node.nodeid.partition("::")
        if where not in self._shared:
            return str(node.nodeid)
        path = PurePosixPath(Path(os.path.relpath(node.path, self._root)).as_posix())
        return f"{path}{separator}{rest}"


def shown(path: str | Path) -> str:
    """``path`` relative to the working directory when it is below it."""
    with contextlib.suppress(ValueError):
        return str(Path(path).relative_to(Path.cwd()))
    return str(path)
