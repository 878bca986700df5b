"""The database schema as a chain of Alembic revisions, applied at start-up.

Alembic is configured in code (no alembic.ini): a user's database lives
wherever FLEXTRAIN_HOME or FLEXTRAIN_DATABASE_URL says, so `make_engine`
passes its own connection in and `env.py` runs the revisions on it.

Several processes may start at once on one database (the API server and a
CLI command, two CLI commands). The upgrade therefore runs in one transaction
that holds the database's write lock (SQLite: BEGIN IMMEDIATE; PostgreSQL: an
advisory lock), re-reads the revision inside it, and, should some process
without that lock (an older flextrain running `create_all`) still get in the
way, re-checks afterwards and carries on if the database ended up at head.

Databases made by `create_all` before migrations existed have the tables but
no `alembic_version`: they are adopted, i.e. given whichever tables of
revision 0001 they lack (builds before the accounts work had no `users` or
`audit_log`), stamped at 0001, then upgraded like any other.

Alembic itself (with Mako and SQLAlchemy's PostgreSQL dialect, a tenth of a
second or more) is imported only when there is something to do: the usual
start-up, a database already at head, is one query against `alembic_version`
compared with the head read from the revision files' `revision = ...` lines.

To write a new revision after changing a table class, generate it against a
database at head and review it (tests/db/test_migrations.py fails until the
revisions and the models agree):

    from alembic import command
    from flextrain.migrations import alembic_config, make_engine

    engine = make_engine("sqlite:////tmp/at-head.db")
    with engine.begin() as connection:
        command.revision(
            alembic_config(connection), message="add jobs.priority",
            autogenerate=True, rev_id="0002",
        )
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, MetaData, create_engine, event, inspect, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from flextrain.db import Base, DatabaseTooNewError, connect

if TYPE_CHECKING:
    from alembic.config import Config

INITIAL_REVISION = "0001"
# The tables `Base.metadata.create_all` made before there were migrations.
LEGACY_TABLES = frozenset({"jobs", "job_metrics", "datasets", "users", "audit_log"})
# Key of the PostgreSQL advisory lock that serialises upgrades ("flex" in ASCII).
_PG_LOCK_KEY = 0x666C6578
_ATTEMPTS = 3
_SCRIPT_LOCATION = str(Path(__file__).resolve().parent)
# `revision: str = "0003"` and `down_revision: ... = "0002"` in a revision file.
_REVISION_LINE = re.compile(r"^(revision|down_revision)\b[^=\n]*=\s*(.+?)\s*$", re.MULTILINE)


def make_engine(url: str, *, migrate: bool = True, wait_s: float | None = None) -> Engine:
    """The engine for `url`; with `migrate`, its schema brought to the latest revision.

    Front ends that own the database (the service, hence the CLI and API)
    migrate at start-up. Processes started by one of them, like the worker,
    pass `migrate=False`: their parent has already brought the schema up to
    date, and checking again in every worker would only slow its start.
    Raises DatabaseTooNewError for a database a newer flextrain has migrated.
    `wait_s`: see `flextrain.db.connect`.
    """
    engine = connect(url, wait_s=wait_s)
    if migrate:
        upgrade(engine)
    return engine


def metadata() -> MetaData:
    """`Base.metadata` with every table class registered on it."""
    import flextrain.accounts.audit
    import flextrain.accounts.users
    import flextrain.data.registry
    import flextrain.data.versions
    import flextrain.jobs.store
    import flextrain.models.registry  # noqa: F401

    return Base.metadata


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config for this package's revisions, running on `connection`."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", _SCRIPT_LOCATION)
    config.attributes["connection"] = connection
    return config


@lru_cache(maxsize=1)
def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships 0001
        raise RuntimeError(f"No Alembic revisions found in {_SCRIPT_LOCATION}/versions.")
    return head


def current_revision(connection: Connection) -> str | None:
    """The revision the database is at; None when it has no `alembic_version`."""
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine) -> None:
    """Bring the database behind `engine` to the head revision (a no-op when it is there)."""
    plain_head = head_from_files()
    if plain_head is not None and _stored_versions(engine) == [plain_head]:
        return  # the usual start-up: one read, no lock, no Alembic
    head = head_revision()
    current = _revision_of(engine)
    if current == head:
        return
    if current is not None and not _known(current):
        raise DatabaseTooNewError(
            f"The database is at schema revision {current}, which this flextrain does not "
            f"know (it knows up to {head}): a newer flextrain has upgraded it. Fix: upgrade "
            "flextrain, or point FLEXTRAIN_DATABASE_URL / FLEXTRAIN_HOME elsewhere."
        )
    try:
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                _upgrade_locked(engine)
                return
            except DBAPIError:
                # Lost a race against a process that does not take the lock (an
                # older build's create_all): if the database is now complete,
                # fine; if not, the next attempt sees the new tables, adopts them.
                if _revision_of(engine) == head:
                    return
                if attempt == _ATTEMPTS:
                    raise
    finally:
        # The pooled connection of the check above predates the new tables, and
        # SQLite answers PRAGMAs (foreign keys, table info) from a stale schema.
        # (An in-memory database lives only in that connection: keep it.)
        if not _in_memory(engine):
            engine.dispose()


@lru_cache(maxsize=1)
def head_from_files() -> str | None:
    """The head revision as the revision files state it, read without importing Alembic.

    None unless the revisions form one plain line (no branches, no merges, every
    file read): then Alembic decides. tests/db/test_migrations.py checks that
    this agrees with `head_revision()`.
    """
    parents: dict[str, str | None] = {}
    for path in sorted((Path(_SCRIPT_LOCATION) / "versions").glob("*.py")):
        if path.name.startswith("__"):
            continue
        found = dict(_REVISION_LINE.findall(path.read_text()))
        try:
            revision = ast.literal_eval(found["revision"])
            parent = ast.literal_eval(found["down_revision"])
        except (KeyError, ValueError, SyntaxError):
            return None
        if not isinstance(revision, str) or not (parent is None or isinstance(parent, str)):
            return None
        parents[revision] = parent
    heads = set(parents) - set(parents.values())
    if len(heads) != 1 or sum(p is None for p in parents.values()) != 1:
        return None
    return heads.pop()


def _stored_versions(engine: Engine) -> list[str] | None:
    """The rows of `alembic_version`; None when the table does not exist."""
    with engine.connect() as connection:
        if not inspect(connection).has_table("alembic_version"):
            return None
        return list(connection.execute(text("SELECT version_num FROM alembic_version")).scalars())


def _known(revision: str) -> bool:
    from alembic.script import ScriptDirectory
    from alembic.util.exc import CommandError

    try:
        return ScriptDirectory.from_config(alembic_config()).get_revision(revision) is not None
    except CommandError:
        return False


def _revision_of(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return current_revision(connection)


def _upgrade_locked(engine: Engine) -> None:
    from alembic import command

    with _locking_engine(engine) as locking, locking.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        # Read again under the lock: another process may have finished meanwhile.
        config = alembic_config(connection)
        if current_revision(connection) is None:
            legacy = set(inspect(connection).get_table_names()) & LEGACY_TABLES
            if legacy:
                _adopt(connection, config, legacy)
        command.upgrade(config, "head")


def _adopt(connection: Connection, config: Config, existing: set[str]) -> None:
    """Give a pre-migration database the 0001 tables it lacks, then stamp it at 0001."""
    from alembic import command
    from alembic.operations import Operations
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    initial = ScriptDirectory.from_config(config).get_revision(INITIAL_REVISION)
    if initial is None:  # pragma: no cover - shipped with the package
        raise RuntimeError(f"Revision {INITIAL_REVISION} is missing from {_SCRIPT_LOCATION}.")
    with Operations.context(MigrationContext.configure(connection)):
        initial.module.create_tables(skip=existing)
    command.stamp(config, INITIAL_REVISION)


def _in_memory(engine: Engine) -> bool:
    database = engine.url.database
    return engine.dialect.name == "sqlite" and (not database or database == ":memory:")


@contextmanager
def _locking_engine(engine: Engine) -> Iterator[Engine]:
    """An engine whose transactions hold the database's write lock from BEGIN on.

    pysqlite starts a transaction only before INSERT/UPDATE/DELETE and runs DDL
    in autocommit, so two processes could interleave their CREATE TABLEs. For
    a SQLite file this opens a short-lived engine with the driver's own
    transaction handling off that issues BEGIN IMMEDIATE itself, which makes
    the whole upgrade one transaction and makes a second process wait for it.
    """
    if engine.dialect.name != "sqlite" or _in_memory(engine):
        yield engine  # PostgreSQL has transactional DDL; in-memory SQLite has one user
        return
    locking = create_engine(
        engine.url, connect_args={"timeout": 30, "isolation_level": None}, poolclass=NullPool
    )

    @event.listens_for(locking, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(locking, "begin")
    def _begin_immediate(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    try:
        yield locking
    finally:
        locking.dispose()
