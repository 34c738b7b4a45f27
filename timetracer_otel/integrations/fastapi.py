"""FastAPI integration: FastAPI is a Starlette application, so the same middleware serves it."""

from .starlette import TimeTracerMiddleware, auto_setup

__all__ = ["TimeTracerMiddleware", "auto_setup"]
