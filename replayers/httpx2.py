"""httpx2 replay: httpx's transport seam (:mod:`replayers.httpx`) on httpx2's classes."""

from __future__ import annotations

from .httpx import TransportReplay

__all__ = ["install", "uninstall"]

_httpx2 = TransportReplay("httpx2")
install, uninstall = _httpx2.install, _httpx2.uninstall
