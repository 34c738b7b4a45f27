"""The models and helpers used directly, as the template's ``tests/crud`` does."""

import uuid

from real_service.models import Item, User
from real_service.routes.login import authenticate, get_user_by_email
from real_service.security import get_password_hash, verify_password
from sqlmodel import Session, func, select
from utils import create_user, random_email, random_lower_string, random_title


def test_create_user(db: Session) -> None:
    email, password = random_email(), random_lower_string()
    user = create_user(db, email, password)
    assert user.email == email
    assert user.hashed_password.startswith("$argon2id$")


def test_authenticate_user(db: Session) -> None:
    email, password = random_email(), random_lower_string()
    user = create_user(db, email, password)
    authenticated = authenticate(db, email, password)
    assert authenticated is not None and authenticated.id == user.id


def test_not_authenticate_an_unknown_user(db: Session) -> None:
    assert authenticate(db, random_email(), random_lower_string()) is None


def test_not_authenticate_with_a_wrong_password(db: Session) -> None:
    email = random_email()
    create_user(db, email, random_lower_string())
    assert authenticate(db, email, random_lower_string()) is None


def test_a_user_is_active_by_default(db: Session) -> None:
    assert create_user(db, random_email(), random_lower_string()).is_active is True


def test_get_user_by_email(db: Session) -> None:
    user = create_user(db, random_email(), random_lower_string(), full_name="Found Me")
    found = get_user_by_email(db, user.email)
    assert found is not None and found.full_name == "Found Me"


def test_get_user_by_id(db: Session) -> None:
    user = create_user(db, random_email(), random_lower_string())
    db.expunge(user)
    fetched = db.get(User, user.id)
    assert fetched is not None and fetched.email == user.email


def test_update_user_password(db: Session) -> None:
    user = create_user(db, random_email(), random_lower_string())
    new_password = random_lower_string()
    user.hashed_password = get_password_hash(new_password)
    db.add(user)
    db.commit()
    db.refresh(user)
    assert verify_password(new_password, user.hashed_password)


def test_password_hashes_are_salted() -> None:
    password = random_lower_string()
    first, second = get_password_hash(password), get_password_hash(password)
    assert first != second
    assert verify_password(password, first) and verify_password(password, second)


def test_create_item_for_a_user(db: Session) -> None:
    user = create_user(db, random_email(), random_lower_string())
    item = Item(title=random_title(), owner_id=user.id)
    db.add(item)
    db.commit()
    db.refresh(item)
    assert item.owner_id == user.id and isinstance(item.id, uuid.UUID)


def test_count_items_of_a_user(db: Session) -> None:
    user = create_user(db, random_email(), random_lower_string())
    db.add_all([Item(title=random_title(), owner_id=user.id) for _ in range(4)])
    db.commit()
    assert (
        db.exec(select(func.count()).select_from(Item).where(Item.owner_id == user.id)).one() == 4
    )


def test_deleting_a_user_deletes_their_items(db: Session) -> None:
    user = create_user(db, random_email(), random_lower_string())
    db.add(Item(title=random_title(), owner_id=user.id))
    db.commit()
    db.delete(user)
    db.commit()
    assert db.exec(select(Item).where(Item.owner_id == user.id)).all() == []
