"""Users with a role and a bearer token, stored hashed.

A token is 256 random bits, so a plain SHA-256 of it is enough to store (no
slow password hash is needed: there is nothing to brute-force); lookups go
by the hash, and the one comparison against a configured admin token uses
`hmac.compare_digest`, so neither leaks the token through timing.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import DateTime, String, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column, sessionmaker

from flextrain.accounts.roles import Role
from flextrain.db import Base, as_utc
from flextrain.errors import InvalidInputError, NotFoundError

TOKEN_PREFIX = "ft_"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")

# Seconds between two writes of a user's `last_used_at` (see `authenticate`).
LAST_USED_RESOLUTION = 60.0


class UserError(InvalidInputError, ValueError):
    """A user cannot be created or changed as asked; the message says why."""

    code = "user_invalid"
    field = "name"


class UserNotFoundError(NotFoundError, LookupError):
    """No user has this name."""

    code = "user_not_found"
    field = "name"


class UserRecord(Base):
    __tablename__ = "users"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    token_hint: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=lambda: datetime.now(UTC)
    )
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class User(BaseModel):
    """A user as front ends show it; the token itself is never part of it."""

    name: str
    role: Role
    token_hint: str
    created_at: datetime
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    @classmethod
    def from_record(cls, r: UserRecord) -> User:
        return cls(
            name=r.name,
            role=Role(r.role),
            token_hint=r.token_hint,
            created_at=as_utc(r.created_at),
            revoked_at=as_utc(r.revoked_at),
            last_used_at=as_utc(r.last_used_at),
        )


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def _hint(token: str) -> str:
    """Enough of the token to tell two apart in a listing, too little to use."""
    return token[: len(TOKEN_PREFIX) + 4] + "…"


class UserStore:
    """Create, list, revoke users and authenticate their tokens."""

    def __init__(self, sessions: sessionmaker[Any]) -> None:
        self._sessions = sessions

    def create(self, name: str, role: Role | str, *, token: str | None = None) -> tuple[User, str]:
        """A new user and their token (returned once; only its hash is stored)."""
        if not _NAME.match(name):
            raise UserError(
                f"User name {name!r} is not valid: use 1-64 letters, digits, '_', '.', '@' "
                "or '-', starting with a letter or digit."
            )
        try:
            role = Role(role)
        except ValueError:
            choices = ", ".join(r.value for r in Role)
            raise UserError(f"Role {role!r} is not valid: choose one of {choices}.") from None
        token = token or new_token()
        if len(token) < 16:
            raise UserError("A token must be at least 16 characters long.")
        record = UserRecord(
            name=name, role=role.value, token_hash=hash_token(token), token_hint=_hint(token)
        )
        try:
            with self._sessions.begin() as session:
                session.add(record)
                session.flush()
                user = User.from_record(record)
        except IntegrityError:
            raise UserError(
                f"A user named {name!r} already exists (or the token is taken)."
            ) from None
        return user, token

    def get(self, name: str) -> User:
        with self._sessions() as session:
            record = session.get(UserRecord, name)
            if record is None:
                raise UserNotFoundError(f"No user named {name!r}.")
            return User.from_record(record)

    def list_users(self) -> list[User]:
        with self._sessions() as session:
            records = session.scalars(select(UserRecord).order_by(UserRecord.created_at)).all()
            return [User.from_record(r) for r in records]

    def revoke(self, name: str) -> User:
        """Disable the user's token for good (their jobs and audit entries stay)."""
        with self._sessions.begin() as session:
            record = session.get(UserRecord, name)
            if record is None:
                raise UserNotFoundError(f"No user named {name!r}.")
            if record.revoked_at is None:
                record.revoked_at = datetime.now(UTC)
            return User.from_record(record)

    def authenticate(self, token: str) -> User | None:
        """The active user holding `token`, or None."""
        if not token.startswith(TOKEN_PREFIX) and len(token) < 16:
            return None
        digest = hash_token(token)
        with self._sessions() as session:
            record = session.scalar(select(UserRecord).where(UserRecord.token_hash == digest))
            if record is None or record.revoked_at is not None:
                return None
            # The database found it by hash; compare again in constant time anyway.
            if not hmac.compare_digest(record.token_hash, digest):
                return None
            user = User.from_record(record)
        now = datetime.now(UTC)
        last = as_utc(user.last_used_at)
        if last is None or (now - last).total_seconds() >= LAST_USED_RESOLUTION:
            # A write per request would cost a commit (an fsync with SQLite) and the
            # database's write lock, which the training workers need, on every poll of
            # every dashboard; "last used" to the minute is all anyone reads it for.
            with self._sessions.begin() as session:
                session.execute(
                    update(UserRecord).where(UserRecord.name == user.name).values(last_used_at=now)
                )
        return user

    def has_admin(self) -> bool:
        query = select(UserRecord.name).where(
            UserRecord.role == Role.ADMIN.value, UserRecord.revoked_at.is_(None)
        )
        with self._sessions() as session:
            return session.scalar(query.limit(1)) is not None

    def ensure_admin(self, token: str | None = None, name: str = "admin") -> str | None:
        """First start: make an admin. Returns the new token (to print once), else None.

        With `token` (FLEXTRAIN_ADMIN_TOKEN) the admin gets that token, and a
        changed value replaces the old one, so an operator can rotate it by
        restarting with a new value. Without it, when every admin was revoked,
        the admin user gets a fresh token, so the server can always start.
        """
        if token is not None:
            if len(token) < 16:
                raise UserError("FLEXTRAIN_ADMIN_TOKEN must be at least 16 characters long.")
            self._set_admin_token(name, token)
            return None
        if self.has_admin():
            return None
        created = new_token()
        self._set_admin_token(name, created)
        return created

    def _set_admin_token(self, name: str, token: str) -> None:
        """Create `name` as an admin holding `token`, or make it one again with it."""
        digest = hash_token(token)
        with self._sessions.begin() as session:
            record = session.get(UserRecord, name)
            if record is None:
                session.add(
                    UserRecord(
                        name=name, role=Role.ADMIN.value, token_hash=digest, token_hint=_hint(token)
                    )
                )
            elif not hmac.compare_digest(record.token_hash, digest):
                record.token_hash, record.token_hint = digest, _hint(token)
                record.role, record.revoked_at = Role.ADMIN.value, None
