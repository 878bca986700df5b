"""The job state machine: every forbidden kind of status change is refused.

An explicit compare-and-set naming a forbidden edge raises before the database is
touched; a plain status write to a job in a state that cannot reach the new status
changes nothing. Against the real store (SQLite here, PostgreSQL in
`make test-postgres`).
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import product
from pathlib import Path

import pytest

from flextrain.config.enums import (
    ACTIVE_STATUSES,
    RESUMABLE_STATUSES,
    TrainingMode,
    TrainingStatus,
)
from flextrain.config.schemas import BasicTrainingConfig
from flextrain.db import make_sessionmaker
from flextrain.jobs import lifecycle
from flextrain.jobs.lifecycle import TRANSITIONS, IllegalTransitionError, check_transition
from flextrain.jobs.store import JobStore
from flextrain.migrations import make_engine
from flextrain.settings import Settings
from tests.staging import stage_status

S = TrainingStatus
ALL = list(TrainingStatus)

# Each class of forbidden change, with every edge in it.
FORBIDDEN: dict[str, list[tuple[TrainingStatus, TrainingStatus]]] = {
    "completed is final": [(S.COMPLETED, new) for new in ALL],
    "an ended job only goes back to the queue": [
        (old, new) for old in RESUMABLE_STATUSES for new in ALL if new != S.QUEUED
    ],
    "a started job never goes back to pending, the queue or an earlier step": [
        (old, new)
        for old in ACTIVE_STATUSES
        for new in (S.PENDING, S.QUEUED, S.VALIDATING, S.PREPARING)
        if new != old and (old, new) not in ((S.VALIDATING, S.PREPARING), (S.VALIDATING, S.QUEUED))
    ],
    "nothing skips the queue": [
        (S.PENDING, new)
        for new in (*ACTIVE_STATUSES, S.COMPLETED, S.INTERRUPTED, S.DIVERGED, S.PAUSED, S.PENDING)
    ],
    # (queued -> preparing: the worker a cluster started for a job handed to it.)
    "the queue only leads to validation, a cluster's worker or an end": [
        (S.QUEUED, new) for new in (S.PENDING, S.QUEUED, S.TRAINING, S.EVALUATING, S.COMPLETED)
    ]
    # No worker yet: nothing to interrupt, nothing trained to diverge or checkpoint.
    + [(S.QUEUED, S.INTERRUPTED), (S.QUEUED, S.DIVERGED), (S.QUEUED, S.PAUSED)],
    "training needs a prepared worker": [
        (S.VALIDATING, new) for new in (S.TRAINING, S.EVALUATING, S.COMPLETED, S.VALIDATING)
    ],
}


@pytest.fixture
def store(settings: Settings) -> Iterator[JobStore]:
    settings.ensure_home()
    engine = make_engine(settings.resolved_database_url)
    yield JobStore(make_sessionmaker(engine))
    engine.dispose()


def _job(store: JobStore, status: TrainingStatus) -> str:
    job_id = f"job-{status.value}"
    if store.get(job_id) is None:
        config = BasicTrainingConfig(training_type="fine_tuning", model_id="m", dataset_id="d")
        store.create(
            job_id=job_id, mode=TrainingMode.BASIC, config=config, output_dir="/o", log_path="/l"
        )
    stage_status(store, job_id, status)
    return job_id


def test_the_table_names_every_status() -> None:
    assert set(TRANSITIONS) == set(TrainingStatus)
    assert all(targets <= set(TrainingStatus) for targets in TRANSITIONS.values())


def test_the_forbidden_classes_and_the_table_agree() -> None:
    # Every edge a class forbids is absent from the table, and every edge absent from
    # the table is in some class: the classes describe exactly what the table refuses.
    forbidden = {edge for edges in FORBIDDEN.values() for edge in edges}
    allowed = {(old, new) for old, targets in TRANSITIONS.items() for new in targets}
    assert not forbidden & allowed
    assert forbidden | allowed == set(product(ALL, ALL))


@pytest.mark.parametrize("kind", list(FORBIDDEN))
def test_a_forbidden_change_raises_and_changes_nothing(store: JobStore, kind: str) -> None:
    for old, new in FORBIDDEN[kind]:
        with pytest.raises(IllegalTransitionError, match=f"a {old.value} job cannot become"):
            check_transition(old, new)
        job_id = _job(store, old)
        with pytest.raises(IllegalTransitionError, match=f"Job {job_id}: a {old.value} job"):
            store.transition(job_id, [old], status=new)
        # A plain write to a job that cannot reach the status moves nothing either.
        assert not store.update(job_id, status=new, allow_terminal=True)
        job = store.get(job_id)
        assert job is not None, (old, new)
        assert job.status == old, (old, new)


def test_every_allowed_change_is_made(store: JobStore) -> None:
    for old, targets in TRANSITIONS.items():
        for new in targets:
            job_id = _job(store, old)
            assert store.transition(job_id, [old], status=new), (old, new)
            job = store.get(job_id)
            assert job is not None
            assert job.status == new


def test_a_compare_and_set_that_lost_the_race_returns_false(store: JobStore) -> None:
    # Allowed edges, but the job is elsewhere by now (cancelled meanwhile): no change.
    job_id = _job(store, S.CANCELLED)
    assert not store.transition(job_id, [S.TRAINING], status=S.COMPLETED)
    job = store.get(job_id)
    assert job is not None
    assert job.status == S.CANCELLED


def test_a_worker_cannot_revive_a_cancelled_job(store: JobStore) -> None:
    # The race the table exists for: the user cancels, then the worker's next write lands.
    job_id = _job(store, S.TRAINING)
    assert store.update(job_id, status=S.CANCELLED)
    for worker_write in (S.TRAINING, S.EVALUATING, S.COMPLETED):
        assert not store.update(job_id, status=worker_write, current_step=9)
    job = store.get(job_id)
    assert job is not None
    assert job.status == S.CANCELLED
    assert job.current_step != 9


def test_sources_are_the_table_read_backwards() -> None:
    for new in ALL:
        expected = {old for old, targets in TRANSITIONS.items() if new in targets}
        assert lifecycle.sources(new) == expected
        assert lifecycle.sources(new, terminal=False) == {s for s in expected if not s.is_terminal}


def test_the_architecture_diagram_draws_the_table() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "architecture.md").read_text()
    block = doc.split("stateDiagram-v2", 1)[1].split("```", 1)[0]
    drawn = {
        (S(old), S(new)) for old, _, new in (line.split() for line in block.strip().splitlines())
    }
    allowed = {(old, new) for old, targets in TRANSITIONS.items() for new in targets}
    assert drawn == allowed
