"""Sign-up and the signed-in user's own account."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException

from ..deps import LimitedUser, SessionDep
from ..models import Message, UpdatePassword, User, UserPublic, UserRegister, UserUpdateMe, utcnow
from ..security import get_password_hash, verify_password
from .login import get_user_by_email

router = APIRouter(prefix="/users", tags=["users"])


@router.post("/signup", response_model=UserPublic)
def register_user(session: SessionDep, user_in: UserRegister) -> Any:
    if get_user_by_email(session, user_in.email):
        raise HTTPException(
            status_code=400, detail="The user with this email already exists in the system"
        )
    user = User.model_validate(
        user_in, update={"hashed_password": get_password_hash(user_in.password)}
    )
    session.add(user)
    session.commit()
    session.refresh(user)
    return user


@router.get("/me", response_model=UserPublic)
def read_user_me(current_user: LimitedUser) -> Any:
    return current_user


@router.patch("/me", response_model=UserPublic)
def update_user_me(session: SessionDep, user_in: UserUpdateMe, current_user: LimitedUser) -> Any:
    current_user.sqlmodel_update(
        user_in.model_dump(exclude_unset=True), update={"updated_at": utcnow()}
    )
    session.add(current_user)
    session.commit()
    session.refresh(current_user)
    return current_user


@router.patch("/me/password", response_model=Message)
def update_password_me(session: SessionDep, body: UpdatePassword, current_user: LimitedUser) -> Any:
    if not verify_password(body.current_password, current_user.hashed_password):
        raise HTTPException(status_code=400, detail="Incorrect password")
    if body.current_password == body.new_password:
        raise HTTPException(
            status_code=400, detail="New password cannot be the same as the current one"
        )
    current_user.hashed_password = get_password_hash(body.new_password)
    current_user.updated_at = utcnow()
    session.add(current_user)
    session.commit()
    return Message(message="Password updated successfully")
