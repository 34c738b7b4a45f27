"""Importing what the user names on the command line as ``module:attribute`` (as uvicorn does)."""

from __future__ import annotations

import importlib
import os
import sys
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
    found: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise ValueError(f"module {module_name!r} has no attribute {attribute!r}") from None
    return found
