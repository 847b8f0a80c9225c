"""UI accounts: argon2id password hashes, user creation, and sign-in checks.

A wrong user name costs the same argon2 verification as a wrong password, so the time of a
refusal does not tell which of the two was wrong.
"""

from __future__ import annotations

import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from serving.errors import LoginFailedError, UserExistsError
from serving.ui.models import Locale, Role, User

__all__ = ["authenticate_user", "create_user", "generate_password", "hash_password"]

_hasher = PasswordHasher()
#: Verified against when the user does not exist, so both refusals take as long.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def generate_password() -> str:
    """A random password (about 120 bits) for a user created without one."""
    return secrets.token_urlsafe(15)


def create_user(
    session: Session,
    tenant_id: str,
    username: str,
    password: str,
    *,
    role: Role = Role.RADIOLOGIST,
    locale: Locale = Locale.EN,
) -> User:
    """Add a user to a hospital; the name is unique within it."""
    taken = session.scalar(
        select(User.id).where(User.tenant_id == tenant_id, User.username == username)
    )
    if taken is not None:
        raise UserExistsError("The hospital already has a user with this name.", username=username)
    user = User(
        tenant_id=tenant_id,
        username=username,
        password_hash=hash_password(password),
        role=role,
        locale=locale,
    )
    session.add(user)
    session.flush()
    return user


def authenticate_user(session: Session, tenant_id: str, username: str, password: str) -> User:
    """The enabled user with this name and password in the hospital, else LoginFailedError."""
    user = session.scalar(
        select(User).where(User.tenant_id == tenant_id, User.username == username)
    )
    try:
        _hasher.verify(user.password_hash if user else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        user = None
    if user is None or user.disabled:
        raise LoginFailedError("The user name or the password is wrong.")
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    return user
