"""Password hashing (argon2 through pwdlib, a random salt per hash) and PyJWT access tokens."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import jwt
from pwdlib import PasswordHash

from .config import settings

ALGORITHM = "HS256"
password_hash = PasswordHash.recommended()

# Verified against when the email is unknown, so a login takes as long either way (the template does this).
DUMMY_HASH = "$argon2id$v=19$m=65536,t=3,p=4$gibHTyzcDT+/GPkrMsYDjQ$PPBvfCTZzSIWstb0YhWfpaDjpMlnZdvHJ3XT1XYfig4"


def create_access_token(subject: str | Any, expires_delta: timedelta) -> str:
    expire = datetime.now(timezone.utc) + expires_delta
    return jwt.encode(
        {"exp": expire, "sub": str(subject)}, settings.SECRET_KEY, algorithm=ALGORITHM
    )


def decode_access_token(token: str) -> dict[str, Any]:
    """The token's claims; ``jwt.InvalidTokenError`` if it is forged, malformed or expired."""
    return jwt.decode(token, settings.SECRET_KEY, algorithms=[ALGORITHM])


def verify_password(plain_password: str, hashed_password: str) -> bool:
    return password_hash.verify(plain_password, hashed_password)


def get_password_hash(password: str) -> str:
    return password_hash.hash(password)
