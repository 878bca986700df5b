"""Users and their bearer tokens, on a real (migrated) database."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import Engine, text, update

from flextrain.accounts.users import (
    TOKEN_PREFIX,
    Role,
    UserError,
    UserNotFoundError,
    UserRecord,
    UserStore,
    hash_token,
)


def _users_table_text(engine: Engine) -> str:
    """Every value of every row of the users table, as one string."""
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT * FROM users")).all()
    return " ".join(str(value) for row in rows for value in row)


def test_create_returns_a_token_that_authenticates(users: UserStore) -> None:
    user, token = users.create("alice", Role.TRAINER)
    assert user.name == "alice"
    assert user.role == Role.TRAINER
    assert user.active
    assert token.startswith(TOKEN_PREFIX)
    assert len(token) > 40
    assert user.token_hint.startswith(token[:7])
    assert len(user.token_hint) < 12

    found = users.authenticate(token)
    assert found is not None
    assert (found.name, found.role) == ("alice", Role.TRAINER)
    assert users.get("alice").last_used_at is not None


def test_last_used_is_written_once_a_minute_not_on_every_request(users: UserStore) -> None:
    _, token = users.create("alice", Role.TRAINER)
    users.authenticate(token)
    first = users.get("alice").last_used_at
    users.authenticate(token)
    assert users.get("alice").last_used_at == first  # a poll every second writes nothing
    with users._sessions.begin() as session:  # as if the last use were two minutes ago
        session.execute(update(UserRecord).values(last_used_at=first - timedelta(seconds=120)))
    users.authenticate(token)
    assert users.get("alice").last_used_at > first


def test_each_user_gets_a_different_token(users: UserStore) -> None:
    _, first = users.create("a", "viewer")
    _, second = users.create("b", "viewer")
    assert first != second
    assert users.authenticate(first).name == "a"  # type: ignore[union-attr]
    assert users.authenticate(second).name == "b"  # type: ignore[union-attr]


def test_only_the_hash_of_the_token_is_stored(users: UserStore, engine: Engine) -> None:
    _, token = users.create("alice", Role.ADMIN)
    stored = _users_table_text(engine)
    assert token not in stored
    assert token[len(TOKEN_PREFIX) :] not in stored
    assert hash_token(token) in stored


def test_wrong_and_malformed_tokens_fail(users: UserStore) -> None:
    users.create("alice", Role.ADMIN)
    assert users.authenticate(TOKEN_PREFIX + "x" * 43) is None
    assert users.authenticate("short") is None
    assert users.authenticate("") is None


def test_a_revoked_token_fails_and_the_user_stays_listed(users: UserStore) -> None:
    _, token = users.create("alice", Role.TRAINER)
    revoked = users.revoke("alice")
    assert revoked.revoked_at is not None
    assert not revoked.active
    assert users.authenticate(token) is None
    (listed,) = users.list_users()
    assert listed.name == "alice"
    assert listed.revoked_at is not None
    # Revoking again keeps the first time.
    first = users.get("alice").revoked_at
    users.revoke("alice")
    assert users.get("alice").revoked_at == first


def test_unknown_users_are_reported(users: UserStore) -> None:
    with pytest.raises(UserNotFoundError, match="No user named 'ghost'"):
        users.get("ghost")
    with pytest.raises(UserNotFoundError, match="No user named 'ghost'"):
        users.revoke("ghost")


def test_list_is_oldest_first_and_never_holds_tokens(users: UserStore) -> None:
    for name in ("carol", "alice", "bob"):
        users.create(name, Role.VIEWER)
    listed = users.list_users()
    assert [u.name for u in listed] == ["carol", "alice", "bob"]
    assert all("token" not in u.model_dump() for u in listed)


def test_a_duplicate_name_is_refused_with_its_name(users: UserStore) -> None:
    users.create("alice", Role.VIEWER)
    with pytest.raises(UserError, match="A user named 'alice' already exists"):
        users.create("alice", Role.ADMIN)
    assert users.get("alice").role == Role.VIEWER


def test_an_invalid_role_names_the_choices(users: UserStore) -> None:
    with pytest.raises(
        UserError, match=r"Role 'boss' is not valid: choose one of admin, trainer, viewer\."
    ):
        users.create("alice", "boss")
    assert users.list_users() == []


@pytest.mark.parametrize("name", ["", "two words", "-dash-first", "x" * 65, "naïve", "a/b"])
def test_an_invalid_name_says_what_is_allowed(users: UserStore, name: str) -> None:
    with pytest.raises(UserError, match=r"is not valid: use 1-64 letters, digits"):
        users.create(name, Role.VIEWER)


@pytest.mark.parametrize("name", ["a", "alice.smith", "bob@example.org", "ci_bot-2", "x" * 64])
def test_valid_names_are_accepted(users: UserStore, name: str) -> None:
    users.create(name, Role.VIEWER)
    assert users.get(name).name == name


def test_a_given_token_must_be_long_enough(users: UserStore) -> None:
    with pytest.raises(UserError, match="at least 16 characters"):
        users.create("alice", Role.VIEWER, token="too-short")
    _, token = users.create("alice", Role.VIEWER, token="a-long-enough-token")
    assert token == "a-long-enough-token"
    assert users.authenticate(token).name == "alice"  # type: ignore[union-attr]


def test_ensure_admin_creates_one_once_and_returns_its_token_once(users: UserStore) -> None:
    assert not users.has_admin()
    token = users.ensure_admin()
    assert token is not None
    admin = users.authenticate(token)
    assert admin is not None
    assert admin.name == "admin"
    assert admin.role == Role.ADMIN
    assert users.has_admin()

    assert users.ensure_admin() is None
    assert [u.name for u in users.list_users()] == ["admin"]


def test_ensure_admin_leaves_an_existing_admin_alone(users: UserStore) -> None:
    users.create("root", Role.ADMIN)
    assert users.ensure_admin() is None
    assert [u.name for u in users.list_users()] == ["root"]


def test_ensure_admin_with_a_given_token_uses_it_and_rotates_it(users: UserStore) -> None:
    first = "first-admin-token-0001"
    assert users.ensure_admin(token=first) is None  # the operator knows it: nothing to print
    assert users.authenticate(first).role == Role.ADMIN  # type: ignore[union-attr]
    hint = users.get("admin").token_hint

    assert users.ensure_admin(token=first) is None  # restart with the same value
    assert users.get("admin").token_hint == hint
    assert users.authenticate(first) is not None

    second = "second-admin-token-0002"
    users.ensure_admin(token=second)  # restart with a new value: rotated
    assert users.authenticate(first) is None
    assert users.authenticate(second).name == "admin"  # type: ignore[union-attr]
    assert len(users.list_users()) == 1


def test_ensure_admin_with_a_new_token_restores_a_revoked_admin(users: UserStore) -> None:
    users.ensure_admin(token="first-admin-token-0001")
    users.revoke("admin")
    assert not users.has_admin()
    users.ensure_admin(token="second-admin-token-0002")
    assert users.has_admin()
    assert users.authenticate("second-admin-token-0002") is not None


@pytest.mark.parametrize(
    ("role", "needed", "allowed"),
    [
        (Role.ADMIN, Role.ADMIN, True),
        (Role.ADMIN, Role.TRAINER, True),
        (Role.ADMIN, Role.VIEWER, True),
        (Role.TRAINER, Role.ADMIN, False),
        (Role.TRAINER, Role.TRAINER, True),
        (Role.TRAINER, Role.VIEWER, True),
        (Role.VIEWER, Role.ADMIN, False),
        (Role.VIEWER, Role.TRAINER, False),
        (Role.VIEWER, Role.VIEWER, True),
    ],
)
def test_role_allows_itself_and_every_role_below(role: Role, needed: Role, allowed: bool) -> None:
    assert role.allows(needed) is allowed


def test_ensure_admin_reissues_a_token_when_every_admin_was_revoked(users: UserStore) -> None:
    """Otherwise `flextrain serve` could never start again: the name 'admin' is taken."""
    first = users.ensure_admin()
    assert first is not None
    users.revoke("admin")
    assert users.authenticate(first) is None
    second = users.ensure_admin()
    assert second is not None
    assert second != first
    user = users.authenticate(second)
    assert user is not None
    assert user.name == "admin"
    assert user.role == Role.ADMIN
    assert users.authenticate(first) is None


def test_ensure_admin_refuses_a_short_given_token(users: UserStore) -> None:
    with pytest.raises(UserError, match="at least 16 characters"):
        users.ensure_admin(token="short")
    assert users.list_users() == []
