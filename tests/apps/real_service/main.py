"""The service with timetracer: ``uvicorn real_service.main:app`` (TIMETRACER_* from the environment)."""

from timetracer_otel.integrations.starlette import auto_setup

from .app import create_app

app = create_app()
auto_setup(app, plugins=["httpx", "sqlalchemy", "redis"])
