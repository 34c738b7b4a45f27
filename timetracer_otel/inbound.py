"""The inbound request as ASGI hands it over: its types, and the route template that served it.

Capture records the route template with each request; replay reads it to choose the
cassette of a live request, so both sides take it from here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["ASGIApp", "Message", "Receive", "Scope", "Send", "latin1_headers", "route_template"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def latin1_headers(raw: Any) -> list[tuple[str, str]]:
    """ASGI's header pairs (bytes) as text: HTTP headers are latin-1, so every byte survives."""
    return [(bytes(k).decode("latin-1"), bytes(v).decode("latin-1")) for k, v in raw or ()]


def _route_matches(route: Any, scope: Scope) -> tuple[Any, Scope]:
    """``route.matches(scope)``, also for FastAPI's effective route contexts, which hold a compiled
    path and methods but no ``matches`` (and come with a Starlette that has ``get_route_path``:
    one before 0.35 lacks it, and its routes all have ``matches``)."""
    from starlette.routing import Match

    if hasattr(route, "matches"):
        return route.matches(scope)
    from starlette.routing import get_route_path

    found = route.path_regex.match(get_route_path(scope))
    if found is None:
        return Match.NONE, {}
    methods = getattr(route, "methods", None)
    return (Match.FULL if not methods or scope.get("method") in methods else Match.PARTIAL), {}


def _match_routes(routes: Any, scope: Scope) -> str | None:
    from starlette.routing import Match, Mount

    partial: str | None = None
    for route in routes:
        # FastAPI's included router, kept nested since 0.165
        nested = getattr(route, "effective_candidates", None)
        if callable(nested):
            path = _match_routes(nested(), scope)
            if path is not None:
                return path
            continue
        match, child = _route_matches(route, scope)
        if match == Match.NONE:
            continue
        path = getattr(route, "path", None)
        if isinstance(route, Mount):
            routes = route.routes or _routes_behind(route.app)
            inner = _match_routes(routes, {**scope, **child}) if routes else None
            path = (route.path + inner) if inner else (route.path or "/") + "/{path:path}"
        if match == Match.FULL:
            return path
        partial = partial or path
    return partial


def _routes_behind(app: Any, depth: int = 16) -> list[Any]:
    """The routes of an app mounted behind middleware (``Mount("/api", app=CSRFMiddleware(api))``):
    each middleware keeps the app it wraps as ``.app``."""
    for _ in range(depth):
        routes = getattr(app, "routes", None)
        if isinstance(routes, list) and routes:
            return routes
        app = getattr(app, "app", None)
        if app is None:
            break
    return []


def _fastapi_route(scope: Scope) -> str | None:
    """The template FastAPI routed to, its included routers' prefixes and all: since 0.165 the
    matched route's own ``path`` lacks them (``/items/{id}`` for ``/api/v1/items/{id}``)."""
    state = scope.get("fastapi")
    context = state.get("effective_route_context") if isinstance(state, dict) else None
    path = getattr(context, "path_format", None)
    return path if isinstance(path, str) else None


def route_template(scope: Scope, original_scope: Scope) -> str | None:
    """The route template that served ``scope`` (``/users/{user_id:int}``), if it can be known.

    ``original_scope`` is a copy taken before routing rewrote ``scope``.
    """
    route = scope.get("route")
    # its path lacks the Mount prefix
    mounted = scope.get("root_path") != original_scope.get("root_path")
    if route is not None and not mounted:
        fastapi_path = _fastapi_route(scope)
        if fastapi_path is not None:
            return fastapi_path
        if isinstance(getattr(route, "path", None), str):
            return route.path  # Starlette and FastAPI put the matched route on the scope
    routes = getattr(original_scope.get("app"), "routes", None)
    if routes is None:
        return None
    try:
        return _match_routes(routes, original_scope)
    except (ImportError, AttributeError, TypeError):
        return None
