"""`flextrain users ...` and `flextrain audit`, run in-process through Typer's CliRunner.

Settings come from FLEXTRAIN_HOME (and FLEXTRAIN_DATABASE_URL under
`make test-postgres`) exactly as for a user; what the commands did is then
checked in the database itself.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from click.testing import Result
from typer.testing import CliRunner

from flextrain.accounts.users import Role, User, UserStore
from flextrain.cli.main import app
from flextrain.db import make_sessionmaker
from flextrain.migrations import make_engine
from flextrain.settings import Settings

ACTOR = "cli:ops-person"


@pytest.fixture
def users(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[UserStore]:
    """The CLI's environment points at the test's home; the store reads the same database."""
    monkeypatch.setenv("FLEXTRAIN_HOME", str(settings.home))
    monkeypatch.setenv("FLEXTRAIN_MODELS_CACHE", str(settings.models_cache))
    if settings.database_url:
        monkeypatch.setenv("FLEXTRAIN_DATABASE_URL", settings.database_url)
    else:
        monkeypatch.delenv("FLEXTRAIN_DATABASE_URL", raising=False)
    monkeypatch.setenv("LOGNAME", "ops-person")  # getpass.getuser() reads this first
    monkeypatch.setenv("COLUMNS", "400")  # rich must not wrap a token or a message
    settings.ensure_home()
    engine = make_engine(settings.resolved_database_url)
    yield UserStore(make_sessionmaker(engine))
    engine.dispose()


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def audit_json(*args: str) -> list[dict[str, object]]:
    result = invoke("audit", "--json", *args)
    assert result.exit_code == 0, result.output
    entries: list[dict[str, object]] = json.loads(result.stdout)
    return entries


def create(name: str, role: str) -> str:
    result = invoke("users", "create", name, "--role", role)
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


def assert_one_line_error(result: Result, code: int, *parts: str) -> None:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    for part in parts:
        assert part in lines[0], lines[0]


def test_create_prints_a_working_token_once(users: UserStore) -> None:
    result = invoke("users", "create", "alice", "--role", "trainer")
    assert result.exit_code == 0, result.output
    # stdout holds the token alone, so `TOKEN=$(flextrain users create ...)` works.
    token = result.stdout.strip()
    assert "\n" not in token
    assert token.startswith("ft_")
    assert "Created user 'alice' with role trainer" in result.stderr
    assert "will not be shown again" in result.stderr

    user = users.authenticate(token)
    assert user is not None
    assert (user.name, user.role) == ("alice", Role.TRAINER)

    listed = invoke("users", "list")
    assert listed.exit_code == 0, listed.output
    assert token not in listed.output
    assert audit_json()[0]["detail"] is None  # the token is not in the log either


def test_list_shows_users_in_a_table_and_as_json(users: UserStore) -> None:
    create("alice", "admin")
    create("bob", "viewer")
    table = invoke("users", "list")
    assert table.exit_code == 0, table.output
    rows = [line for line in table.stdout.splitlines() if "alice" in line or "bob" in line]
    assert len(rows) == 2
    assert "admin" in rows[0]
    assert "ft_" in rows[0]
    assert rows[0].rstrip("│ ").endswith("no")
    assert "viewer" in rows[1]

    result = invoke("users", "list", "--json")
    assert result.exit_code == 0, result.output
    listed = [User.model_validate(u) for u in json.loads(result.stdout)]
    assert [(u.name, u.role) for u in listed] == [("alice", Role.ADMIN), ("bob", Role.VIEWER)]
    assert all(u.revoked_at is None and u.last_used_at is None for u in listed)


def test_revoke_stops_the_token(users: UserStore) -> None:
    token = create("bob", "trainer")
    create("root", "admin")
    result = invoke("users", "revoke", "bob")
    assert result.exit_code == 0, result.output
    assert "Revoked user 'bob'" in result.stdout
    assert result.stderr == ""  # an admin is left: no warning
    assert users.authenticate(token) is None
    assert users.get("bob").revoked_at is not None

    again = invoke("users", "revoke", "bob")
    assert again.exit_code == 0, again.output
    assert "already revoked" in again.stdout

    (bob,) = [u for u in json.loads(invoke("users", "list", "--json").stdout) if u["name"] == "bob"]
    assert bob["revoked_at"] is not None


def test_revoking_the_last_admin_warns(users: UserStore) -> None:
    create("root", "admin")
    result = invoke("users", "revoke", "root")
    assert result.exit_code == 0, result.output
    assert "no active admin is left" in result.stderr
    assert "flextrain users create NAME --role admin" in result.stderr


def test_audit_lists_the_cli_actions_newest_first(users: UserStore) -> None:
    create("alice", "trainer")
    invoke("users", "create", "alice", "--role", "viewer")  # refused: duplicate
    invoke("users", "revoke", "alice")

    entries = audit_json()
    assert [(e["action"], e["target"], e["outcome"]) for e in entries] == [
        ("users.revoke", "alice", "ok"),
        ("users.create", "alice", "rejected"),
        ("users.create", "alice", "ok"),
    ]
    assert {(e["actor"], e["client"]) for e in entries} == {(ACTOR, "cli")}
    assert "already exists" in str(entries[1]["detail"])

    assert [e["action"] for e in audit_json("--limit", "1")] == ["users.revoke"]
    assert [e["outcome"] for e in audit_json("--outcome", "rejected")] == ["rejected"]
    assert len(audit_json("--actor", ACTOR)) == 3
    assert audit_json("--actor", "someone-else") == []

    table = invoke("audit")
    assert table.exit_code == 0, table.output
    lines = [line for line in table.stdout.splitlines() if "users." in line]
    assert ["users.revoke" in lines[0], "users.create" in lines[2]] == [True, True]
    assert all(ACTOR in line for line in lines)


def test_reading_does_not_write_the_audit_log(users: UserStore) -> None:
    invoke("users", "list")
    invoke("audit")
    assert audit_json() == []


def test_an_unknown_role_is_one_line_and_exit_1(users: UserStore) -> None:
    result = invoke("users", "create", "alice", "--role", "boss")
    assert_one_line_error(
        result, 1, "Role 'boss' is not valid", "choose one of admin, trainer, viewer"
    )
    assert users.list_users() == []


def test_a_duplicate_name_is_one_line_with_the_fix(users: UserStore) -> None:
    create("alice", "viewer")
    result = invoke("users", "create", "alice", "--role", "admin")
    assert_one_line_error(
        result, 1, "A user named 'alice' already exists", "Fix: choose another name"
    )
    assert result.stdout == ""  # no token printed
    assert users.get("alice").role == Role.VIEWER


def test_an_invalid_name_is_one_line_and_exit_1(users: UserStore) -> None:
    result = invoke("users", "create", "two words", "--role", "viewer")
    assert_one_line_error(result, 1, "User name 'two words' is not valid", "use 1-64 letters")


def test_revoking_an_unknown_user_is_one_line_with_the_fix(users: UserStore) -> None:
    result = invoke("users", "revoke", "ghost")
    assert_one_line_error(result, 1, "No user named 'ghost'", "Fix: `flextrain users list`")
    (entry,) = audit_json()
    assert (entry["action"], entry["target"], entry["outcome"]) == (
        "users.revoke",
        "ghost",
        "rejected",
    )


def test_a_bad_outcome_filter_is_a_usage_error(users: UserStore) -> None:
    result = invoke("audit", "--outcome", "maybe")
    assert_one_line_error(
        result, 2, "--outcome: 'maybe' is not an outcome", "ok, denied, rejected, error"
    )


@pytest.mark.parametrize(
    "args",
    [
        ("users", "create", "alice"),  # no --role
        ("users", "create", "--role", "admin"),  # no name
        ("users", "revoke"),
        ("audit", "--limit", "0"),
    ],
)
def test_malformed_command_lines_exit_2(users: UserStore, args: tuple[str, ...]) -> None:
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert users.list_users() == []


def test_an_unreachable_database_is_one_line_not_a_traceback(
    users: UserStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLEXTRAIN_DATABASE_URL", "postgresql+psycopg://nobody@127.0.0.1:1/none")
    result = invoke("users", "list")
    assert_one_line_error(result, 1, "Database error:", "Fix: check FLEXTRAIN_DATABASE_URL")
