"""Random values drawn while pytest imports and collects the suite: the same in every run.

A test module that parametrizes with ``random_string()``, or a conftest (or the app it
imports) that makes a signing key with ``secrets.token_hex()`` at import, draws its values
before any test's cassette is active. Real, they would be new in every run: a replayed test
would send values its cassette never saw (a token signed with another key), a parametrized
test would get another id and so no cassette, and pytest-xdist's workers would collect
different tests. While the suite is imported and collected, random values, UUIDs and
``os.urandom`` bytes come from generators seeded by the project file being imported and the
module that draws, so every run, and every worker, draws the same ones, whatever else it
collects.

The clock (test data stamped ``datetime.now()`` as its module is imported, a token's
expiry computed there) reads the run's collection instant: the time the recording run
started, kept in the cassette directory (:data:`COLLECTION_CASSETTE`) and read back by the
runs that replay, given to pytest-xdist's workers by their controller. Each stream (the
project file imported and the module that reads the clock) moves on by a millisecond a
read, so a deadline computed at import still passes.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from timetracer_otel.cassette.document import (
    BLOCK_METHOD,
    InboundRequest,
    InboundResponse,
    request_document,
)
from timetracer_otel.cassette.reader import CassetteError, load_cassette
from timetracer_otel.cassette.storage import replace
from timetracer_otel.config import TraceConfig
from timetracer_otel.determinism import DrawRecorder
from timetracer_otel.determinism.state import Fits, Real, Seeded, decode_draws, encode_draws
from timetracer_otel.exporters.files import serialise

__all__ = [
    "COLLECTION_CASSETTE",
    "in_project",
    "recorded_instant",
    "save_instant",
    "seeded_while_collecting",
]

COLLECTION_CASSETTE = "@collection.json"  # in the cassette directory: the run's collection instant
_LABEL = "pytest collection"


def in_project(path: Path, root: Path) -> bool:
    """``path`` (resolved) is one of the project's own files below ``root``, not an installed package's."""
    return path.is_relative_to(root) and not {"site-packages", "dist-packages"} & set(path.parts)


class _CollectionDraws(DrawRecorder):
    """Seeded draws and the run's clock, nothing kept: each stream is named by the project file
    whose import (its module-level code, a parametrize list or a class body in it) asked for
    the value, and the module that drew it."""

    def __init__(self, sources: Iterable[str], root: Path, instant_ns: int | None) -> None:
        super().__init__(sources, seed="pytest collection", clock_from=instant_ns)
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
        return self._reproducible(kind, caller, real, seeded)

    def _stream(self, caller: str) -> str:
        return f"{self._importing()}\0{caller}"

    def _importing(self) -> str:
        """The innermost project module being run at its top level, relative to the root."""
        frame = sys._getframe(1)
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


def recorded_instant(directory: Path) -> int | None:
    """The collection instant a recording run kept in ``directory``; None when there is none."""
    path = directory / COLLECTION_CASSETTE
    if not path.exists():
        return None
    try:
        streams = decode_draws(load_cassette(path).get("draws") or []).streams
    except CassetteError:
        return None
    (instant, *_) = streams.get(("time", _LABEL)) or (None,)
    return instant if isinstance(instant, int) else None


def save_instant(directory: Path, instant_ns: int) -> None:
    """Keep the run's collection instant in ``directory`` (whole or not at all), as a cassette
    of its own: readers of the directory take it for what it is, a block with one draw."""
    recorded_at = datetime.fromtimestamp(instant_ns / 1e9, tz=timezone.utc)
    empty = {"size": 0, "encoding": "empty"}
    document = request_document(
        cassette_id=f"{instant_ns & 0xFFFFFFFF:08x}",
        trace_id=f"{instant_ns:032x}"[-32:],
        recorded_at=recorded_at.isoformat().replace("+00:00", "Z"),
        service=None,
        duration_ms=0,
        request=InboundRequest(BLOCK_METHOD, _LABEL, None, "", [], empty, None, {}),
        response=InboundResponse(200, [], empty),
        error=None,
        calls=[],
        draws=encode_draws([("clock", "time", _LABEL, instant_ns, None)]),
        spans=[],
    )
    directory.mkdir(parents=True, exist_ok=True)
    replace(directory / COLLECTION_CASSETTE, serialise(document))


@contextlib.contextmanager
def seeded_while_collecting(root: Path, instant_ns: int | None) -> Iterator[None]:
    """Seed the random values, UUIDs and urandom bytes drawn in this block (pytest importing
    and collecting the project below ``root``, resolved) by where they are drawn, and read the
    clock from ``instant_ns`` (None: the real clock)."""
    from timetracer_otel.determinism import activate, deactivate, install

    sources = TraceConfig(mode="record").draws
    install(sources)
    token = activate(_CollectionDraws(sources, root, instant_ns))
    try:
        yield
    finally:
        deactivate(token)
