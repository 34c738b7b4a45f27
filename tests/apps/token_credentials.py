"""Credentials hooks for ``timetracer replay --credentials``, as a user would write one: the
token to send for each recorded request whose own cannot be unsealed."""

from __future__ import annotations

import os

from timetracer_otel.cli import RedactedRequest


def bearer_for(request: RedactedRequest) -> dict[str, str] | None:
    """The replay user's token for the authenticated routes; nothing for the others."""
    if request.path not in ("/me", "/boom") or "authorization" not in request.redacted:
        return None
    return {"Authorization": f"Bearer {os.environ['REPLAY_TOKEN']}"}


def broken(request: RedactedRequest) -> dict[str, str]:
    return {"Authorization": f"Bearer {os.environ['NO_SUCH_VARIABLE']}"}
