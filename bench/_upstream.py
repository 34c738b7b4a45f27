"""The loopback upstream of the overhead benchmark: a bare ASGI app answering a small JSON document.

Run by uvicorn: ``uvicorn --app-dir bench _upstream:app``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

_BODY = json.dumps({"id": 42, "name": "widget", "tags": ["a", "b"], "price": 9.5}).encode()


async def app(
    scope: dict[str, Any],
    receive: Callable[[], Awaitable[dict]],
    send: Callable[[dict], Awaitable[None]],
) -> None:
    if scope["type"] != "http":
        return
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(_BODY)).encode()),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": _BODY})
