"""httpx2 capture: httpx's transport seam (:mod:`timetracer_otel.capture.httpx`) on httpx2's classes."""

from __future__ import annotations

from timetracer_otel.capture.httpx import TransportCapture

__all__ = ["install", "uninstall"]

_httpx2 = TransportCapture("httpx2")
install, uninstall = _httpx2.install, _httpx2.uninstall
