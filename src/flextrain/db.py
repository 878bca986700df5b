"""Database engine and the declarative base every table shares.

SQLite is the default; WAL and a busy timeout let the worker write progress
while the CLI or API reads it from another process without "database is
locked" errors. PostgreSQL (`postgresql+psycopg://...`) serves a team server.
The schema comes from the Alembic revisions in `flextrain.migrations`.

Every engine has a wait budget (`DEFAULT_WAIT_S`, or the SQLite URL's own
`?timeout=` in seconds): SQLite's busy handler waits that long for another
writer's lock, and `JobStore` retries a write refused by a lock or a dropped
connection until the budget is spent. Past it, the driver's error becomes
StoreUnavailableError, which names the database, the wait and the fix, so no
front end shows a driver traceback for what is a busy or briefly absent database.

PostgreSQL cannot hold a NUL character in text, and raises on any statement
that sends one; SQLite stores it. So that a job id, user name or audited path
with a NUL in it behaves alike everywhere (a lookup finds nothing, a write
succeeds), every engine turns NUL in string parameters into U+FFFD.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, ExceptionContext, make_url
from sqlalchemy.orm import DeclarativeBase, sessionmaker

from flextrain.errors import UnavailableError

# How long a write waits for a locked or unreachable database before giving up:
# long enough for any lock flextrain itself takes (a migration, a big insert),
# short enough that a stuck lock is reported while someone is still looking.
DEFAULT_WAIT_S = 30.0
_WAIT_OPTION = "flextrain_wait_s"


class Base(DeclarativeBase):
    pass


def as_utc(value: datetime | None) -> datetime | None:
    """Every stored time in UTC with an explicit offset, whatever the backend: SQLite
    hands back naive datetimes (flextrain only writes UTC), PostgreSQL aware ones in
    the server's time zone."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


class DatabaseTooNewError(UnavailableError, RuntimeError):
    """The database was migrated by a newer flextrain than this one knows."""

    code = "database_too_new"
    field = "database"


class StoreUnavailableError(UnavailableError, RuntimeError):
    """The database stayed locked by another process, or unreachable, past the wait budget.

    `retry_safe` says whether the refused statement certainly did not run (a lock
    refused it, or the connection could not be made): only then may the whole
    transaction be run again without doing it twice.
    """

    code = "store_unavailable"
    field = "database"
    retry_after = 5

    def __init__(self, database: str, reason: str, waited_s: float, *, retry_safe: bool) -> None:
        self.database = database
        self.reason = reason
        self.waited_s = waited_s
        self.retry_safe = retry_safe
        fix = (
            "retry when the other process is done; if it stays locked, look for a process "
            "holding the database open in a transaction (a sqlite3 shell, a backup, a "
            "stuck flextrain)"
            if "locked" in reason
            else "retry in a moment; if it persists, check that the database server is "
            "running and reachable, and FLEXTRAIN_DATABASE_URL"
        )
        super().__init__(
            f"The job database {database} {reason} (waited {waited_s:.1f} s). Fix: {fix}."
        )

    def after(self, waited_s: float) -> StoreUnavailableError:
        """The same error, reporting the whole time spent waiting and retrying."""
        return StoreUnavailableError(
            self.database, self.reason, waited_s, retry_safe=self.retry_safe
        )


def database_label(url: str | URL) -> str:
    """The database as a user can find it: a SQLite file's path, a server's URL
    without its password."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return f"'{parsed.database or ':memory:'}'"
    return f"'{parsed.render_as_string(hide_password=True)}'"


def wait_budget(engine: Engine) -> float:
    """Seconds a statement on `engine` may wait for a lock or a connection in all."""
    return float(engine.get_execution_options().get(_WAIT_OPTION, DEFAULT_WAIT_S))


def connect(url: str, *, wait_s: float | None = None) -> Engine:
    """The engine for `url`, its schema as it is (`flextrain.migrations.make_engine`
    brings it up to date first; this module knows no tables, so every store can
    import it).

    `wait_s` is the wait budget (see the module's note); without it, a SQLite
    URL's `?timeout=SECONDS`, else DEFAULT_WAIT_S. The worker gets the same URL
    as its parent, so both wait alike.
    """
    parsed = make_url(url)
    is_sqlite = parsed.get_backend_name() == "sqlite"
    if wait_s is None:
        timeout = parsed.query.get("timeout") if is_sqlite else None
        wait_s = float(timeout) if isinstance(timeout, str) else DEFAULT_WAIT_S
    connect_args: dict[str, Any] = {"timeout": wait_s} if is_sqlite else {}
    engine = create_engine(
        url,
        connect_args=connect_args,
        # A pooled connection to a server that restarted is tested and replaced
        # before use, instead of failing the statement (SQLite has no server).
        pool_pre_ping=not is_sqlite,
        execution_options={_WAIT_OPTION: wait_s},
    )
    if is_sqlite:
        busy_ms = int(wait_s * 1000)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

    connected = False

    @event.listens_for(engine, "first_connect")
    def _first_connect(_dbapi_conn: Any, _record: Any) -> None:
        nonlocal connected
        connected = True

    label = database_label(parsed)

    @event.listens_for(engine, "handle_error")
    def _unavailable(context: ExceptionContext) -> None:
        error = _unavailable_error(context, label, wait_s, connected=connected)
        if error is not None:
            raise error from context.original_exception

    @event.listens_for(engine, "before_cursor_execute", retval=True)
    def _no_nul(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> tuple[str, Any]:
        return statement, _without_nul(parameters)

    return engine


def _unavailable_error(
    context: ExceptionContext, label: str, wait_s: float, *, connected: bool
) -> StoreUnavailableError | None:
    """The StoreUnavailableError a driver error means, or None for any other error.

    A connection that cannot be made is "unavailable" only once this engine has
    connected before: a first connection that fails is a wrong URL or a server
    that is not there, which waiting would not fix (and the CLI says so at once).
    """
    exc = context.original_exception
    if isinstance(exc, sqlite3.OperationalError):
        text = str(exc)
        if "database is locked" in text or "database is busy" in text:
            # Refused before it ran: SQLite took no lock, wrote nothing.
            return StoreUnavailableError(
                label, "is locked by another process", wait_s, retry_safe=True
            )
        return None
    if context.connection is None and connected:
        return StoreUnavailableError(label, "cannot be reached", 0.0, retry_safe=True)
    if context.is_disconnect and connected:
        # The statement may or may not have been applied: report, do not repeat.
        return StoreUnavailableError(label, "dropped the connection", 0.0, retry_safe=False)
    return None


def _without_nul(parameters: Any) -> Any:
    """The DB-API parameters (a mapping, a sequence, or a list of either) without NUL."""
    if isinstance(parameters, str):
        return parameters.replace("\x00", "\ufffd") if "\x00" in parameters else parameters
    if isinstance(parameters, dict):
        return {key: _without_nul(value) for key, value in parameters.items()}
    if isinstance(parameters, list | tuple):
        return type(parameters)(_without_nul(value) for value in parameters)
    return parameters


def make_sessionmaker(engine: Engine) -> sessionmaker[Any]:
    return sessionmaker(engine, expire_on_commit=False)
