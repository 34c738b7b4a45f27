"""timetracer-otel: record ASGI requests with their outgoing calls as cassettes, replay them offline."""

from __future__ import annotations

from ._diagnostics import counters
from .config import TraceConfig

__all__ = ["TraceConfig", "flush", "stats", "__version__"]
__version__ = "0.1.0"


def flush(timeout: float | None = 30.0) -> bool:
    """Write every finished recording to disk now; True if all were written within ``timeout``."""
    from ._tracing import flush_processors

    return flush_processors(timeout)


def stats() -> dict[str, int]:
    """Counters of what timetracer did and dropped: recorded, errors.*, dropped.*, skipped.*."""
    return counters.snapshot()
