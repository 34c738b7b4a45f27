"""Random values drawn while pytest imports and collects the suite: the same in every run.

A test module that parametrizes with ``random_string()``, or a conftest (or the app it
imports) that makes a signing key with ``secrets.token_hex()`` at import, draws its values
before any test's cassette is active. Real, they would be new in every run: a replayed test
would send values its cassette never saw (a token signed with another key), a parametrized
test would get another id and so no cassette, and pytest-xdist's workers would collect
different tests. While the suite is imported and collected, random values, UUIDs and
``os.urandom`` bytes come from generators seeded by the project file being imported and the
module that draws, so every run, and every worker, draws the same ones, whatever else it
collects. The clock stays real.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from timetracer_otel.config import TraceConfig
from timetracer_otel.determinism import DrawRecorder
from timetracer_otel.determinism.state import Fits, Real, Seeded

__all__ = ["in_project", "seeded_while_collecting"]


def in_project(path: Path, root: Path) -> bool:
    """``path`` (resolved) is one of the project's own files below ``root``, not an installed package's."""
    return path.is_relative_to(root) and not {"site-packages", "dist-packages"} & set(path.parts)


class _CollectionDraws(DrawRecorder):
    """Seeded draws, nothing kept: each stream is named by the project file whose import (its
    module-level code, a parametrize list or a class body in it) asked for the value."""

    def __init__(self, sources: Iterable[str], root: Path) -> None:
        super().__init__(sources, seed="pytest collection")
        self._root = root

    def draw(
        self,
        source: str,
        kind: str,
        caller: str,
        real: Real,
        fits: Fits | None = None,
        seeded: Seeded | None = None,
    ) -> Any:
        if seeded is None:  # the clock
            return real()
        return seeded(self._generator(kind, f"{self._importing()}\0{caller}"))

    def _importing(self) -> str:
        """The innermost project module being run at its top level, relative to the root."""
        frame = sys._getframe(2)
        while frame is not None:
            if frame.f_code.co_name == "<module>":
                relative = _project_relative(frame.f_code.co_filename, self._root)
                if relative is not None:
                    return relative
            frame = frame.f_back  # type: ignore[assignment]
        return ""


@functools.lru_cache(maxsize=1024)
def _project_relative(filename: str, root: Path) -> str | None:
    path = Path(filename).resolve()
    return path.relative_to(root).as_posix() if in_project(path, root) else None


@contextlib.contextmanager
def seeded_while_collecting(root: Path) -> Iterator[None]:
    """Seed the random values, UUIDs and urandom bytes drawn in this block (pytest importing
    and collecting the project below ``root``, resolved) by where they are drawn."""
    from timetracer_otel.determinism import activate, deactivate, install

    sources = TraceConfig(mode="record").draws
    install(sources)
    token = activate(_CollectionDraws(sources, root))
    try:
        yield
    finally:
        deactivate(token)
