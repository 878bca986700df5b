"""Input that SQLite takes and PostgreSQL refuses behaves the same on both.

PostgreSQL raises on a NUL character in any text parameter and on a value
longer than its VARCHAR; SQLite accepts both. Users reach the stores with
arbitrary ids in URLs and names in request bodies, so these must end as
"not found" or a stored value, never as a database error (a 500).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import sessionmaker

from flextrain.accounts.audit import AuditLog
from flextrain.accounts.users import UserNotFoundError, UserStore
from flextrain.config.enums import TrainingMode
from flextrain.config.schemas import BasicTrainingConfig
from flextrain.data.registry import DatasetNotFoundError, DatasetRegistry
from flextrain.db import make_sessionmaker
from flextrain.jobs.store import JobStore
from flextrain.migrations import make_engine
from flextrain.settings import Settings


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    settings.ensure_home()
    engine = make_engine(settings.resolved_database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Any]:
    return make_sessionmaker(engine)


def _config(**extra: Any) -> BasicTrainingConfig:
    return BasicTrainingConfig(
        training_type="lora_adaptation", model_id="m", dataset_id="d", **extra
    )


def test_lookups_by_a_key_with_nul_find_nothing(sessions: sessionmaker[Any]) -> None:
    jobs = JobStore(sessions)
    jobs.create(
        job_id="abc", mode=TrainingMode.BASIC, config=_config(), output_dir="o", log_path="l"
    )
    assert jobs.get("abc\x00'; --") is None
    assert jobs.update("abc\x00", status="failed") is False
    assert jobs.get("abc") is not None

    with pytest.raises(UserNotFoundError):
        UserStore(sessions).get("root\x00")
    with pytest.raises(UserNotFoundError):
        UserStore(sessions).revoke("root\x00")
    assert UserStore(sessions).authenticate("ft_\x00" + "x" * 40) is None
    with pytest.raises(DatasetNotFoundError):
        DatasetRegistry(sessions).get("team\x00/reviews")


def test_text_with_nul_is_stored_with_a_replacement_character(sessions: sessionmaker[Any]) -> None:
    audit = AuditLog(sessions)
    audit.record(actor="a", action="POST /api/training/jobs/{job_id}/start", target="\x00';--")
    (entry,) = audit.entries()
    assert entry.target == "\ufffd';--"

    jobs = JobStore(sessions)
    job = jobs.create(
        job_id="j1",
        mode=TrainingMode.BASIC,
        config=_config(run_name="night\x00run"),
        output_dir="o",
        log_path="l",
    )
    assert jobs.get("j1").run_name == "night\ufffdrun"  # type: ignore[union-attr]
    assert job.config["run_name"] == "night\x00run"  # JSON escapes it: kept as given


def test_a_long_run_name_is_cut_for_display_and_kept_in_the_config(
    sessions: sessionmaker[Any],
) -> None:
    jobs = JobStore(sessions)
    name = "r" * 300
    # Configs cap run_name at 200 now; one made before the cap (not validated again).
    jobs.create(
        job_id="j1",
        mode=TrainingMode.BASIC,
        config=_config().model_copy(update={"run_name": name}),
        output_dir="o",
        log_path="l",
    )
    job = jobs.get("j1")
    assert job is not None
    assert job.run_name == name[:200]
    assert job.config["run_name"] == name


def test_lookups_by_an_overlong_key_find_nothing(sessions: sessionmaker[Any]) -> None:
    assert JobStore(sessions).get("a" * 5000) is None
    with pytest.raises(UserNotFoundError):
        UserStore(sessions).get("u" * 500)
