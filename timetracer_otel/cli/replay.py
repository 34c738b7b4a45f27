"""Replaying cassettes in-process: each recorded request runs through the app again, with
its outgoing calls answered from the cassette, and yields the replay report.

The app module is imported once, after ``TIMETRACER_MODE=replay`` and
``TIMETRACER_CASSETTE`` are set, so an app that calls ``auto_setup`` at import configures
itself for replay. Then, per cassette, the app's ``TimeTracerMiddleware`` is given a
replay config naming that one cassette (an app without the middleware is wrapped in
one), so each request is answered from its own recording, never from a look-alike.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import logging
import os
import sys
import warnings
from typing import Any, Optional, Sequence
from urllib.parse import quote

from timetracer_otel.cassette.body import decode_body
from timetracer_otel.cassette.location import CassetteFile
from timetracer_otel.cassette.reader import load_cassette
from timetracer_otel.config import TraceConfig
from timetracer_otel.integrations.starlette import TimeTracerMiddleware
from timetracer_otel.replayers import ReplayReport, process, recent_reports
from timetracer_otel.replayers.http import HttpAnswer

__all__ = ["import_app", "Replayer"]

_NOT_SENT = {"content-length", "transfer-encoding"}  # the client sets them for the body it sends


def import_app(spec: str, app_dir: Optional[str] = None, factory: bool = False) -> Any:
    """The ASGI app named ``module:attribute`` (as uvicorn names it), importable from ``app_dir`` or the cwd."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"invalid app {spec!r}; use module:attribute, e.g. myservice.main:app")
    sys.path.insert(0, os.path.abspath(app_dir or "."))
    app: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        try:
            app = getattr(app, part)
        except AttributeError:
            raise ValueError(f"module {module_name!r} has no attribute {attribute!r}") from None
    return app() if factory else app


class _Switch:
    """The ASGI app the test client talks to; ``target`` changes per cassette, the client stays."""

    def __init__(self, target: Any) -> None:
        self.target = target

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.target(scope, receive, send)


def _request_body(body: dict[str, Any]) -> bytes:
    """The bytes the app received: a body stored decoded is encoded again as its Content-Encoding says."""
    return HttpAnswer(0, [], decode_body(body), body.get("content_encoding")).wire_body()


class Replayer:
    """Replays cassettes through one app: ``with Replayer(spec, first) as r: r.replay(path)``."""

    def __init__(
        self,
        spec: str,
        first_cassette: str,
        app_dir: Optional[str] = None,
        factory: bool = False,
        ignore: Sequence[str] = (),
        process_cassettes: Optional[str] = None,
    ) -> None:
        """``process_cassettes``: the directory whose process cassette answers the app's calls outside requests."""
        self._env = {"TIMETRACER_MODE": "replay", "TIMETRACER_CASSETTE": first_cassette}
        self._saved_env = {name: os.environ.get(name) for name in self._env}
        os.environ.update(self._env)
        if process_cassettes is not None:
            process.start(TraceConfig(mode="replay", cassette_path=process_cassettes))
        self.app = import_app(spec, app_dir, factory)
        self.ignore = tuple(ignore)
        self._switch = _Switch(self.app)
        self._stack = contextlib.ExitStack()
        self._client: Any = None

    def __enter__(self) -> "Replayer":
        with warnings.catch_warnings():  # Starlette >= 1.x suggests httpx2 for its test client; httpx works
            warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient` is deprecated")
            from starlette.testclient import TestClient

        logger = logging.getLogger("timetracer")
        level = logger.level
        logger.setLevel(logging.WARNING)  # the report is printed by the caller, not logged a second time
        self._stack.callback(logger.setLevel, level)
        self._stack.callback(self._restore_env)
        client = TestClient(self._switch, raise_server_exceptions=False, follow_redirects=False)
        self._client = self._stack.enter_context(client)  # runs the app's lifespan once, as a server would
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._stack.close()

    def _restore_env(self) -> None:
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    def _config(self, existing: Optional[TraceConfig], cassette: CassetteFile) -> TraceConfig:
        base = existing if existing is not None else TraceConfig.from_env()
        ignored = (*base.replay_ignore_fields, *self.ignore)
        return dataclasses.replace(base, mode="replay", cassette_path=str(cassette), replay_ignore_fields=ignored)

    def _target(self, cassette: CassetteFile) -> Any:
        """The app set to replay ``cassette``: its own middleware reconfigured, or a new one around it."""
        app = self.app
        ours = [m for m in getattr(app, "user_middleware", ()) if getattr(m, "cls", None) is TimeTracerMiddleware]
        if ours:
            for middleware in ours:
                existing = middleware.kwargs.get("config", middleware.args[0] if middleware.args else None)
                middleware.args, middleware.kwargs = (), {**middleware.kwargs, "config": self._config(existing, cassette)}
            app.middleware_stack = None  # Starlette builds the stack again, with the new config, on the next request
            return app
        if isinstance(app, TimeTracerMiddleware):
            return TimeTracerMiddleware(app.app, self._config(app.config, cassette))
        return TimeTracerMiddleware(app, self._config(None, cassette))

    def replay(self, cassette: CassetteFile) -> ReplayReport:
        """Send the recorded request of ``cassette`` to the app; the replay report of that request."""
        doc = load_cassette(cassette)
        request = doc["request"]
        self._switch.target = self._target(cassette)
        url = quote(request["path"], safe="/:@!$&'()*+,;=-._~") + (f"?{request['query']}" if request.get("query") else "")
        headers = [(k, v) for k, v in request["headers"] if k.lower() not in _NOT_SENT]
        before = recent_reports()
        self._client.request(request["method"], url, headers=headers, content=_request_body(request["body"]))
        made = [r for r in recent_reports() if all(r is not b for b in before)]
        if made:
            return made[-1]
        return ReplayReport(
            cassette=str(cassette),
            method=request["method"],
            path=request["path"],
            cassette_id=doc.get("id"),
            recorded_status=doc["response"]["status"],
            differences=["the app did not replay this request (is its path in TIMETRACER_EXCLUDE_PATHS?)"],
        )

