"""Replaying cassettes in-process: each recorded request runs through the app again, with
its outgoing calls answered from the cassette, and yields the replay report.

The app module is imported once, after ``TIMETRACER_MODE=replay`` and
``TIMETRACER_CASSETTE`` are set, so an app that calls ``auto_setup`` at import configures
itself for replay. The app's ``TimeTracerMiddleware`` is then given a replay config naming
the cassette or directory (an app without the middleware is wrapped in one), and the
recorded requests are sent in recording order: the middleware chooses each request's
cassette as a replaying server would (:mod:`timetracer_otel.replayers.selection`), and
with the turn counter of each signature, the Nth request sent with a signature gets the
Nth cassette recorded with it, its own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import httpx

from timetracer_otel.cassette.body import decode_body
from timetracer_otel.cassette.document import Cassette
from timetracer_otel.cassette.reader import CassetteError, load_cassette
from timetracer_otel.config import ReadLimits, TraceConfig
from timetracer_otel.integrations import starlette as starlette_integration
from timetracer_otel.integrations.starlette import TimeTracerMiddleware
from timetracer_otel.replayers import ReplayReport, install_replayers, process, recent_reports
from timetracer_otel.replayers.asgi import library_for
from timetracer_otel.replayers.http import HttpAnswer
from timetracer_otel.replayers.selection import PIN_HEADER

from ._app_runner import AppRunner, AppThread
from ._credentials import Credentials, RedactedRequest
from ._imports import import_object
from .recordings import requests_of

__all__ = ["AppStartError", "import_app", "Replayer"]

# the client sets the first two for the body it sends; the last is the replay's own (see _pin)
_NOT_SENT = {"content-length", "transfer-encoding", PIN_HEADER}


def import_app(spec: str, app_dir: str | None = None, factory: bool = False) -> Any:
    """The ASGI app named ``module:attribute`` (as uvicorn names it), importable from ``app_dir`` or the cwd."""
    app = import_object(spec, app_dir)
    return app() if factory else app


def _request_body(body: dict[str, Any] | None) -> bytes:
    """The bytes the app received: a body stored decoded is encoded again as its Content-Encoding says."""
    if body is None:
        return b""
    return HttpAnswer(0, [], decode_body(body), body.get("content_encoding")).wire_body()


class AppStartError(Exception):
    """The app raised while it started (its lifespan): no request can be replayed."""


def _leaves(exc: BaseException) -> list[BaseException]:
    """The innermost exceptions of an exception group (a task group's in a lifespan), or ``exc``."""
    inner = getattr(exc, "exceptions", None)
    if isinstance(inner, tuple) and hasattr(exc, "derive"):
        return [leaf for each in inner for leaf in _leaves(each)]
    return [exc]


def _described(exc: BaseException) -> str:
    """``Type: message`` of each exception the app raised, not of the group wrapping them."""
    return "\n".join(f"{type(leaf).__name__}: {leaf}" for leaf in _leaves(exc))


class Replayer:
    """Replays recorded requests through one app: ``with Replayer(spec, location) as r:``
    then ``r.replay(path)`` for each path of ``r.cassettes()``.

    ``location`` is a cassette, a directory or an ``s3://`` prefix. Once the app is imported,
    the process replays (``TIMETRACER_MODE=replay``) until it ends: what the app calls after
    the last request, as the process exits (an error reporter's flush), is answered from the
    process cassette or refused, never sent.
    """

    def __init__(
        self,
        spec: str,
        location: str,
        app_dir: str | None = None,
        factory: bool = False,
        ignore: Sequence[str] = (),
        credentials: Credentials = Credentials(),
        recording: str | None = None,
    ) -> None:
        """``recording``: replay only the requests of the process that wrote this process
        cassette, below the directory ``location``, after its start (see :mod:`.recordings`)."""
        self._env = {"TIMETRACER_MODE": "replay", "TIMETRACER_CASSETTE": location}
        self._saved_env = {name: os.environ.get(name) for name in self._env}
        os.environ.update(self._env)
        # the app is imported on the thread serving it, as uvicorn does
        self._thread = AppThread()
        try:
            chosen, only = (
                requests_of(location, recording, ReadLimits.from_env())
                if recording is not None
                else (None, None)
            )
            # its process cassette answers startup, and what the app's modules call as they
            # are imported (create_all() at import), as in a server started to replay
            process.start(
                TraceConfig(mode="replay", cassette_path=location), importing=True, chosen=chosen
            )
            install_replayers()
            app = self._thread.call(lambda: import_app(spec, app_dir, factory))
            self.credentials = credentials.loaded(app_dir)
            self.ignore = tuple(ignore)
            self.config = self._config(app, location)
            # now: unusable cassettes stop here, before anything is sent
            self.library = library_for(self.config, only)
            self.app = self._target(app)
        except BaseException:
            self._thread.stop()
            self._restore_env()
            raise
        self._stack = contextlib.ExitStack()
        self._runner: AppRunner | None = None
        # what the app's lifespan shutdown raised: the replies are in, it is reported with them
        self.shutdown_error: str | None = None

    def __enter__(self) -> Replayer:
        logger = logging.getLogger("timetracer")
        level = logger.level
        # the report is printed by the caller, not logged a second time
        logger.setLevel(logging.WARNING)
        self._stack.callback(logger.setLevel, level)
        try:  # runs the app's lifespan once, as a server would
            self._runner = self._stack.enter_context(AppRunner(self.app, self._thread))
        except Exception as exc:
            self._stack.close()
            raise AppStartError(f"the app failed to start: {_described(exc)}") from exc
        return self

    def __exit__(self, *exc_info: Any) -> None:
        try:
            self._stack.close()
        except Exception as exc:
            self.shutdown_error = _described(exc).splitlines()[0]

    def _restore_env(self) -> None:
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    @staticmethod
    def _ours(app: Any) -> list[Any]:
        return [
            m
            for m in getattr(app, "user_middleware", ())
            if getattr(m, "cls", None) is TimeTracerMiddleware
        ]

    def _config(self, app: Any, location: str) -> TraceConfig:
        """The replay config for ``location``, built on the app's own timetracer config when it has one."""
        ours = self._ours(app)
        existing = None
        if ours:
            args, kwargs = _arguments(ours[0])
            existing = kwargs.get("config", args[0] if args else None)
        elif isinstance(app, TimeTracerMiddleware):
            existing = app.config
        base = existing if existing is not None else TraceConfig.from_env()
        ignored = (*base.replay_ignore_fields, *self.ignore)
        return dataclasses.replace(
            base, mode="replay", cassette_path=location, replay_ignore_fields=ignored
        )

    def _target(self, app: Any) -> Any:
        """The app set to replay with :attr:`config`: a Starlette app gets the middleware where
        recording puts it (its own, reconfigured, or one added as ``auto_setup`` and
        ``opentelemetry-instrument`` add it); any other app, a new one around it.

        The place matters: inside Starlette's error middleware, recording saw the app raise, not
        the 500 page that middleware sends; replay observes the same place to compare.
        """
        if isinstance(getattr(app, "user_middleware", None), list):
            ours = self._ours(app)
            for middleware in ours:
                _set_arguments(middleware, {**_arguments(middleware)[1], "config": self.config})
            app.middleware_stack = (
                None  # Starlette builds the stack again, with the new config, on the next request
            )
            if not ours:
                starlette_integration._add_middleware(app, self.config)
            return app
        return TimeTracerMiddleware(
            app.app if isinstance(app, TimeTracerMiddleware) else app, self.config
        )

    def cassettes(self) -> list[str]:
        """The cassettes at the location, in recording order: the order to send their requests in."""
        return self.library.in_recording_order()

    def replay(self, cassette: str) -> ReplayReport:
        """Send the recorded request of ``cassette`` to the app (its sealed secrets opened when this
        process holds the key); the replay report of that request."""
        try:
            recorded = Cassette(self.library.load(cassette).opened.answers)
        except CassetteError as exc:  # the others are still replayed
            return self._unusable(cassette, exc)
        request = recorded.request
        url = quote(request.path, safe="/:@!$&'()*+,;=-._~") + (
            f"?{request.query}" if request.query else ""
        )
        headers, supplied = self.credentials.apply(
            [(k, v) for k, v in request.headers if k.lower() not in _NOT_SENT],
            RedactedRequest(request.method, request.path, request.query),
        )
        before = recent_reports()
        try:  # header bytes as received: ASGI gives them as latin-1
            sent = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers]
            sent += self._pin(cassette)
            assert self._runner is not None, "only inside the with block"
            self._runner.request(request.method, url, sent, _request_body(request.body))
        except (ValueError, httpx.InvalidURL) as exc:  # a cassette no client could have sent
            return self._unreplayed(
                cassette,
                recorded,
                f"the recorded request cannot be sent ({type(exc).__name__}: {exc})",
            )
        made = [r for r in recent_reports() if all(r is not b for b in before)]
        if made:
            made[-1].supplied_credentials = supplied
            if request.body and request.body.get("truncated"):
                made[-1].notes.append(_cut_body_note(request.body))
            return made[-1]
        return self._unreplayed(
            cassette,
            recorded,
            "the app did not replay this request (is its path in TIMETRACER_EXCLUDE_PATHS?)",
        )

    def _pin(self, cassette: str) -> list[tuple[bytes, bytes]]:
        """The header naming ``cassette`` to the replay layer: its request is answered from it
        even where choosing by content cannot tell it from another (a body cut at the size
        limit fits no recorded one); none for a name a header cannot carry."""
        reference = self.library.reference_of(cassette)
        if reference is None or not reference.isascii():
            return []
        return [(PIN_HEADER.encode("ascii"), reference.encode("ascii"))]

    def _unusable(self, cassette: str, error: CassetteError) -> ReplayReport:
        """A cassette whose content replay cannot use (sealed with another key, a hostile value),
        reported under its recorded request as far as that can be read."""
        try:
            return self._unreplayed(
                cassette,
                Cassette(load_cassette(cassette, limits=self.config.read_limits)),
                str(error),
            )
        except Exception:  # its request cannot be read either
            return ReplayReport(cassette=cassette, method="-", path="-", differences=[str(error)])

    @staticmethod
    def _unreplayed(cassette: str, recorded: Cassette, why: str) -> ReplayReport:
        return ReplayReport(
            cassette=cassette,
            method=recorded.request.method,
            path=recorded.request.path,
            cassette_id=recorded.id,
            recorded_status=recorded.response.status,
            differences=[why],
        )


def _cut_body_note(body: dict[str, Any]) -> str:
    """What the report says of a request whose body the recording kept only the start of."""
    kept = len(decode_body(body))
    return (
        f"the recording kept {kept} of the request body's {body.get('size')} bytes"
        " (TIMETRACER_MAX_BODY_BYTES): the app was sent only those"
    )


def _arguments(middleware: Any) -> tuple[tuple, dict[str, Any]]:
    """A Starlette ``Middleware`` entry's arguments: ``args`` and ``kwargs`` since Starlette 0.35,
    ``options`` before (an app pinning an older FastAPI)."""
    if hasattr(middleware, "kwargs"):
        return tuple(middleware.args), dict(middleware.kwargs)
    return (), dict(getattr(middleware, "options", {}))


def _set_arguments(middleware: Any, kwargs: dict[str, Any]) -> None:
    if hasattr(middleware, "kwargs"):
        middleware.args, middleware.kwargs = (), kwargs
    else:
        middleware.options = kwargs
