"""The service with no timetracer code, for ``opentelemetry-instrument uvicorn real_service.plain:app``."""

from .app import create_app

app = create_app()
