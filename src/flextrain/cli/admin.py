"""`flextrain users ...` and `flextrain audit`: accounts and the audit log from the shell.

Whoever can run the CLI on the server can read its database anyway, so these
commands need no token; what they change is written to the audit log under
`cli:<OS user>`, next to what the API records. A store error (unknown role,
duplicate name, unknown user) prints one line naming the problem and the fix
and exits with 1; a malformed command line exits with 2, as everywhere.
"""

from __future__ import annotations

import getpass
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from flextrain.accounts.roles import Role

if TYPE_CHECKING:
    from flextrain.accounts.audit import AuditEntry
    from flextrain.accounts.users import User
    from flextrain.service import TrainingService

users_app = typer.Typer(help="Users of the API server: create, list, revoke.", no_args_is_help=True)

console = Console()
err_console = Console(stderr=True)
T = TypeVar("T")

OUTCOMES = ("ok", "denied", "rejected", "error")
_ROLES = ", ".join(r.value for r in Role)


class _Failed(Exception):
    """A CLI action was refused; the message is the whole story, fix included."""


@contextmanager
def _service() -> Iterator[TrainingService]:
    from flextrain.service import TrainingService  # when a command runs, not for --help

    service = TrainingService()
    try:
        yield service
    finally:
        service.engine.dispose()


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):  # no login name and no passwd entry (some containers)
        return "cli:unknown"


def _fail(message: str, code: int = 1) -> typer.Exit:
    err_console.print(message, style="red", markup=False, highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _guard(action: Callable[[], T]) -> T:
    """Run `action`; a refusal or a database problem becomes one line and exit code 1."""
    from sqlalchemy.exc import SQLAlchemyError

    from flextrain.public import DatabaseTooNewError

    try:
        return action()
    except (_Failed, DatabaseTooNewError) as exc:
        raise _fail(str(exc)) from None
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise _fail(
            f"Database error: {reason}. Fix: check FLEXTRAIN_DATABASE_URL / FLEXTRAIN_HOME "
            "and that the database server is running."
        ) from None


def _audited(service: TrainingService, action: str, target: str, run: Callable[[], T]) -> T:
    """Run a user-management change and record it, refused or done."""
    from flextrain.accounts.users import UserError, UserNotFoundError

    try:
        result = run()
    except (UserError, UserNotFoundError) as exc:
        message = str(exc)
        if isinstance(exc, UserNotFoundError):
            message += " Fix: `flextrain users list` shows the existing names."
        service.audit.record(
            actor=_actor(),
            action=action,
            target=target,
            outcome="rejected",
            client="cli",
            detail=message,
        )
        raise _Failed(message) from None
    service.audit.record(actor=_actor(), action=action, target=target, outcome="ok", client="cli")
    return result


def _when(value: datetime | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """In UTC: stored as UTC, but PostgreSQL answers in the server's time zone."""
    if value is None:
        return "-"
    return (value.astimezone(UTC) if value.tzinfo else value).strftime(fmt)


@users_app.command("create")
def users_create(
    name: Annotated[str, typer.Argument(help="User name: letters, digits, '_', '.', '@', '-'.")],
    role: Annotated[str, typer.Option("--role", help=f"One of {_ROLES}.")],
) -> None:
    """Create a user and print their API token (shown only this once)."""

    def run() -> tuple[User, str]:
        from flextrain.accounts.users import UserError

        with _service() as service:

            def create() -> tuple[User, str]:
                try:
                    return service.users.create(name, role)
                except UserError as exc:
                    if not _exists(service, name):
                        raise
                    raise UserError(
                        f"{exc} Fix: choose another name (a revoked user keeps theirs)."
                    ) from None

            return _audited(service, "users.create", name, create)

    user, token = _guard(run)
    # Only the token goes to stdout, so `TOKEN=$(flextrain users create ...)` works.
    err_console.print(
        f"Created user '{user.name}' with role {user.role.value}. Their token:",
        markup=False,
        highlight=False,
    )
    console.print(token, markup=False, highlight=False, soft_wrap=True)
    err_console.print(
        "It will not be shown again: only its hash is stored. Hand it over now "
        "(lost tokens cannot be recovered; revoke the user and create another).",
        style="yellow",
        markup=False,
        highlight=False,
    )


@users_app.command("list")
def users_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """All users, oldest first; tokens are never shown, only their first characters."""

    def run() -> list[User]:
        with _service() as service:
            return service.users.list_users()

    users = _guard(run)
    if as_json:
        console.print_json(json.dumps([u.model_dump(mode="json") for u in users]))
        return
    table = Table(title="Users (times in UTC)")
    for column in ("name", "role", "token hint", "created", "last used", "revoked"):
        table.add_column(column)
    for u in users:
        table.add_row(
            escape(u.name),
            u.role.value,
            escape(u.token_hint),
            _when(u.created_at),
            _when(u.last_used_at),
            _when(u.revoked_at) if u.revoked_at else "no",
        )
    console.print(table)


@users_app.command("revoke")
def users_revoke(name: Annotated[str, typer.Argument(help="The user to revoke.")]) -> None:
    """Disable a user's token for good; their jobs and audit entries stay."""

    def run() -> tuple[User, bool, bool]:
        with _service() as service:

            def revoke() -> tuple[User, bool]:
                was_active = service.users.get(name).active
                return service.users.revoke(name), was_active

            user, was_active = _audited(service, "users.revoke", name, revoke)
            return user, was_active, service.users.has_admin()

    user, was_active, admin_left = _guard(run)
    if was_active:
        console.print(f"Revoked user '{user.name}': their token no longer works.", markup=False)
    else:
        console.print(f"User '{user.name}' was already revoked.", markup=False)
    if was_active and user.role == Role.ADMIN and not admin_left:
        err_console.print(
            "warning: no active admin is left. Fix: `flextrain users create NAME --role admin`.",
            style="yellow",
            markup=False,
            highlight=False,
        )


def _exists(service: TrainingService, name: str) -> bool:
    from flextrain.accounts.users import UserNotFoundError

    try:
        service.users.get(name)
    except UserNotFoundError:
        return False
    return True


def audit(
    limit: Annotated[int, typer.Option(min=1, help="How many entries.")] = 50,
    actor: Annotated[str | None, typer.Option(help="Only this actor's entries.")] = None,
    outcome: Annotated[
        str | None, typer.Option(help=f"Only entries with this outcome: {', '.join(OUTCOMES)}.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The audit log, newest first: who did what, when, with what outcome."""
    if outcome is not None and outcome not in OUTCOMES:
        raise _fail(
            f"--outcome: '{outcome}' is not an outcome. Fix: use one of {', '.join(OUTCOMES)}.",
            code=2,
        )

    def run() -> list[AuditEntry]:
        with _service() as service:
            return service.audit.entries(limit=limit, actor=actor, outcome=outcome)

    entries = _guard(run)
    if as_json:
        console.print_json(json.dumps([e.model_dump(mode="json") for e in entries]))
        return
    table = Table(title="Audit log (newest first, times in UTC)")
    # Time and outcome stay whole on one line; the other columns wrap to fit.
    for column in ("at", "actor", "action", "target", "outcome", "status", "client", "detail"):
        table.add_column(column, no_wrap=column in ("at", "outcome"), overflow="fold")
    for e in entries:
        table.add_row(
            _when(e.at, "%Y-%m-%d %H:%M:%S"),
            escape(e.actor or "-"),
            escape(e.action),
            escape(e.target or "-"),
            e.outcome,
            str(e.status_code) if e.status_code is not None else "-",
            escape(e.client or "-"),
            escape(e.detail or ""),
        )
    console.print(table)
