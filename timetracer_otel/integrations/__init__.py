"""Framework integrations: Starlette and FastAPI."""
