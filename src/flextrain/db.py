"""Database engine and the declarative base every table shares.

SQLite is the default; WAL and a busy timeout let the worker write progress
while the CLI or API reads it from another process without "database is
locked" errors. PostgreSQL (`postgresql+psycopg://...`) serves a team server.
The schema comes from the Alembic revisions in `flextrain.migrations`.

PostgreSQL cannot hold a NUL character in text, and raises on any statement
that sends one; SQLite stores it. So that a job id, user name or audited path
with a NUL in it behaves alike everywhere (a lookup finds nothing, a write
succeeds), every engine turns NUL in string parameters into U+FFFD.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import DeclarativeBase, sessionmaker


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


class DatabaseTooNewError(RuntimeError):
    """The database was migrated by a newer flextrain than this one knows."""


def make_engine(url: str, *, migrate: bool = True) -> Engine:
    """Create the engine for `url`; with `migrate`, bring its schema to the latest revision.

    Front ends that own the database (the service, hence the CLI and API)
    migrate at start-up. Processes started by one of them, like the worker,
    pass `migrate=False`: their parent has already brought the schema up to
    date, and checking again in every worker would only slow its start.
    Raises DatabaseTooNewError for a database a newer flextrain has migrated.
    """
    is_sqlite = url.startswith("sqlite")
    connect_args: dict[str, Any] = {"timeout": 30} if is_sqlite else {}
    engine = create_engine(url, connect_args=connect_args)
    if is_sqlite:

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

    @event.listens_for(engine, "before_cursor_execute", retval=True)
    def _no_nul(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> tuple[str, Any]:
        return statement, _without_nul(parameters)

    if migrate:
        from flextrain.migrations import upgrade  # alembic is only needed here

        upgrade(engine)
    return engine


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
