"""Persistent job records, shared by every process through the database.

The worker writes status and progress; front ends read them. Writes that
would move a job out of a terminal state are refused at the SQL level (a
conditional UPDATE), so a worker finishing a step cannot overwrite the
CANCELLED a user set a moment earlier.

Every method is one transaction and is retried as a whole, with backoff, when
the database refused it for a lock or a connection it could not make (see
`flextrain.db`), until the engine's wait budget is spent; then the
StoreUnavailableError says which database, how long and what to do. A worker's
progress write that meets a brief lock therefore waits instead of failing the run.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, Literal, ParamSpec, TypeVar

from pydantic import BaseModel, Field, PrivateAttr
from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    delete,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Mapped, mapped_column, sessionmaker

from flextrain.config.enums import (
    ACTIVE_STATUSES,
    TERMINAL_STATUSES,
    TrainingMode,
    TrainingStatus,
    TrainingType,
)
from flextrain.config.schemas import (
    AdvancedTrainingConfig,
    BasicTrainingConfig,
    ExpertTrainingConfig,
    explicit_fields,
    restore_config,
)
from flextrain.db import DEFAULT_WAIT_S, Base, StoreUnavailableError, as_utc, wait_budget
from flextrain.jobs import lifecycle
from flextrain.jobs.resources import Layout

ConfigT = TypeVar("ConfigT", bound=BasicTrainingConfig)
P = ParamSpec("P")
R = TypeVar("R")


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(value: datetime) -> str:
    aware = as_utc(value)
    return aware.isoformat() if aware else ""


def _cut(text: str | None, length: int) -> str | None:
    """A display copy cut to its column: PostgreSQL enforces lengths, SQLite does not."""
    return text[:length] if text else text


class JobRecord(Base):
    __tablename__ = "jobs"
    # Job lists are newest first, a page at a time, polled by every open dashboard: the
    # index lets the database read one page in order instead of sorting the whole table.
    __table_args__ = (Index("ix_jobs_created_at_job_id", "created_at", "job_id"),)

    job_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    run_name: Mapped[str | None] = mapped_column(String(200))
    mode: Mapped[str] = mapped_column(String(16))
    training_type: Mapped[str] = mapped_column(String(32))
    model_id: Mapped[str] = mapped_column(String(500))
    dataset_id: Mapped[str] = mapped_column(String(500))
    config_json: Mapped[str] = mapped_column(Text)
    # JSON list of the config fields the user gave (None: a row from before 0007).
    config_fields_json: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), index=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    current_epoch: Mapped[float] = mapped_column(Float, default=0.0)
    total_epochs: Mapped[int] = mapped_column(Integer, default=0)
    current_step: Mapped[int] = mapped_column(Integer, default=0)
    total_steps: Mapped[int] = mapped_column(Integer, default=0)
    loss: Mapped[float | None] = mapped_column(Float)
    eval_loss: Mapped[float | None] = mapped_column(Float)
    learning_rate: Mapped[float | None] = mapped_column(Float)
    metrics_json: Mapped[str] = mapped_column(Text, default="{}")
    warnings_json: Mapped[str] = mapped_column(Text, default="[]")
    error_message: Mapped[str | None] = mapped_column(Text)
    output_dir: Mapped[str | None] = mapped_column(String(2000))
    model_path: Mapped[str | None] = mapped_column(String(2000))
    log_path: Mapped[str | None] = mapped_column(String(2000))
    pid: Mapped[int | None] = mapped_column(Integer)
    pid_started_at: Mapped[float | None] = mapped_column(Float)
    owner: Mapped[str | None] = mapped_column(String(200))
    dataset_version: Mapped[str | None] = mapped_column(String(64))
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    worker_host: Mapped[str | None] = mapped_column(String(255))
    resume_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    priority: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    queued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    wait_reason: Mapped[str | None] = mapped_column(Text)
    allocation: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    # Where a cluster executor placed the job (0008): its name and the cluster's job id.
    executor: Mapped[str | None] = mapped_column(String(32))
    cluster_job_id: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class MetricRecord(Base):
    """One logging step of one job: the history behind loss curves."""

    __tablename__ = "job_metrics"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("jobs.job_id", ondelete="CASCADE"), index=True
    )
    step: Mapped[int] = mapped_column(Integer)
    epoch: Mapped[float | None] = mapped_column(Float)
    values_json: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class EventRecord(Base):
    """Something a user should know about a run: a warning, a resume, an interruption."""

    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("jobs.job_id", ondelete="CASCADE"), index=True
    )
    level: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text)
    data_json: Mapped[str] = mapped_column(Text, default="{}")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class SampleRecord(Base):
    """One system-metric sample (CPU, memory, GPU) taken by the worker's monitor."""

    __tablename__ = "job_samples"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("jobs.job_id", ondelete="CASCADE"), index=True
    )
    values_json: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class JobEvent(BaseModel):
    id: int
    job_id: str
    level: Literal["info", "warning", "error"]
    kind: str = Field(description="e.g. memory_warning, interrupted, resumed, early_stopped.")
    message: str
    data: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime


class TrainingJob(BaseModel):
    """A training job as every front end sees it."""

    job_id: str
    run_name: str | None = None
    mode: TrainingMode
    training_type: TrainingType
    model_id: str
    dataset_id: str
    config: dict[str, Any]
    config_fields: list[str] | None = Field(
        None,
        description="The config fields given explicitly (by the user, a preset or the "
        "service); the others are defaults. None for jobs created before it was kept.",
    )
    status: TrainingStatus
    progress: float = Field(0.0, description="Fraction of optimizer steps done, 0 to 1.")
    current_epoch: float = 0.0
    total_epochs: int = 0
    current_step: int = 0
    total_steps: int = 0
    loss: float | None = None
    eval_loss: float | None = None
    learning_rate: float | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    warnings: list[str] = Field(default_factory=list)
    error_message: str | None = None
    output_dir: str | None = None
    model_path: str | None = None
    log_path: str | None = None
    pid: int | None = None
    owner: str | None = None
    dataset_version: str | None = Field(None, description="SHA-256 of the data it trained on.")
    heartbeat_at: datetime | None = Field(None, description="Last sign of life of the worker.")
    worker_host: str | None = Field(None, description="Host name the worker runs on.")
    resume_count: int = Field(0, description="Times the job was resumed from a checkpoint.")
    priority: int = Field(
        0, description="Queue order: higher starts first; equal priorities start in order."
    )
    queued_at: datetime | None = Field(None, description="When the job last entered the queue.")
    wait_reason: str | None = Field(
        None, description="Why a queued job is not running yet, in words."
    )
    allocation: dict[str, Any] | None = Field(
        None,
        description="What the scheduler reserved for the run: `gpus` (indices it sees) and "
        "`threads` (CPU threads per process).",
    )
    executor: str | None = Field(
        None, description="The executor that runs it: local, slurm or ray (None: local)."
    )
    cluster_job_id: str | None = Field(
        None,
        description="The cluster's own id for the job (Slurm job id, Ray submission id), "
        "set once it was handed to the cluster; the cluster then queues and places it.",
    )
    created_at: datetime
    started_at: datetime | None = None
    completed_at: datetime | None = None
    updated_at: datetime

    # When the worker `pid` started, read with it: tells that worker from a recycled pid
    # without another query (not part of the API: a detail of this host's processes).
    _pid_started_at: float | None = PrivateAttr(default=None)
    _typed: BasicTrainingConfig | None = PrivateAttr(default=None)
    _settings: ExpertTrainingConfig | None = PrivateAttr(default=None)

    @property
    def training_mode(self) -> TrainingMode:
        """The original module's name for `mode`."""
        return self.mode

    @property
    def is_finished(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def pid_started_at(self) -> float | None:
        return self._pid_started_at

    def typed_config(self) -> BasicTrainingConfig:
        """The job's config as it was created, typed: its values, and the fields it was
        given (a default stays a default when the job is re-validated at start). Read
        once per job object: the stored JSON does not change under it."""
        if self._typed is None:
            cls: type[BasicTrainingConfig] = (
                BasicTrainingConfig
                if self.mode == TrainingMode.BASIC
                else ExpertTrainingConfig
                if self.mode == TrainingMode.EXPERT
                else AdvancedTrainingConfig
            )
            self._typed = restore_config(cls, self.config, self.config_fields)
        return self._typed

    @property
    def settings(self) -> ExpertTrainingConfig:
        """Every setting of the job, typed (Expert holds them all, at their defaults
        where the job's mode has no such field)."""
        if self._settings is None:
            self._settings = ExpertTrainingConfig.from_basic(self.typed_config())
        return self._settings

    @property
    def layout(self) -> Layout:
        """Its processes, nodes and threads (see `jobs.resources.Layout`)."""
        return Layout.of(self.settings)

    def pinned_config(self) -> AdvancedTrainingConfig:
        """The job's config with every field (Advanced), on exactly the dataset version
        it was created with."""
        return pin_dataset(AdvancedTrainingConfig.from_basic(self.typed_config()), self)

    @classmethod
    def from_record(cls, r: JobRecord) -> TrainingJob:
        # Rows are ours and typed by their columns: construct without validating, a tenth
        # of the cost of a page of jobs that every open dashboard polls.
        job = cls.model_construct(
            job_id=r.job_id,
            run_name=r.run_name,
            mode=TrainingMode(r.mode),
            training_type=TrainingType(r.training_type),
            model_id=r.model_id,
            dataset_id=r.dataset_id,
            config=json.loads(r.config_json),
            config_fields=json.loads(r.config_fields_json) if r.config_fields_json else None,
            status=TrainingStatus(r.status),
            progress=r.progress,
            current_epoch=r.current_epoch,
            total_epochs=r.total_epochs,
            current_step=r.current_step,
            total_steps=r.total_steps,
            loss=r.loss,
            eval_loss=r.eval_loss,
            learning_rate=r.learning_rate,
            metrics=json.loads(r.metrics_json or "{}"),
            warnings=json.loads(r.warnings_json or "[]"),
            error_message=r.error_message,
            output_dir=r.output_dir,
            model_path=r.model_path,
            log_path=r.log_path,
            pid=r.pid,
            owner=r.owner,
            dataset_version=r.dataset_version,
            heartbeat_at=as_utc(r.heartbeat_at),
            worker_host=r.worker_host,
            resume_count=r.resume_count or 0,
            priority=r.priority or 0,
            queued_at=as_utc(r.queued_at),
            wait_reason=r.wait_reason,
            allocation=r.allocation,
            executor=r.executor,
            cluster_job_id=r.cluster_job_id,
            created_at=as_utc(r.created_at) or r.created_at,
            started_at=as_utc(r.started_at),
            completed_at=as_utc(r.completed_at),
            updated_at=as_utc(r.updated_at) or r.updated_at,
        )
        job._pid_started_at = r.pid_started_at
        return job


_TERMINAL = [s.value for s in TERMINAL_STATUSES]

# First pause between attempts, doubled each time up to the cap.
_FIRST_PAUSE_S, _MAX_PAUSE_S = 0.05, 2.0


def _retried(method: Callable[P, R]) -> Callable[P, R]:
    """Run a JobStore method again while the database is briefly unavailable.

    Only errors raised before the transaction could apply anything are retried
    (`retry_safe`), so no write happens twice. The budget is the engine's: a lock
    SQLite's busy handler already waited out spends it in one attempt.
    """

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        store = args[0]
        assert isinstance(store, JobStore)
        started = time.monotonic()
        pause = _FIRST_PAUSE_S
        while True:
            try:
                return method(*args, **kwargs)
            except StoreUnavailableError as exc:
                waited = time.monotonic() - started
                if not exc.retry_safe or waited + pause > store.wait_s:
                    raise exc.after(max(waited, exc.waited_s)) from exc
            time.sleep(pause)
            pause = min(pause * 2, _MAX_PAUSE_S)

    return wrapper


def pin_dataset(config: ConfigT, job: TrainingJob) -> ConfigT:
    """`config` on exactly the dataset version `job` was created with (a dataset may
    have had new versions uploaded since)."""
    if not job.dataset_version:
        return config
    name = config.dataset_id.rpartition("@")[0] or config.dataset_id
    return config.model_copy(update={"dataset_id": f"{name}@{job.dataset_version}"})


class JobStore:
    """CRUD over jobs and their metric history."""

    def __init__(self, sessions: sessionmaker[Any]) -> None:
        self._sessions = sessions
        bind = sessions.kw.get("bind")
        self.wait_s = wait_budget(bind) if bind is not None else DEFAULT_WAIT_S

    @_retried
    def create(
        self,
        *,
        job_id: str,
        mode: TrainingMode,
        config: BasicTrainingConfig,
        output_dir: str,
        log_path: str,
        warnings: list[str] | None = None,
        owner: str | None = None,
        dataset_version: str | None = None,
        priority: int = 0,
    ) -> TrainingJob:
        """Record a PENDING job with `config`: its values and which fields were given
        (`typed_config` restores both), the one place a job's config is written."""
        record = JobRecord(
            job_id=job_id,
            run_name=_cut(config.run_name, 200),
            mode=mode.value,
            training_type=TrainingType(config.training_type).value,
            model_id=config.model_id,
            dataset_id=config.dataset_id,
            config_json=config.model_dump_json(),
            config_fields_json=json.dumps(explicit_fields(config)),
            status=TrainingStatus.PENDING.value,
            total_epochs=int(config.num_epochs),
            warnings_json=json.dumps(warnings or []),
            output_dir=output_dir,
            log_path=log_path,
            owner=owner,
            dataset_version=dataset_version,
            priority=priority,
        )
        with self._sessions.begin() as session:
            session.add(record)
            session.flush()
            return TrainingJob.from_record(record)

    @_retried
    def get(self, job_id: str) -> TrainingJob | None:
        with self._sessions() as session:
            record = session.get(JobRecord, job_id)
            return TrainingJob.from_record(record) if record else None

    @_retried
    def list_jobs(
        self,
        *,
        status: TrainingStatus | None = None,
        owner: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[TrainingJob]:
        """Newest first; `owner` restricts to one user's jobs."""
        query = select(JobRecord).order_by(JobRecord.created_at.desc(), JobRecord.job_id)
        if status is not None:
            query = query.where(JobRecord.status == status.value)
        if owner is not None:
            query = query.where(JobRecord.owner == owner)
        with self._sessions() as session:
            records = session.scalars(query.limit(limit).offset(offset)).all()
            return [TrainingJob.from_record(r) for r in records]

    @_retried
    def queued_jobs(self) -> list[TrainingJob]:
        """QUEUED jobs in the order the scheduler starts them: higher priority first, then
        the longest waiting (FIFO within a priority), then the oldest job."""
        query = (
            select(JobRecord)
            .where(JobRecord.status == TrainingStatus.QUEUED.value)
            # A job handed to a cluster waits in the cluster's queue, not this one.
            .where(JobRecord.cluster_job_id.is_(None))
            .order_by(
                JobRecord.priority.desc(),
                JobRecord.queued_at.asc().nulls_last(),
                JobRecord.created_at.asc(),
                JobRecord.job_id,
            )
        )
        with self._sessions() as session:
            return [TrainingJob.from_record(r) for r in session.scalars(query)]

    @_retried
    def active_jobs(self) -> list[TrainingJob]:
        """Jobs with a worker (or one being launched): what holds the machine's resources."""
        query = (
            select(JobRecord)
            .where(JobRecord.status.in_([s.value for s in ACTIVE_STATUSES]))
            .order_by(JobRecord.started_at.asc(), JobRecord.job_id)
        )
        with self._sessions() as session:
            return [TrainingJob.from_record(r) for r in session.scalars(query)]

    @_retried
    def cluster_jobs(self) -> list[TrainingJob]:
        """Jobs handed to a cluster that it may still hold: queued there, running, or
        interrupted (the cluster may have requeued them)."""
        watched = [*(s.value for s in ACTIVE_STATUSES), "queued", "interrupted"]
        query = (
            select(JobRecord)
            .where(JobRecord.cluster_job_id.is_not(None))
            .where(JobRecord.status.in_(watched))
            .order_by(JobRecord.queued_at.asc().nulls_last(), JobRecord.job_id)
        )
        with self._sessions() as session:
            return [TrainingJob.from_record(r) for r in session.scalars(query)]

    @_retried
    def jobs_writing_under(self, folder: str) -> list[str]:
        """Ids of the jobs whose output folder is `folder`, inside it, or holds it: two
        such jobs would write their checkpoints and models over each other."""
        ancestors = [folder]
        while (parent := ancestors[-1].rpartition("/")[0]) and parent not in ancestors:
            ancestors.append(parent)
        literal = folder.rstrip("/").replace("\\", "\\\\").replace("%", "\\%")
        inside = literal.replace("_", "\\_") + "/%"
        query = select(JobRecord.job_id).where(
            or_(
                JobRecord.output_dir.in_(ancestors),
                JobRecord.output_dir.like(inside, escape="\\"),
            )
        )
        with self._sessions() as session:
            return list(session.scalars(query.order_by(JobRecord.created_at)).all())

    @_retried
    def count_jobs(self, *, status: TrainingStatus | None = None, owner: str | None = None) -> int:
        query = select(func.count()).select_from(JobRecord)
        if status is not None:
            query = query.where(JobRecord.status == status.value)
        if owner is not None:
            query = query.where(JobRecord.owner == owner)
        with self._sessions() as session:
            return int(session.scalar(query) or 0)

    @_retried
    def update(self, job_id: str, *, allow_terminal: bool = False, **values: Any) -> bool:
        """Set columns of a job; refused (False) once the job is terminal, unless allowed.

        A new `status` is written only while the job is in a state that may change to it
        (`lifecycle.TRANSITIONS`): a worker's "training" after a user's cancel changes
        nothing and returns False, as does any write the state machine forbids.
        """
        if "metrics" in values:
            values["metrics_json"] = json.dumps(values.pop("metrics"))
        values["updated_at"] = _now()
        statement = update(JobRecord).where(JobRecord.job_id == job_id)
        if "status" in values:
            new = TrainingStatus(values["status"])
            values["status"] = new.value
            origins = lifecycle.sources(new, terminal=allow_terminal)
            statement = statement.where(JobRecord.status.in_([s.value for s in origins]))
        statement = statement.values(**values)
        if not allow_terminal:
            statement = statement.where(JobRecord.status.not_in(_TERMINAL))
        with self._sessions.begin() as session:
            result = session.execute(statement)
            return bool(getattr(result, "rowcount", 0))

    @_retried
    def transition(
        self, job_id: str, from_statuses: Iterable[TrainingStatus], **values: Any
    ) -> bool:
        """Set columns only if the job is in one of `from_statuses` (atomic: one UPDATE).

        What lets two front ends race to resume the same job with one winner. A new
        `status` that any of `from_statuses` may not change to raises
        IllegalTransitionError (`lifecycle.TRANSITIONS`), before the database is touched.
        """
        from_statuses = [TrainingStatus(s) for s in from_statuses]
        if "status" in values:
            new = TrainingStatus(values["status"])
            lifecycle.check_transitions(from_statuses, new, job_id)
            values["status"] = new.value
        values["updated_at"] = _now()
        allowed = [s.value for s in from_statuses]
        statement = (
            update(JobRecord)
            .where(JobRecord.job_id == job_id, JobRecord.status.in_(allowed))
            .values(**values)
        )
        with self._sessions.begin() as session:
            return bool(getattr(session.execute(statement), "rowcount", 0))

    @_retried
    def heartbeat(self, job_id: str) -> None:
        with self._sessions.begin() as session:
            session.execute(
                update(JobRecord).where(JobRecord.job_id == job_id).values(heartbeat_at=_now())
            )

    @_retried
    def add_event(
        self,
        job_id: str,
        kind: str,
        message: str,
        *,
        level: Literal["info", "warning", "error"] = "info",
        data: dict[str, Any] | None = None,
    ) -> None:
        with self._sessions.begin() as session:
            session.add(
                EventRecord(
                    job_id=job_id,
                    level=level,
                    kind=kind,
                    message=message,
                    data_json=json.dumps(data or {}),
                )
            )

    @_retried
    def events(self, job_id: str, after_id: int = 0) -> list[JobEvent]:
        query = (
            select(EventRecord)
            .where(EventRecord.job_id == job_id, EventRecord.id > after_id)
            .order_by(EventRecord.id)
        )
        with self._sessions() as session:
            return [
                JobEvent(
                    id=e.id,
                    job_id=e.job_id,
                    level=e.level,
                    kind=e.kind,
                    message=e.message,
                    data=json.loads(e.data_json or "{}"),
                    created_at=as_utc(e.created_at),
                )
                for e in session.scalars(query)
            ]

    @_retried
    def add_sample(self, job_id: str, values: dict[str, Any]) -> None:
        with self._sessions.begin() as session:
            session.add(SampleRecord(job_id=job_id, values_json=json.dumps(values)))

    @_retried
    def samples(self, job_id: str) -> list[dict[str, Any]]:
        """System-metric samples, oldest first, each with its time (`at`, ISO 8601)."""
        query = select(SampleRecord).where(SampleRecord.job_id == job_id).order_by(SampleRecord.id)
        with self._sessions() as session:
            return [
                {"at": _iso(r.created_at), **json.loads(r.values_json)}
                for r in session.scalars(query)
            ]

    @_retried
    def drop_metrics_after(self, job_id: str, step: int) -> int:
        """Forget logged steps past `step`: a resumed run logs them again from its checkpoint,
        and the curve must not show them twice."""
        with self._sessions.begin() as session:
            result = session.execute(
                delete(MetricRecord).where(MetricRecord.job_id == job_id, MetricRecord.step > step)
            )
            return int(getattr(result, "rowcount", 0) or 0)

    @_retried
    def jobs_using(self, dataset_id: str, version: str) -> list[str]:
        """Ids of the jobs recorded as training on this dataset version."""
        query = select(JobRecord.job_id).where(JobRecord.dataset_version == version)
        with self._sessions() as session:
            ids = session.scalars(query).all()
            rows = session.execute(
                select(JobRecord.job_id, JobRecord.dataset_id).where(JobRecord.job_id.in_(ids))
            ).all()
        return [j for j, d in rows if d.rpartition("@")[0] == dataset_id or d == dataset_id]

    @_retried
    def pid_started_at(self, job_id: str) -> float | None:
        """Start time of the recorded worker pid, to tell it from a recycled pid."""
        with self._sessions() as session:
            started: float | None = session.scalar(
                select(JobRecord.pid_started_at).where(JobRecord.job_id == job_id)
            )
            return started

    @_retried
    def merge_metrics(self, job_id: str, values: dict[str, Any]) -> None:
        """Add keys to the job's latest-metrics dict (e.g. accuracy before training)."""
        with self._sessions.begin() as session:
            record = session.get(JobRecord, job_id)
            if record is None:
                return
            merged = {**json.loads(record.metrics_json or "{}"), **values}
            record.metrics_json = json.dumps(merged)
            record.updated_at = _now()

    @_retried
    def add_metric(
        self, job_id: str, *, step: int, epoch: float | None, values: dict[str, Any]
    ) -> None:
        with self._sessions.begin() as session:
            session.add(
                MetricRecord(job_id=job_id, step=step, epoch=epoch, values_json=json.dumps(values))
            )

    @_retried
    def metric_history(self, job_id: str) -> list[dict[str, Any]]:
        query = select(MetricRecord).where(MetricRecord.job_id == job_id).order_by(MetricRecord.id)
        with self._sessions() as session:
            return [
                {"step": m.step, "epoch": m.epoch, **json.loads(m.values_json)}
                for m in session.scalars(query)
            ]
