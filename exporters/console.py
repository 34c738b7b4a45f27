"""The line printed for each recorded request (docs/starlette.md shows it)."""

from __future__ import annotations

import os
from collections import Counter
from functools import lru_cache
from typing import Any

from timetracer_otel._terminal import printable
from timetracer_otel.cassette.document import Cassette
from timetracer_otel.cassette.location import is_url

__all__ = ["record_line", "process_line"]

_MAX_PATH_CHARS = 200


def _printable(text: str) -> str:
    """Control characters escaped (a path may contain %0A or %1B) and the length bounded."""
    shown = printable(text)
    return shown if len(shown) <= _MAX_PATH_CHARS else shown[: _MAX_PATH_CHARS - 3] + "..."


def _deps(cassette: Cassette) -> str:
    kinds = Counter(call.kind for call in cassette.calls)
    return ",".join(f"{kind}:{count}" for kind, count in sorted(kinds.items())) or "none"


@lru_cache(maxsize=256)
def _shown_folder(folder: str, cwd: str) -> str:
    relative = os.path.relpath(folder, cwd)
    return folder if relative.startswith("..") else relative


def _shown_path(path: str) -> str:
    """Relative to the working directory when below it; each folder worked out once."""
    if is_url(path):
        return path
    folder, name = os.path.split(path)
    shown = _shown_folder(folder, os.getcwd())
    return name if shown == "." else os.path.join(shown, name)


def record_line(doc: dict[str, Any], path: str, updated: bool = False) -> str:
    """``timetracer [OK] recorded GET /  id=...  status=200  total=145ms  deps=http.client:1`` and the
    path line; ``updated``: the line again for a cassette that calls or an error made after the
    response were added to."""
    cassette = Cassette(doc)
    request, status = cassette.request, cassette.response.status
    tag = "[OK]" if status < 500 and not cassette.error else "[ERR]"
    return (
        f"timetracer {tag} recorded {_printable(request.method)} {_printable(request.path)}"
        f"  id={cassette.id}  status={status}  total={round(cassette.duration_ms or 0)}ms"
        f"  deps={_deps(cassette)}{'  (updated after the response)' if updated else ''}\n"
        f"  cassette: {_shown_path(path)}"
    )


def process_line(doc: dict[str, Any], path: str) -> str:
    """``timetracer [OK] recorded calls outside requests  id=...  deps=redis.client:2`` and the path line."""
    return (
        f"timetracer [OK] recorded calls outside requests  id={doc['id']}  deps={_deps(Cassette(doc))}\n"
        f"  cassette: {_shown_path(path)}"
    )
