"""Settings from the environment, as the template's ``core/config.py`` reads them."""

from __future__ import annotations

from pydantic import field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_ignore_empty=True, extra="ignore")

    PROJECT_NAME: str = "real-service"
    API_V1_STR: str = "/api/v1"
    SECRET_KEY: str
    ACCESS_TOKEN_EXPIRE_MINUTES: int = 60 * 24 * 8
    FRONTEND_HOST: str = "http://localhost:5173"

    DATABASE_URL: str
    REDIS_URL: str
    CACHE_PREFIX: str = ""  # prepended to every Redis key: several deployments may share one Redis
    CACHE_TTL_SECONDS: int = 60
    RATE_LIMIT_PER_HOUR: int = 1000

    RATES_API_URL: str
    RATES_API_KEY: str = ""

    @field_validator("DATABASE_URL", mode="before")
    @classmethod
    def _use_psycopg_driver(cls, value: str) -> str:
        """``postgres://`` URLs (as hosting platforms hand them out) go through psycopg 3."""
        for scheme in ("postgres://", "postgresql://"):
            if value.startswith(scheme):
                return value.replace(scheme, "postgresql+psycopg://", 1)
        return value


settings = Settings()  # type: ignore[call-arg]
