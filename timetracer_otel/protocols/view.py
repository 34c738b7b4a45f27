"""What matching compares of a call, whichever protocol it speaks."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CallView", "cut_label", "is_loopback", "server_view"]

_MAX_LABEL = 200


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


def cut_label(text: str) -> str:
    """A call's label, cut to what a message shows of it."""
    return text if len(text) <= _MAX_LABEL else text[: _MAX_LABEL - 3] + "..."


def server_view(
    protocol: str, server: str, what: str, key: tuple[Any, ...], fields: dict[str, Any]
) -> CallView:
    """The view of a call of ``protocol`` to ``server`` (``host:port``): labelled
    ``PROTOCOL server what``, its signature ``key`` under the protocol and the server, and for a
    loopback server its port apart (a stub server listening on another port each run)."""
    host, _, port = server.rpartition(":")
    return CallView(
        protocol=protocol,
        label=cut_label(f"{protocol.upper()} {server} {what}"),
        key=(protocol, server, *key),
        fields={"server": server, **fields},
        loopback=(int(port), (protocol, host, *key))
        if port.isdecimal() and len(port) <= 5 and is_loopback(host)
        else None,
    )
