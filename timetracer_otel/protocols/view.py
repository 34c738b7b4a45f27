"""What matching compares of a call, whichever protocol it speaks."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CallView"]


@dataclass(frozen=True)
class CallView:
    """A call reduced to what matching compares. ``fields`` are shown in mismatch diffs."""

    protocol: str
    label: str  # "GET http://host/path?q=1", for messages
    key: Hashable  # the signature: equal keys answer each other
    fields: dict[str, Any] = field(compare=False)
