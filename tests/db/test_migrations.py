"""The Alembic revisions build exactly the schema the table classes describe.

`test_upgrade_from_empty_matches_the_models` is the guard for every future
change: alter a table class without a revision (or the other way round) and
it lists the differences. The other tests cover the ways a database reaches
head: fresh, adopted from `create_all` of earlier builds, twice, and from
several processes at once. They run on SQLite, and on PostgreSQL under
`make test-postgres` (the `settings` fixture then points at a fresh database).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, inspect, text

from flextrain import migrations
from flextrain.accounts.users import Role, UserStore
from flextrain.config.enums import TrainingMode
from flextrain.config.schemas import BasicTrainingConfig
from flextrain.db import make_sessionmaker
from flextrain.jobs.store import JobStore
from flextrain.migrations import alembic_config, head_revision, make_engine, metadata
from flextrain.settings import Settings

# Revision 0001's tables (what adoption fills in) and every table at head.
TABLES = {"jobs", "job_metrics", "datasets", "users", "audit_log"}
HEAD_TABLES = TABLES | {"dataset_versions", "job_events", "job_samples", "models"}


@pytest.fixture
def url(settings: Settings) -> str:
    settings.ensure_home()
    return settings.resolved_database_url


@pytest.fixture
def engines() -> Iterator[list[Engine]]:
    """Engines a test opens, disposed at the end whatever happened."""
    opened: list[Engine] = []
    yield opened
    for engine in opened:
        engine.dispose()


def _differences(engine: Engine) -> list[Any]:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, metadata()))


def _versions(engine: Engine) -> list[str]:
    with engine.connect() as connection:
        return list(connection.scalars(text("SELECT version_num FROM alembic_version")))


def _columns(engine: Engine) -> dict[str, list[tuple[str, str, bool]]]:
    found = inspect(engine)
    return {
        t: [(c["name"], str(c["type"]), c["nullable"]) for c in found.get_columns(t)]
        for t in sorted(HEAD_TABLES)
    }


def _add_job(engine: Engine, job_id: str) -> None:
    config = BasicTrainingConfig(training_type="lora_adaptation", model_id="m", dataset_id="d")
    JobStore(make_sessionmaker(engine)).create(
        job_id=job_id, mode=TrainingMode.BASIC, config=config, output_dir="/o", log_path="/l"
    )


def _legacy_schema(engine: Engine, keep: set[str] | None = None) -> None:
    """The schema earlier builds made with create_all: revision 0001's tables (or only
    `keep` of them), without `alembic_version`. Not today's `metadata().create_all`,
    which has every later revision's changes too."""
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), migrations.INITIAL_REVISION)
        connection.execute(text("DROP TABLE alembic_version"))
        for table in ("job_metrics", "audit_log", "users", "datasets", "jobs"):
            if keep is not None and table not in keep:
                connection.execute(text(f"DROP TABLE {table}"))


def _add_legacy_job(engine: Engine, job_id: str) -> None:
    """A job row as an earlier build wrote it (only revision 0001's columns)."""
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO jobs (job_id, mode, training_type, model_id, dataset_id, "
                "config_json, status, progress, current_epoch, total_epochs, current_step, "
                "total_steps, metrics_json, warnings_json, created_at, updated_at) VALUES "
                "(:id, 'basic', 'lora_adaptation', 'm', 'd', '{}', 'pending', 0, 0, 0, 0, 0, "
                "'{}', '[]', :now, :now)"
            ),
            {"id": job_id, "now": "2026-11-01 00:00:00"},
        )


def _plain_engine(url: str, engines: list[Engine]) -> Engine:
    """An engine that touches no schema, as earlier builds' create_all needed."""
    engine = create_engine(url)
    engines.append(engine)
    return engine


def test_upgrade_from_empty_matches_the_models(url: str, engines: list[Engine]) -> None:
    engine = make_engine(url)
    engines.append(engine)
    assert _differences(engine) == []
    assert set(inspect(engine).get_table_names()) == HEAD_TABLES | {"alembic_version"}


def test_alembic_version_holds_the_head_revision(url: str, engines: list[Engine]) -> None:
    engine = make_engine(url)
    engines.append(engine)
    assert _versions(engine) == [head_revision()]
    with engine.connect() as connection:
        assert migrations.current_revision(connection) == head_revision()


def test_the_head_read_without_alembic_is_alembics_head() -> None:
    """Start-up compares the database with the head read from the revision files."""
    assert migrations.head_from_files() == head_revision()


@pytest.mark.parametrize(
    ("revisions", "head"),
    [
        ({"0001": None, "0002": "'0001'", "0003": '"0002"'}, "0003"),
        ({"0001": None, "0002": '"0001"', "0003": '"0001"'}, None),  # a branch
        ({"0001": None, "0002": '"0001"', "0003": '("0001", "0002")'}, None),  # a merge
        ({"0001": None, "0002": "SOME_NAME"}, None),  # not a literal: Alembic decides
    ],
)
def test_head_from_files_reads_only_a_plain_line(
    revisions: dict[str, str | None],
    head: str | None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "versions").mkdir()
    for revision, parent in revisions.items():
        (tmp_path / "versions" / f"{revision}_x.py").write_text(
            f'"""revision {revision}"""\n\nrevision: str = "{revision}"\n'
            f"down_revision: str | None = {parent or 'None'}\n"
        )
    monkeypatch.setattr(migrations, "_SCRIPT_LOCATION", str(tmp_path))
    migrations.head_from_files.cache_clear()
    try:
        assert migrations.head_from_files() == head
    finally:
        migrations.head_from_files.cache_clear()


def test_a_database_at_head_is_opened_without_alembic(url: str, engines: list[Engine]) -> None:
    engines.append(make_engine(url))
    code = textwrap.dedent(
        f"""
        import sys
        from flextrain.migrations import make_engine
        make_engine({url!r}).dispose()
        assert "alembic" not in sys.modules, "alembic was imported"
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_the_job_metrics_foreign_key_cascades(url: str, engines: list[Engine]) -> None:
    engine = make_engine(url)
    engines.append(engine)
    (fk,) = inspect(engine).get_foreign_keys("job_metrics")
    assert fk["referred_table"] == "jobs"
    assert fk["options"].get("ondelete", "").upper() == "CASCADE"
    _add_job(engine, "j1")
    JobStore(make_sessionmaker(engine)).add_metric("j1", step=1, epoch=0.1, values={"loss": 1.0})
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM jobs WHERE job_id = 'j1'"))
        assert connection.scalar(text("SELECT count(*) FROM job_metrics")) == 0


def test_a_create_all_database_is_stamped_and_keeps_its_rows(
    url: str, engines: list[Engine]
) -> None:
    legacy = _plain_engine(url, engines)
    _legacy_schema(legacy)
    _add_legacy_job(legacy, "legacy-job")
    legacy.dispose()

    engine = make_engine(url)
    engines.append(engine)
    assert _versions(engine) == [head_revision()]
    assert _differences(engine) == []
    job = JobStore(make_sessionmaker(engine)).get("legacy-job")
    assert job is not None
    assert job.model_id == "m"


def test_a_database_from_before_the_accounts_tables_gets_them(
    url: str, engines: list[Engine]
) -> None:
    """Builds before users and audit_log existed: adopting adds just those two."""
    legacy = _plain_engine(url, engines)
    _legacy_schema(legacy, keep={"jobs", "job_metrics", "datasets"})
    _add_legacy_job(legacy, "old-job")
    legacy.dispose()

    engine = make_engine(url)
    engines.append(engine)
    assert _differences(engine) == []
    assert JobStore(make_sessionmaker(engine)).get("old-job") is not None
    users = UserStore(make_sessionmaker(engine))
    _, token = users.create("ada", Role.ADMIN)
    assert users.authenticate(token) is not None


def test_make_engine_twice_is_a_no_op(
    url: str, engines: list[Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    first = make_engine(url)
    engines.append(first)
    _add_job(first, "kept")
    before = _columns(first)
    first.dispose()

    def must_not_run(engine: Engine) -> None:
        raise AssertionError("a database at head was upgraded again")

    monkeypatch.setattr(migrations, "_upgrade_locked", must_not_run)
    second = make_engine(url)
    engines.append(second)
    assert _versions(second) == [head_revision()]
    assert _columns(second) == before
    assert JobStore(make_sessionmaker(second)).get("kept") is not None


def test_the_worker_engine_does_not_migrate(url: str, engines: list[Engine]) -> None:
    engine = make_engine(url, migrate=False)
    engines.append(engine)
    assert inspect(engine).get_table_names() == []


def test_in_memory_sqlite_is_migrated_too(engines: list[Engine]) -> None:
    engine = make_engine("sqlite://")
    engines.append(engine)
    assert _differences(engine) == []
    assert _versions(engine) == [head_revision()]


def test_processes_starting_together_all_succeed(url: str, engines: list[Engine]) -> None:
    """The API server and CLI commands opening one fresh database at the same moment."""
    start = time.time() + 3.0  # after every interpreter has imported what it needs
    code = textwrap.dedent(
        f"""
        import time
        from flextrain.migrations import make_engine
        from flextrain.migrations import metadata
        metadata()
        time.sleep(max(0.0, {start!r} - time.time()))
        make_engine({url!r}).dispose()
        """
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=120)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outputs

    engine = make_engine(url)
    engines.append(engine)
    assert _versions(engine) == [head_revision()]
    assert _differences(engine) == []


def test_losing_a_race_to_an_old_create_all_is_recovered(
    url: str, engines: list[Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An older build (no lock, create_all) makes the tables between our check and our DDL.

    The first attempt then fails on real "table exists" errors; the second
    finds a pre-migration database and adopts it.
    """
    real = migrations._upgrade_locked
    attempts: list[str] = []

    def interleaved(engine: Engine) -> None:
        attempts.append("try")
        if len(attempts) == 1:
            other = _plain_engine(url, engines)
            _legacy_schema(other)
            _add_legacy_job(other, "theirs")
            other.dispose()
            # Our upgrade, run as if its check had happened before their tables existed.
            with engine.begin() as connection:
                command.upgrade(alembic_config(connection), "head")
        real(engine)

    monkeypatch.setattr(migrations, "_upgrade_locked", interleaved)
    engine = make_engine(url)
    engines.append(engine)
    assert attempts == ["try", "try"]
    assert _versions(engine) == [head_revision()]
    assert _differences(engine) == []
    assert JobStore(make_sessionmaker(engine)).get("theirs") is not None


def test_adoption_knows_every_table_of_revision_0001() -> None:
    """Adoption fills in 0001's tables and stamps 0001: the two lists must agree."""
    script = ScriptDirectory.from_config(alembic_config())
    initial = script.get_revision(migrations.INITIAL_REVISION)
    assert initial is not None
    assert initial.down_revision is None
    assert set(initial.module.TABLES) == migrations.LEGACY_TABLES == TABLES


def test_a_database_from_a_newer_flextrain_is_refused_clearly(
    url: str, engines: list[Engine]
) -> None:
    engine = make_engine(url)
    engines.append(engine)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    with pytest.raises(migrations.DatabaseTooNewError, match=r"revision 9999.*Fix: upgrade"):
        make_engine(url)


def test_revision_0004_queues_nothing_and_goes_back_cleanly(
    url: str, engines: list[Engine]
) -> None:
    """Jobs from before the queue get the default priority and no queue fields; the
    revision's downgrade drops exactly its columns."""
    engine = _plain_engine(url, engines)
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), "0003")
    _add_legacy_job(engine, "before")
    engine.dispose()
    upgraded = make_engine(url)
    engines.append(upgraded)
    job = JobStore(make_sessionmaker(upgraded)).get("before")
    assert job is not None
    assert (job.priority, job.queued_at, job.wait_reason, job.allocation) == (0, None, None, None)
    queue_columns = {"priority", "queued_at", "wait_reason", "allocation"}
    assert queue_columns <= {c["name"] for c in inspect(upgraded).get_columns("jobs")}
    with upgraded.begin() as connection:
        command.downgrade(alembic_config(connection), "0003")
    upgraded.dispose()
    left = {c["name"] for c in inspect(upgraded).get_columns("jobs")}
    assert left & queue_columns == set()
    assert "resume_count" in left


def test_revision_0009_makes_each_registration_version_1_and_goes_back_to_the_latest(
    url: str, engines: list[Engine]
) -> None:
    """Registrations from before model versions become version 1 of their name; the
    downgrade keeps each name's latest version (the old layout holds one per name)."""
    engine = _plain_engine(url, engines)
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), "0008")
        connection.execute(
            text(
                "INSERT INTO models (name, path, source, adapter, training_types, description, "
                "created_at) VALUES ('team/llama', '/m/one', 'local', false, '[]', 'mine', "
                "'2026-11-30 00:00:00')"
            )
        )
    engine.dispose()
    upgraded = make_engine(url)
    engines.append(upgraded)
    assert _differences(upgraded) == []
    with upgraded.begin() as connection:
        rows = connection.execute(text("SELECT name, version, path, config_hash FROM models"))
        assert [tuple(r) for r in rows] == [("team/llama", 1, "/m/one", None)]
        connection.execute(
            text(
                "INSERT INTO models (name, version, path, source, adapter, training_types, "
                "description, created_at) VALUES ('team/llama', 2, '/m/two', 'local', false, "
                "'[]', '', '2026-12-01 00:00:00')"
            )
        )
        command.downgrade(alembic_config(connection), "0008")
    with upgraded.connect() as connection:
        rows = connection.execute(text("SELECT name, path, description FROM models"))
        assert [tuple(r) for r in rows] == [("team/llama", "/m/two", "")]
    assert "version" not in {c["name"] for c in inspect(upgraded).get_columns("models")}
    assert [i["name"] for i in inspect(upgraded).get_indexes("models")] == ["ix_models_job_id"]
