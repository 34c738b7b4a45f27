"""FastAPI dependencies: the database session, the current user from the bearer token, the rate limit."""

from __future__ import annotations

import uuid
from typing import Annotated

import jwt
from fastapi import Depends, HTTPException, Response, status
from fastapi.security import OAuth2PasswordBearer
from pydantic import ValidationError
from sqlmodel import Session

from . import cache
from .config import settings
from .db import get_db
from .models import TokenPayload, User
from .security import decode_access_token

reusable_oauth2 = OAuth2PasswordBearer(tokenUrl=f"{settings.API_V1_STR}/login/access-token")

SessionDep = Annotated[Session, Depends(get_db)]
TokenDep = Annotated[str, Depends(reusable_oauth2)]

_INVALID_CREDENTIALS = HTTPException(
    status_code=status.HTTP_401_UNAUTHORIZED,
    detail="Could not validate credentials",
    headers={"WWW-Authenticate": "Bearer"},
)


def get_current_user(session: SessionDep, token: TokenDep) -> User:
    try:
        token_data = TokenPayload(**decode_access_token(token))
        user_id = uuid.UUID(token_data.sub or "")
    except (jwt.InvalidTokenError, ValidationError, ValueError):
        raise _INVALID_CREDENTIALS from None
    user = session.get(User, user_id)
    if not user:
        raise HTTPException(status_code=404, detail="User not found")
    if not user.is_active:
        raise HTTPException(status_code=400, detail="Inactive user")
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]


def rate_limited_user(current_user: CurrentUser, response: Response) -> User:
    """The current user, counted against this hour's request budget (429 when it is spent)."""
    used = cache.hit_rate_limit(current_user.id)
    remaining = max(settings.RATE_LIMIT_PER_HOUR - used, 0)
    if used > settings.RATE_LIMIT_PER_HOUR:
        raise HTTPException(
            status_code=429, detail="Rate limit exceeded", headers={"Retry-After": "3600"}
        )
    response.headers["X-RateLimit-Limit"] = str(settings.RATE_LIMIT_PER_HOUR)
    response.headers["X-RateLimit-Remaining"] = str(remaining)
    return current_user


LimitedUser = Annotated[User, Depends(rate_limited_user)]
