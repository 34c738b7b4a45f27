"""What matching compares of a call, whichever protocol it speaks."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CallView", "is_loopback"]


@dataclass(frozen=True)
class CallView:
    """A call reduced to what matching compares. ``fields`` are shown in mismatch diffs.

    ``loopback``: for a call to a service on a loopback address, its port and the signature
    without it. A test's stub server often listens on a port the operating system picks, another
    one each run; replay may answer such a call from the same call made to another port
    (:meth:`replayers.matching.CallIndex.moved`).
    """

    protocol: str
    label: str  # "GET http://host/path?q=1", for messages
    key: Hashable  # the signature: equal keys answer each other
    fields: dict[str, Any] = field(compare=False)
    loopback: tuple[int, Hashable] | None = field(default=None, compare=False)


@functools.lru_cache(maxsize=256)  # a few hosts, asked for every call
def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, an IPv6 one possibly in brackets) is this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
