"""The one error every cassette reader raises for a file it cannot use."""

from __future__ import annotations

import os

__all__ = ["CassetteError"]


class CassetteError(Exception):
    """A cassette file that cannot be used: missing, unreadable, too large, not JSON, or not a usable cassette.

    ``path`` is the file (or URL), ``problem`` what is wrong with it, naming the field when one is.
    """

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"timetracer: cannot use cassette {self.path}: {problem}")
