"""The ``timetracer`` command: list, show, diff, search, replay, export and import cassettes, and serve the dashboard."""

from __future__ import annotations

import sys

from ._credentials import RedactedRequest

__all__ = ["RedactedRequest", "main"]


def main() -> None:
    """Entry point of the ``timetracer`` console script."""
    try:
        from ._commands import cli
    except ImportError as exc:  # click or rich missing: say which extra brings them
        sys.exit(
            f"timetracer: the command needs the 'cli' extra: pip install 'timetracer-otel[cli]' ({exc})"
        )
    cli(prog_name="timetracer")
