"""Importing what the user names on the command line as ``module:attribute`` (as uvicorn does)."""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from typing import Any

__all__ = ["import_object"]


def import_object(spec: str, app_dir: str | None = None, what: str = "app") -> Any:
    """The object named ``module:attribute``, importable from ``app_dir`` or the current directory."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(
            f"invalid {what} {spec!r}; use module:attribute, e.g. myservice.main:{attribute or what}"
        )
    path = os.path.abspath(app_dir or ".")
    if path not in sys.path:
        sys.path.insert(0, path)
    try:
        found: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportError(_failed_import(spec, what, path, exc)) from exc
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise ValueError(f"module {module_name!r} has no attribute {attribute!r}") from None
    return found


def _failed_import(spec: str, what: str, path: str, error: ImportError) -> str:
    """Whose import failed: the module named (not found from ``path``), or one the app imports
    (a dependency missing from this environment), with the file and line that imported it."""
    frames = traceback.extract_tb(error.__traceback__)
    inner = [frame for frame in frames if "importlib" not in frame.filename]
    where = f" (imported at {inner[-1].filename}:{inner[-1].lineno})" if inner[1:] else ""
    if not where and error.name and spec.startswith(error.name):
        return f"cannot import the {what} {spec!r} from {path}: {error}"
    return f"importing the {what} {spec!r} failed: {type(error).__name__}: {error}{where}"
