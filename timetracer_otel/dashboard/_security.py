"""What keeps the dashboard safe to open: recorded bodies are untrusted HTML, and the
Replay button runs code, so no page may run script and no other site may drive it."""

from __future__ import annotations

from typing import Any

__all__ = ["SecurityHeaders", "allowed_hosts", "HEADERS"]

# No script at all: the dashboard works with links and forms only, so even a value that
# escaped escaping could not run. Styles and images only from the dashboard itself.
HEADERS = [
    (b"content-security-policy",
     b"default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]  # fmt: skip

_LOOPBACK = ["127.0.0.1", "localhost", "::1", "[::1]"]


def allowed_hosts(bound: str) -> list[str]:
    """Host headers to accept: loopback names and the bound address (a DNS-rebinding page names another host)."""
    if bound in ("0.0.0.0", "::", ""):
        return ["*"]
    return [*_LOOPBACK, bound] if bound not in _LOOPBACK else _LOOPBACK


class SecurityHeaders:
    """ASGI middleware adding :data:`HEADERS` to every HTTP response."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                names = {name for name, _ in HEADERS}
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in names]
                message = {**message, "headers": [*kept, *HEADERS]}
            await send(message)

        await self.app(scope, receive, send_with_headers)
