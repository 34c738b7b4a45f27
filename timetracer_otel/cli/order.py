"""The order ``timetracer replay`` sends recorded requests in.

The recording's by default. Another order, or each request in a process of its own
(``--alone``), shows what a request takes from those sent before it: state an earlier
request left in the app's memory, which no cassette holds. The shuffled order is made from
the seed and the cassettes' paths alone, not with :mod:`random`, whose draws replay may
answer for the app: the same seed gives the same order on any machine.
"""

from __future__ import annotations

import hashlib
import os

__all__ = ["ORDERS", "in_order", "new_seed"]

ORDERS = ("recorded", "reversed", "shuffled")


def in_order(paths: list[str], order: str, seed: int) -> list[str]:
    """``paths``, in recording order, put in ``order`` (one of :data:`ORDERS`)."""
    if order == "reversed":
        return paths[::-1]
    if order == "shuffled":
        return sorted(paths, key=lambda path: hashlib.sha256(f"{seed}:{path}".encode()).digest())
    return list(paths)


def new_seed() -> int:
    """A seed for a shuffled order, printed so the same order can be asked for again."""
    return int.from_bytes(os.urandom(3), "big")
