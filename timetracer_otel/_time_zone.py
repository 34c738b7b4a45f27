"""The time zone a process runs in: kept in its process cassette, and taken up by a process
replaying it, so naive local times (``datetime.now()``, ``fromtimestamp()``, ``time.localtime()``)
come out as recorded on a machine set to another zone (a laptop's recording replayed in CI)."""

from __future__ import annotations

import functools
import os
import re
import time
import zoneinfo
from pathlib import Path
from typing import Any

__all__ = ["current", "replay_in"]

_LOCALTIME = "/etc/localtime"
_ZONEINFO = "/zoneinfo/"
# an IANA name (Europe/Paris, Etc/GMT+5, UTC): never a path or a POSIX rule from a hostile file
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_+\-]{0,40}(?:/[A-Za-z0-9_+\-]{1,40}){0,3}")


def current() -> str | None:
    """The zone this process's local time is in: ``TZ`` where it is set, else the name
    ``/etc/localtime`` links to; None where neither says."""
    return os.environ.get("TZ") or _system_zone()


@functools.cache  # a file system call: once per process (each cassette asks)
def _system_zone() -> str | None:
    target = os.path.realpath(_LOCALTIME)
    return target.split(_ZONEINFO, 1)[1] if _ZONEINFO in target else None


def replay_in(zone: Any) -> str | None:
    """Make ``zone`` (a recording's) this process's local time zone, unless it is already or is
    not a zone this machine knows by an IANA name; the zone it replaced when it did ("" for one
    with no name), else None."""
    if not isinstance(zone, str) or not _NAME.fullmatch(zone):
        return None
    before = current()
    if zone == before or not _known(zone) or _same_rules(zone, before):
        return None
    os.environ["TZ"] = zone
    time.tzset()
    return before or ""


def _known(zone: str) -> bool:
    try:
        zoneinfo.ZoneInfo(zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


@functools.cache  # asked for each request replayed, until the zone is taken up
def _same_rules(zone: str, other: str | None) -> bool:
    """Whether two names stand for one zone's rules (``UTC`` and ``Etc/UTC``): nothing to take up."""
    if other is None or not _NAME.fullmatch(other):
        return False
    rules = [_rules(zone), _rules(other)]
    return rules[0] is not None and rules[0] == rules[1]


def _rules(name: str) -> bytes | None:
    """The zone file of ``name`` where this machine keeps zones (zoneinfo's search path)."""
    for root in zoneinfo.TZPATH:
        path = Path(root, name)
        if path.is_file():
            return path.read_bytes()
    return None
