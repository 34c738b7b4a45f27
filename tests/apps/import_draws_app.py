"""``startup_app`` set up by an app module whose own modules draw values when imported, before
``auto_setup`` runs (:mod:`import_draws_settings`). timetracer's integration is imported first,
as isort puts third-party imports before the app's own; the app announces its instance in
Redis as it is set up, and ``/state`` shows what was drawn.

``uvicorn --factory import_draws_app:traced``, configured as ``startup_app``."""

from __future__ import annotations

import os

import redis
from starlette.applications import Starlette

from timetracer_otel.integrations.starlette import auto_setup

import startup_app  # isort: skip  (the app's own modules come last)
from import_draws_settings import INSTANCE, LOADED_AT, SIGNING_KEY_ID  # isort: skip


def traced() -> Starlette:
    app = startup_app.plain()
    auto_setup(app, plugins=["redis", "sqlalchemy"])
    with redis.Redis.from_url(os.environ["STARTUP_APP_REDIS"], decode_responses=True) as cache:
        cache.set(startup_app.key("instance"), INSTANCE)
    app.state.imported = f"{INSTANCE} {LOADED_AT} {SIGNING_KEY_ID}"
    return app
