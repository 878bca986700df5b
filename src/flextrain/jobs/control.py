"""What can be done to a job, in the order of its life: create, start, resume, cancel.

Each operation checks the job's state, makes its status change through the store
(which enforces `jobs.lifecycle.TRANSITIONS`) and, when it frees or needs the
machine, ticks the scheduler. Reading a job reconciles it first: a job whose workers
are gone is reported as what it is (interrupted), not as "training" forever.
"""

from __future__ import annotations

import logging
import socket
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from flextrain.config.enums import RESUMABLE_STATUSES, TrainingMode, TrainingStatus
from flextrain.config.schemas import (
    AdvancedTrainingConfig,
    BasicTrainingConfig,
    ExpertTrainingConfig,
)
from flextrain.config.validation import (
    ConfigValidationError,
    ValidationIssue,
    config_for_mode,
)
from flextrain.data.registry import DatasetFormatError, DatasetNotFoundError
from flextrain.estimate.plan import Planner, schedule_of
from flextrain.hardware.detect import HardwareConstraints
from flextrain.jobs import oom
from flextrain.jobs.environment import TrainingEnvironmentManager
from flextrain.jobs.errors import JobNotFoundError, JobStateError
from flextrain.jobs.executor import HEARTBEAT_GRACE, ClusterExecutor, Executor, cluster_node
from flextrain.jobs.launcher import Launcher
from flextrain.jobs.outputs import output_dir_taken
from flextrain.jobs.placement import demand_of, never_fits, reservation_of
from flextrain.jobs.reconcile import Reconciler
from flextrain.jobs.resume import requeue_from_checkpoint
from flextrain.jobs.scheduler import TickReport
from flextrain.jobs.spec import RunSpec
from flextrain.jobs.store import JobStore, TrainingJob
from flextrain.models.resolve import ModelNotFoundError

log = logging.getLogger("flextrain.jobs")

# Queue priorities a job may have (higher starts first): bounded so that every
# database stores them and nobody needs more than a handful of levels.
PRIORITY_MIN, PRIORITY_MAX = -1000, 1000
# How often `wait` (and the CLI following a job) ticks the scheduler while its job
# is queued: the job starts when the machine frees up, with no daemon running.
QUEUED_TICK_SECONDS = 2.0
# A launch failure that is the user's to fix: raised to whoever started the job.
BAD_INPUT = (ConfigValidationError, ModelNotFoundError, DatasetNotFoundError, DatasetFormatError)


class JobControl:
    """The operations on jobs, for the service facade and the scheduler."""

    def __init__(
        self,
        store: JobStore,
        environments: TrainingEnvironmentManager,
        planner: Planner,
        launcher: Launcher,
        executor: Executor,
        tick: Callable[[], TickReport],
    ) -> None:
        self.store = store
        self.environments = environments
        self.planner = planner
        self.launcher = launcher
        self.executor = executor
        self.tick = tick
        self.reconciler = Reconciler(
            store,
            environments,
            executor,
            self.requeue,
            cluster_restarts=launcher.settings.cluster_max_restarts,
        )

    def create_job(
        self,
        config: BasicTrainingConfig,
        *,
        mode: TrainingMode | None = None,
        owner: str | None = None,
        strict_hardware: bool = False,
        priority: int = 0,
    ) -> TrainingJob:
        """Validate and record a PENDING job with its folders.

        Problems that depend on this machine (fp16 without a GPU) are errors when
        `strict_hardware`, else warnings kept on the job and checked again at start:
        a job is a plan and may be started where the hardware fits. `priority`
        orders the queue once the job is started (higher first, default 0).
        """
        if not PRIORITY_MIN <= priority <= PRIORITY_MAX:
            raise ConfigValidationError(
                [
                    ValidationIssue(
                        "priority",
                        f"{priority} is outside {PRIORITY_MIN}..{PRIORITY_MAX}.",
                        f"use an integer from {PRIORITY_MIN} to {PRIORITY_MAX} (higher "
                        "starts first; default 0).",
                    )
                ]
            )
        if mode is not None:
            config = config_for_mode(config, mode.value)
        hw = self._as_if_jobs_ended(self.planner.hardware())
        config, checkpointing_note = self.planner.choose_checkpointing(config, hw)
        issues, _model, data = self.planner.validate(config, hardware=hw)
        static_issues, _, _ = self.planner.validate(config)
        taken = output_dir_taken(self.store, config.output_dir)
        if taken is not None:
            issues.append(taken)
            static_issues.append(taken)
        static = {(i.field, i.message) for i in static_issues}
        hardware_only = [i for i in issues if (i.field, i.message) not in static]
        errors = [i for i in static_issues if i.severity == "error"]
        if strict_hardware:
            errors += [i for i in hardware_only if i.severity == "error"]
        if errors:
            raise ConfigValidationError(issues if strict_hardware else static_issues)
        schedule = schedule_of(config, data)
        warnings = [str(i) for i in issues if i.severity == "warning" or i in hardware_only]
        if mode is None:
            mode = (
                TrainingMode.EXPERT
                if isinstance(config, ExpertTrainingConfig)
                else TrainingMode.ADVANCED
                if isinstance(config, AdvancedTrainingConfig)
                else TrainingMode.BASIC
            )
        job_id = uuid.uuid4().hex[:12]
        env = self.environments.setup(job_id, config.output_dir)
        try:
            job = self.store.create(
                job_id=job_id,
                mode=mode,
                config=config,
                output_dir=str(env.output_dir),
                log_path=str(env.log_file),
                warnings=warnings,
                owner=owner,
                dataset_version=data.version,
                priority=priority,
            )
        except Exception:
            self.environments.remove(env)
            raise
        if checkpointing_note:
            self.store.add_event(job_id, "gradient_checkpointing", checkpointing_note)
        if schedule:
            self._plot_schedule(job_id, env.root / "schedule.png", schedule)
        return job

    def _plot_schedule(self, job_id: str, out: Path, values: list[float]) -> None:
        """The expression schedule as a picture and an event, before anything trains."""
        from flextrain.config.expression import plot_schedule

        peak = max(range(len(values)), key=values.__getitem__)
        message = (
            f"lr_schedule_expr over {len(values)} steps: {values[0]:.3g} at step 0, peak "
            f"{values[peak]:.3g} at step {peak}, {values[-1]:.3g} at the last step; plot: {out}"
        )
        try:
            plot_schedule(values, out)
        except Exception as exc:  # a picture is not worth failing a valid job for
            message += f" (not drawn: {exc})"
        self.store.add_event(
            job_id, "lr_schedule", message, data={"plot": str(out), "steps": len(values)}
        )

    def get_job(self, job_id: str) -> TrainingJob | None:
        job = self.store.get(job_id)
        if job is not None and self.reconciler.watches(job):
            job = self.reconciler.reconcile(job)
        return job

    def require_job(self, job_id: str) -> TrainingJob:
        job = self.get_job(job_id)
        if job is None:
            raise JobNotFoundError(f"No training job with id '{job_id}'.")
        return job

    def list_jobs(
        self,
        *,
        status: TrainingStatus | None = None,
        owner: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[TrainingJob]:
        jobs = self.store.list_jobs(status=status, owner=owner, limit=limit, offset=offset)
        return [self.reconciler.reconcile(j) if self.reconciler.watches(j) else j for j in jobs]

    def count_jobs(self, *, status: TrainingStatus | None = None, owner: str | None = None) -> int:
        return self.store.count_jobs(status=status, owner=owner)

    def start_job(self, job_id: str) -> TrainingJob:
        """Put a PENDING job in the queue and run one scheduler tick.

        The job is re-validated against this machine first: a config it can never run
        fails now (ConfigValidationError, the job FAILED), not after a wait. It starts
        at once when the cores and GPUs it needs are free; otherwise it is returned
        QUEUED with its `wait_reason` and starts at a later tick (a job ending, the
        scheduler loop, or a CLI command or `wait` following it).
        """
        job = self.require_job(job_id)
        if job.status != TrainingStatus.PENDING:
            raise JobStateError(
                f"Job {job_id} is {job.status.value}; only a pending job can be started."
            )
        try:
            self._refuse_unrunnable(job)
        except BAD_INPUT as exc:
            self.store.transition(
                job_id,
                [TrainingStatus.PENDING],
                status=TrainingStatus.FAILED,
                error_message=str(exc),
                completed_at=datetime.now(UTC),
            )
            raise
        if not self.store.transition(
            job_id,
            [TrainingStatus.PENDING],
            status=TrainingStatus.QUEUED,
            queued_at=datetime.now(UTC),
            wait_reason="submitted; waiting for the scheduler",
        ):
            raise JobStateError(f"Job {job_id} changed state while starting.")
        return self._tick_for(job_id)

    def _refuse_unrunnable(self, job: TrainingJob) -> None:
        """ConfigValidationError when this machine can never run `job`: its config's
        hardware errors (fp16 without a GPU, memory) or a request for more GPUs or
        threads than there are, which would otherwise block the queue forever. Under a
        cluster executor, "this machine" is a node of the job's own partition."""
        hw = cluster_node(self.executor, job) or self._as_if_jobs_ended(self.planner.hardware())
        issues, _, _ = self.planner.validate(job.pinned_config(), hardware=hw)
        if isinstance(self.executor, ClusterExecutor):
            issues += self.executor.preflight(job)
        memory = self.planner.estimated_peak_gb(job, hw) if hw.gpu_count else None
        issues += never_fits(demand_of(job.layout, hw, memory), hw)
        if any(i.severity == "error" for i in issues):
            raise ConfigValidationError(issues)

    def _as_if_jobs_ended(self, hardware: HardwareConstraints) -> HardwareConstraints:
        """`hardware` with the GPUs flextrain's running jobs hold counted as free: a job
        that fits once they end is a job for the queue, not a validation error."""
        if not hardware.gpus:
            return hardware
        held = {
            gpu
            for job in self.running_jobs()
            for gpu in reservation_of(job.job_id, job.layout, job.allocation, hardware).gpus
        }
        if not held:
            return hardware
        gpus = [
            g.model_copy(update={"free_memory_gb": g.total_memory_gb}) if g.index in held else g
            for g in hardware.gpus
        ]
        return hardware.model_copy(
            update={"gpus": gpus, "available_gpu_memory_gb": sum(g.free_memory_gb for g in gpus)}
        )

    def _tick_for(self, job_id: str) -> TrainingJob:
        """One scheduler tick; the job as it is afterwards. A launch failure of this job
        that is the user's to fix (its config, model or data) is raised, as before the
        queue existed; other failures leave the job FAILED with the message."""
        try:
            failed = self.tick().failed.get(job_id)
        except Exception:  # the job is queued; the next tick tries again
            log.exception("Scheduler tick failed")
            return self.require_job(job_id)
        if isinstance(failed, BAD_INPUT):
            raise failed
        return self.require_job(job_id)

    def _tick_quietly(self) -> None:
        """A tick after something freed resources; its failure must not fail the caller."""
        try:
            self.tick()
        except Exception:
            log.exception("Scheduler tick failed")

    def running_jobs(self) -> list[TrainingJob]:
        """The jobs holding this machine's resources, reconciled (a dead worker frees its
        share). A job being launched has no pid yet and counts; one left without a pid
        for HEARTBEAT_GRACE seconds was a launch that died."""
        running = []
        host = socket.gethostname()
        for job in self.store.active_jobs():
            if job.worker_host not in (None, host) or job.cluster_job_id:
                continue  # its resources are another machine's, or a cluster's
            age = (datetime.now(UTC) - job.updated_at).total_seconds()
            if job.pid is not None or age >= HEARTBEAT_GRACE:
                job = self.reconciler.reconcile(job)
            if job.status.is_active:
                running.append(job)
        return running

    def watch_cluster_jobs(self) -> None:
        """Ask the cluster about every job it holds (a scheduler tick does, so nobody has
        to be looking): its queue reason, a requeue, or a loss that submits it again."""
        if not self.executor.places_jobs:
            return
        for job in self.store.cluster_jobs():
            if self.reconciler.watches(job):
                self.reconciler.reconcile(job)

    def resume_job(self, job_id: str) -> TrainingJob:
        """Continue an interrupted, cancelled or failed job from its latest checkpoint.

        The Trainer restores weights, optimizer, scheduler, RNG and the data position
        from the checkpoint, so the step count and the loss curve continue; logged
        steps past the checkpoint are dropped (they are trained again). With no
        checkpoint the job starts over, and an event says so.

        Like `start_job`, it goes through the queue: it starts at once when the machine
        has room, else waits QUEUED (at the end of its priority) and continues from this
        same checkpoint when it starts. A machine that can never run it raises
        ConfigValidationError and leaves the job as it was.
        """
        job = self.require_job(job_id)
        if job.status not in RESUMABLE_STATUSES:
            states = ", ".join(sorted(s.value for s in RESUMABLE_STATUSES))
            raise JobStateError(
                f"Job {job_id} is {job.status.value}; only a job that is {states} can be resumed."
            )
        if job.cluster_job_id and self.executor.is_running(job):
            raise JobStateError(
                f"Job {job_id} was requeued by {job.executor} (its job {job.cluster_job_id}) "
                "and continues from its latest checkpoint by itself. Fix: wait for it, or "
                "cancel it first."
            )
        self._refuse_unrunnable(job)
        self.requeue(job)
        return self._tick_for(job_id)

    def requeue(self, job: TrainingJob) -> None:
        """Queue a resumable job again to continue from its latest checkpoint; the next
        scheduler tick starts it."""
        if requeue_from_checkpoint(self.store, self.environments, job) is False:
            raise JobStateError(f"Job {job.job_id} changed state while resuming.")

    def recover_jobs(self, *, auto_resume: bool = False) -> dict[str, list[str]]:
        """Mark jobs whose worker died as INTERRUPTED; with `auto_resume`, resume them.

        Called when the service starts (a machine restart kills every worker): without
        it a job would show "training" until someone looked at it.
        """
        interrupted = []
        for status in (s for s in TrainingStatus if s.is_active):
            for job in self.store.list_jobs(status=status, limit=10_000):
                age = (datetime.now(UTC) - job.updated_at).total_seconds()
                if job.pid is None and age < HEARTBEAT_GRACE:
                    continue  # being launched right now by another front end
                if self.reconciler.reconcile(job).status == TrainingStatus.INTERRUPTED:
                    interrupted.append(job.job_id)
        oom.sweep({job.job_id for job in self.store.active_jobs()})
        resumed = []
        if auto_resume:
            for job in self.store.list_jobs(status=TrainingStatus.INTERRUPTED, limit=10_000):
                try:
                    self.resume_job(job.job_id)
                    resumed.append(job.job_id)
                except (JobStateError, ConfigValidationError, OSError) as exc:
                    message = f"Automatic resume failed: {exc}"
                    self.store.add_event(job.job_id, "resume_failed", message, level="error")
        return {"interrupted": interrupted, "resumed": resumed}

    def cancel_job(self, job_id: str, timeout: float = 30.0) -> TrainingJob:
        """Mark the job CANCELLED, then stop its worker and all the worker's children.

        The worker gets `timeout` seconds to finish its step and save a checkpoint
        (so `resume` continues from here) before it is killed.

        A pending or queued job is cancelled by one conditional UPDATE, the same kind
        the scheduler uses to take it from the queue: if the cancel wins, the job never
        starts; if the scheduler took it a moment earlier, it is cancelled as a started
        job (its worker sees CANCELLED and stops before training). Either way a tick
        follows, since what the job held or blocked may now let another start.
        """
        job = self.require_job(job_id)
        if job.is_finished:
            raise JobStateError(f"Job {job_id} is already {job.status.value}.")
        if job.status in (TrainingStatus.PENDING, TrainingStatus.QUEUED) and not job.cluster_job_id:
            if self.store.transition(
                job_id,
                [job.status],
                status=TrainingStatus.CANCELLED,
                wait_reason=None,
                completed_at=datetime.now(UTC),
            ):
                self._tick_quietly()
                return self.require_job(job_id)
            job = self.require_job(job_id)  # the scheduler launched it meanwhile
            if job.is_finished:
                raise JobStateError(f"Job {job_id} is already {job.status.value}.")
        self.store.update(job_id, status=TrainingStatus.CANCELLED, completed_at=datetime.now(UTC))
        self.executor.cancel(job, timeout)
        self._tick_quietly()
        return self.require_job(job_id)

    def wait(self, job_id: str, timeout: float | None = None, poll: float = 0.5) -> TrainingJob:
        """Block until the job is finished (or `timeout` seconds pass).

        While the job is queued this ticks the scheduler every QUEUED_TICK_SECONDS, so
        it starts when the machine frees up even with no scheduler loop running."""
        deadline = None if timeout is None else time.monotonic() + timeout
        next_tick = 0.0
        while True:
            job = self.require_job(job_id)
            if job.is_finished:
                return job
            if deadline is not None and time.monotonic() > deadline:
                return job
            next_tick = self.tick_while_queued(job, next_tick)
            time.sleep(poll)

    def tick_while_queued(self, job: TrainingJob, next_tick: float) -> float:
        """For loops that follow a job: tick when `job` is queued and `next_tick` (a
        time.monotonic() value) has passed; returns when to tick next."""
        now = time.monotonic()
        if job.status != TrainingStatus.QUEUED or now < next_tick:
            return next_tick
        self._tick_quietly()
        return now + QUEUED_TICK_SECONDS

    def plan_start(self, job_id: str) -> RunSpec:
        """What starting a pending job would run, without running it: the checks `start_job`
        makes against this machine (raising what it would raise, the job left PENDING) and
        the run spec its worker would read, with batch_size 'auto' resolved. The answer to
        "will this job start, and with what?" before committing the machine to it."""
        job = self.require_job(job_id)
        if job.status != TrainingStatus.PENDING:
            raise JobStateError(
                f"Job {job_id} is {job.status.value}; only a pending job has a start to plan."
            )
        self._refuse_unrunnable(job)
        return self.launcher.build_spec(job, record=False)
