"""The one place where configuration, registries, the job store and the worker meet.

Front ends (Python API, CLI, later REST) call only this. It validates, resolves
ids to files, writes the run spec, launches and supervises worker processes,
and reconciles the store with reality: a worker that died (killed, machine
restart) leaves its job INTERRUPTED, not "training" forever, and `resume_job`
continues it from its latest checkpoint.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import socket
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cached_property, lru_cache, partial
from pathlib import Path
from typing import Any, Literal, TypeVar

from flextrain.accounts.audit import AuditLog
from flextrain.accounts.users import UserStore
from flextrain.config.enums import (
    RESUMABLE_STATUSES,
    TrainingMode,
    TrainingStatus,
    TrainingType,
)
from flextrain.config.schemas import (
    AUTO_EFFECTIVE_BATCH,
    AdvancedTrainingConfig,
    BasicTrainingConfig,
    ExpertTrainingConfig,
    explicit_fields,
    restore_config,
)
from flextrain.config.validation import (
    ConfigValidationError,
    MemoryFacts,
    TrainingParameterValidator,
    ValidationIssue,
    config_for_mode,
)
from flextrain.data.manager import TrainingDataManager
from flextrain.data.registry import (
    DatasetFormatError,
    DatasetInfo,
    DatasetNotFoundError,
)
from flextrain.db import make_engine, make_sessionmaker
from flextrain.estimate.memory import TrainingSetup, estimate_memory
from flextrain.estimate.recommend import largest_fitting_batch, recommend
from flextrain.hardware.detect import HardwareConstraints
from flextrain.jobs import oom
from flextrain.jobs.checkpoints import latest_checkpoint
from flextrain.jobs.environment import TrainingEnvironment, TrainingEnvironmentManager
from flextrain.jobs.launch import (
    build_launch_command,
    is_distributed,
    job_layout,
    supervised,
    warm_worker_command,
    worker_environment,
)
from flextrain.jobs.placement import demand_of, never_fits, reservation_of
from flextrain.jobs.plots import plot_histories
from flextrain.jobs.process import (
    WarmWorker,
    is_alive,
    process_start_time,
    spawn,
    terminate_tree,
)
from flextrain.jobs.resources import Allocation
from flextrain.jobs.scheduler import QueueSnapshot, Scheduler
from flextrain.jobs.spec import DataSpec, RunSpec
from flextrain.jobs.store import JobEvent, JobStore, TrainingJob
from flextrain.models.compatibility import (
    NO_DATASET,
    ModelCompatibility,
    ModelCompatibilityChecker,
    memory_budget,
    training_setup,
)
from flextrain.models.facts_cache import inspect_model_cached
from flextrain.models.inspect import ModelInfo, choose_lora_targets
from flextrain.models.registry import ModelRegistry
from flextrain.models.resolve import ModelNotFoundError, ModelResolver
from flextrain.models.tasks import choose_objective, choose_precision
from flextrain.settings import Settings

log = logging.getLogger("flextrain.service")
EventLevel = Literal["info", "warning", "error"]


AdvancedT = TypeVar("AdvancedT", bound=AdvancedTrainingConfig)


class JobNotFoundError(LookupError):
    """No job has this id."""


class JobStateError(RuntimeError):
    """The job is in a state that does not allow the requested action."""


# Share of the memory budget that batch_size="auto" leaves free: the estimate's own
# error (median 3.5%, worst 18% analytic; docs/benchmarks.md) and whatever else runs.
AUTO_BATCH_MARGIN = 0.10

# Default gradient checkpointing is dropped when the run's peak without it stays
# under this share of the memory budget.
CHECKPOINTING_OFF_BELOW = 0.5

# A worker on another host is presumed dead when its heartbeat is this much older
# than its monitor interval, and never sooner than HEARTBEAT_GRACE seconds.
HEARTBEAT_MISSES = 6
HEARTBEAT_GRACE = 60.0

# Queue priorities a job may have (higher starts first): bounded so that every
# database stores them and nobody needs more than a handful of levels.
PRIORITY_MIN, PRIORITY_MAX = -1000, 1000
# How often `wait` (and the CLI following a job) ticks the scheduler while its job
# is queued: the job starts when the machine frees up, with no daemon running.
QUEUED_TICK_SECONDS = 2.0


class TrainingService:
    """Creates, starts, cancels and reports training jobs for one flextrain home."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        hardware_probe: Callable[[], HardwareConstraints] | None = None,
    ) -> None:
        self.settings = settings or Settings()
        self.settings.ensure_home()
        self.engine = make_engine(self.settings.resolved_database_url)
        sessions = make_sessionmaker(self.engine)
        self.store = JobStore(sessions)
        self.users = UserStore(sessions)
        self.audit = AuditLog(sessions)
        self.datasets = TrainingDataManager(sessions, self.settings.home / "datasets")
        # A registered model name resolves to its folder wherever a model id is taken.
        self.models = ModelResolver(
            self.settings.builtin_models_dir,
            allow_pickle=self.settings.allow_pickle_weights,
            registered=lambda name: self.model_registry.folder_for(name),
        )
        self.model_registry = ModelRegistry(
            sessions, self.models, on_change=lambda: self._inspect.cache_clear()
        )
        self.environments = TrainingEnvironmentManager(self.settings.jobs_dir)
        self.validator = TrainingParameterValidator()
        # Inspected model facts, so that a later job of a model needs no torch here.
        self.model_info_cache = self.settings.home / "cache" / "model-info"
        self.compatibility = ModelCompatibilityChecker(self.models, self.model_info_cache)
        self._hardware_probe = hardware_probe or (
            lambda: HardwareConstraints.detect_current(self.settings.home)
        )
        self._inspect = lru_cache(maxsize=32)(self._inspect_uncached)
        self._warm_worker: WarmWorker | None = None

    # -- facts -------------------------------------------------------------------------
    def hardware(self) -> HardwareConstraints:
        """This machine as training may use it: `reserved_cpus` cores are left to the API
        server and the system, so estimates, validation and the scheduler all count the
        cores a job will really get."""
        hardware = self._hardware_probe()
        reserved = self.settings.reserved_cpus
        if reserved and hardware.cpu_cores > 1:
            cores = max(1, hardware.cpu_cores - reserved)
            hardware = hardware.model_copy(update={"cpu_cores": cores})
        return hardware

    def inspect_model(self, model_id: str) -> ModelInfo:
        return self._inspect(model_id)

    def _inspect_uncached(self, model_id: str) -> ModelInfo:
        return inspect_model_cached(
            self.models.resolve_config(model_id).path, self.model_info_cache
        )

    def check_compatibility(
        self,
        model_id: str,
        training_type: TrainingType | None = None,
        *,
        config: BasicTrainingConfig | None = None,
        dataset_id: str | None = None,
        batch_size: int = 8,
        max_length: int = 512,
        probe: bool = False,
    ) -> ModelCompatibility:
        """The full report: support, memory parts, time, recommendations (and probe)."""
        dataset_name = dataset_id or (config.dataset_id if config else None)
        if dataset_name == NO_DATASET:
            dataset_name = None  # a config made only to describe the run, no data named
        dataset = self.datasets.get(dataset_name) if dataset_name else None
        report = self.compatibility.check(
            model_id,
            training_type,
            hardware=self.hardware(),
            config=AdvancedTrainingConfig.from_basic(config) if config else None,
            dataset=dataset,
            batch_size=batch_size,
            max_length=max_length,
            probe=probe,
        )
        if config is None:
            return report
        # The config's own problems belong in the verdict too (bad optimizer, lr, a
        # max_length over the model's limit, labels missing for a task head, ...), the
        # same rules that creating the job applies.
        try:
            found, _, _ = self.validate(config)
        except (ModelNotFoundError, DatasetNotFoundError, DatasetFormatError):
            found = self.validator.validate(config)  # already in the report's issues
        errors = [str(i) for i in found if i.severity == "error" and str(i) not in report.issues]
        if not errors:
            return report
        return report.model_copy(
            update={"is_compatible": False, "issues": [*report.issues, *errors]}
        )

    def validate(
        self, config: BasicTrainingConfig, *, hardware: HardwareConstraints | None = None
    ) -> tuple[list[ValidationIssue], ModelInfo, DatasetInfo]:
        """Every issue of `config` against its model, its data and (if given) hardware.

        Raises ModelNotFoundError / DatasetNotFoundError when the ids resolve to nothing.
        """
        model = self.inspect_model(config.model_id)
        data = self.datasets.get(config.dataset_id)
        eval_file = getattr(config, "eval_file", None)
        if eval_file:  # fail at creation, not an hour later when the worker starts
            self.datasets.get(eval_file)
        memory = self._memory_facts(config, model, data, hardware) if hardware else None
        issues = self.validator.validate(
            config, hardware=hardware, model=model.facts(), dataset=data.facts(), memory=memory
        )
        output_issue = output_dir_issue(config.output_dir)
        if output_issue is not None:
            issues.append(output_issue)
        # Not cached with the model's facts: weights can go missing after a first check.
        missing = (
            self.models.missing_weights(config.model_id)
            if config.training_type != TrainingType.FULL_TRAINING
            else None
        )
        if missing:
            issues.append(
                ValidationIssue(
                    "model_id",
                    missing,
                    "copy the weights into the folder (or save the model again with "
                    "save_pretrained()), or use training_type full_training to train it "
                    "from scratch.",
                )
            )
        if not any(i.severity == "error" for i in issues):
            try:
                choose_objective(config.training_type, model, data)
            except ConfigValidationError as exc:
                issues.extend(exc.issues)
        return issues, model, data

    def _memory_facts(
        self,
        config: BasicTrainingConfig,
        model: ModelInfo,
        data: DatasetInfo,
        hardware: HardwareConstraints,
    ) -> MemoryFacts | None:
        """The analytic memory estimate of `config` against this machine's budget."""
        try:
            setup = _estimator_setup(config, model, data, hardware)
        except ConfigValidationError:
            return None  # reported by its own rule
        arch = model.architecture()
        budget, kind = memory_budget(hardware)
        peak = estimate_memory(arch, setup).peak
        targets = tuple(choose_lora_targets(model.linear_module_names))
        options = recommend(arch, setup, budget, gpu_count=hardware.gpu_count, lora_targets=targets)
        fits = [r for r in options if r.fits]
        fix = (
            f"{fits[0].description} (about {fits[0].estimate.peak / 1024**3:.2f} GB)."
            if fits
            else "use a smaller model or a machine with more memory."
        )
        return MemoryFacts(
            peak / 1024**3, budget / 1024**3, "GPU" if kind == "gpu" else "system", fix
        )

    # -- jobs --------------------------------------------------------------------------
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
        hw = self._as_if_jobs_ended(self.hardware())
        config, checkpointing_note = self._choose_checkpointing(config, hw)
        issues, _model, data = self.validate(config, hardware=hw)
        static_issues, _, _ = self.validate(config)
        taken = self._output_dir_taken(config.output_dir)
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
        schedule = _schedule_of(config, data)
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
                config=config.model_dump(mode="json"),
                config_fields=explicit_fields(config),
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

    def _output_dir_taken(self, output_dir: str | None) -> ValidationIssue | None:
        """Why a new job may not write to `output_dir`: another job's folder (or one
        inside or around it), or a folder that already holds files. Two jobs in one
        folder overwrite each other's model and mix their checkpoints, and the `try`,
        `evaluate` and `checkpoints` of the first would then read the second's."""
        if not output_dir:
            return None  # the job's own folder, FLEXTRAIN_HOME/jobs/ID/output
        target = Path(output_dir).expanduser().resolve()
        fix = (
            "choose a new or empty folder, or leave output_dir unset (each job then writes "
            "to its own folder, FLEXTRAIN_HOME/jobs/<job id>/output)."
        )
        others = self.store.jobs_writing_under(str(target))
        if others:
            named = ", ".join(others[:3]) + (
                f" and {len(others) - 3} more" if len(others) > 3 else ""
            )
            noun = "job" if len(others) == 1 else "jobs"
            return ValidationIssue(
                "output_dir",
                f"{target} is the output folder of {noun} {named} (or inside or around "
                "it): the jobs would overwrite each other's checkpoints and model.",
                fix,
            )
        if target.is_dir() and any(target.iterdir()):
            return ValidationIssue("output_dir", f"{target} is not empty.", fix)
        return None

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

    def _choose_checkpointing(
        self, config: BasicTrainingConfig, hardware: HardwareConstraints
    ) -> tuple[BasicTrainingConfig, str | None]:
        """Gradient checkpointing left at its default is turned off when the run fits in
        half the memory budget without it: recomputing activations costs about a third
        of the step time and buys memory this run does not need. An explicit value is
        kept, as is the default for a run that may need the memory.
        """
        if not config.gradient_checkpointing or "gradient_checkpointing" in config.model_fields_set:
            return config, None
        try:
            model = self.inspect_model(config.model_id)
            data = self.datasets.get(config.dataset_id)
            plain = config.model_copy(update={"gradient_checkpointing": False})
            setup = _estimator_setup(plain, model, data, hardware)
        except Exception:  # a best-effort choice: validation reports what is wrong
            return config, None
        if not model.supports_gradient_checkpointing:
            return config, None
        peak = estimate_memory(model.architecture(), setup).peak
        budget, kind = memory_budget(hardware)
        if peak > budget * CHECKPOINTING_OFF_BELOW:
            return config, None
        note = (
            f"gradient_checkpointing off: the run needs about {peak / 1024**3:.2f} GB without it, "
            f"under {100 * CHECKPOINTING_OFF_BELOW:.0f}% of the {budget / 1024**3:.1f} GB "
            f"{'GPU' if kind == 'gpu' else 'system'} memory free (set it to true to keep it)."
        )
        return config.model_copy(update={"gradient_checkpointing": False}), note

    def get_job(self, job_id: str) -> TrainingJob | None:
        job = self.store.get(job_id)
        if job is not None and job.status.is_active and job.pid is not None:
            job = self._reconcile(job)
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
        return [self._reconcile(j) if j.status.is_active and j.pid else j for j in jobs]

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
        except (
            ConfigValidationError,
            ModelNotFoundError,
            DatasetNotFoundError,
            DatasetFormatError,
        ) as exc:
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
        threads than there are, which would otherwise block the queue forever."""
        hw = self._as_if_jobs_ended(self.hardware())
        issues, _, _ = self.validate(self._pinned_config(job), hardware=hw)
        memory = self.estimated_peak_gb(job, hw) if hw.gpu_count else None
        issues += never_fits(demand_of(job.config, hw, memory), hw)
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
            for gpu in reservation_of(job.job_id, job.config, job.allocation, hardware).gpus
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
            failed = self.scheduler.tick().failed.get(job_id)
        except Exception:  # the job is queued; the next tick tries again
            log.exception("Scheduler tick failed")
            return self.require_job(job_id)
        bad_input = (
            ConfigValidationError,
            ModelNotFoundError,
            DatasetNotFoundError,
            DatasetFormatError,
        )
        if isinstance(failed, bad_input):
            raise failed
        return self.require_job(job_id)

    def _tick_quietly(self) -> None:
        """A tick after something freed resources; its failure must not fail the caller."""
        try:
            self.scheduler.tick()
        except Exception:
            log.exception("Scheduler tick failed")

    @cached_property
    def scheduler(self) -> Scheduler:
        """This home's scheduler; its ticks are serialised across processes by a file lock."""
        return Scheduler(self)

    def queue(self) -> QueueSnapshot:
        """Queued jobs in start order (position, priority, why each waits) and the running
        jobs with the GPUs and threads they hold."""
        return self.scheduler.snapshot()

    def running_jobs(self) -> list[TrainingJob]:
        """The jobs holding this machine's resources, reconciled (a dead worker frees its
        share). A job being launched has no pid yet and counts; one left without a pid
        for HEARTBEAT_GRACE seconds was a launch that died."""
        running = []
        host = socket.gethostname()
        for job in self.store.active_jobs():
            if job.worker_host not in (None, host):
                continue  # a job of a home shared with another machine uses its resources
            age = (datetime.now(UTC) - job.updated_at).total_seconds()
            if job.pid is not None or age >= HEARTBEAT_GRACE:
                job = self._reconcile(job)
            if job.status.is_active:
                running.append(job)
        return running

    def estimated_peak_gb(self, job: TrainingJob, hardware: HardwareConstraints) -> float | None:
        """The estimator's peak memory of one of the job's processes (per GPU) on
        `hardware`; None when it cannot say (validation reports why)."""
        try:
            config = self._pinned_config(job)
            model = self.inspect_model(config.model_id)
            data = self.datasets.get(config.dataset_id)
            setup = _estimator_setup(config, model, data, hardware)
            return estimate_memory(model.architecture(), setup).peak / 1024**3
        except Exception:
            return None

    @staticmethod
    def _pinned_config(job: TrainingJob) -> AdvancedTrainingConfig:
        """The job's config on exactly the dataset version it was created with."""
        config = AdvancedTrainingConfig.from_basic(_config_from_job(job))
        if job.dataset_version:
            name = config.dataset_id.rpartition("@")[0] or config.dataset_id
            config = config.model_copy(update={"dataset_id": f"{name}@{job.dataset_version}"})
        return config

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
        self._refuse_unrunnable(job)
        self._requeue(job)
        return self._tick_for(job_id)

    def _requeue(self, job: TrainingJob) -> None:
        """Queue a resumable job again to continue from its latest checkpoint; the next
        scheduler tick starts it."""
        job_id = job.job_id
        env = self.environments.layout(job_id, job.config.get("output_dir"))
        checkpoint = latest_checkpoint(env.checkpoint_dir)
        if not self.store.transition(
            job_id,
            RESUMABLE_STATUSES,
            status=TrainingStatus.QUEUED.value,
            queued_at=datetime.now(UTC),
            wait_reason="submitted; waiting for the scheduler",
            allocation=None,
            error_message=None,
            completed_at=None,
            pid=None,  # the dead worker's pid must not make the job look dead again
            pid_started_at=None,
            resume_count=job.resume_count + 1,
        ):
            raise JobStateError(f"Job {job_id} changed state while resuming.")
        step = _checkpoint_step(checkpoint)
        dropped = self.store.drop_metrics_after(job_id, step)
        if checkpoint is None:
            message = f"Resumed from the start: no checkpoint was saved (was {job.status.value})."
        else:
            message = (
                f"Resumed from step {step} (was {job.status.value} at step "
                f"{job.current_step}); {dropped} logged rows past the checkpoint dropped."
            )
        self.store.add_event(job_id, "resumed", message, data={"step": step})

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
                if self._reconcile(job).status == TrainingStatus.INTERRUPTED:
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

    def _launch(
        self,
        job: TrainingJob,
        resume_from: Path | None,
        allocation: Allocation | None = None,
    ) -> TrainingJob:
        """Write the run spec and start the job's worker (or torchrun) with `allocation`:
        the GPUs it may see and its CPU threads per process (the scheduler's choice)."""
        job_id = job.job_id
        allocation = allocation or Allocation()
        try:
            spec = self._build_spec(job, allocation)
        except Exception as exc:
            self.store.update(
                job_id,
                status=TrainingStatus.FAILED,
                error_message=str(exc),
                completed_at=datetime.now(UTC),
            )
            raise
        if resume_from is not None:
            spec = spec.model_copy(update={"resume_from_checkpoint": str(resume_from)})
        env = self.environments.layout(job_id, job.config.get("output_dir"))
        env.config_file.write_text(spec.model_dump_json(indent=2))
        config = job.config
        endpoint = None
        if is_distributed(config) and job_layout(config)[1] > 1:
            endpoint = config.get("rdzv_endpoint") or f"{socket.getfqdn()}:{_free_port()}"
        argv, proc_env = build_launch_command(
            job_id, config, self.settings, allocation, rdzv_endpoint=endpoint
        )
        if is_distributed(config):
            processes, nodes = job_layout(config)
            join = f" flextrain worker join --job {job_id} --rdzv-endpoint {endpoint}"
            self.store.add_event(
                job_id,
                "launched",
                f"torchrun: {processes} process(es) per node x {nodes} node(s), "
                f"{config.get('distributed_strategy') or 'ddp'}"
                + (f"; other nodes join with:{join}" if endpoint else ""),
                data={"argv": argv, "rdzv_endpoint": endpoint, "allocation": allocation.as_dict()},
            )
            argv = supervised(argv, job_id=job_id, settings=self.settings)
        # Status first: once the worker runs, it alone moves the status forward.
        self.store.update(
            job_id,
            status=TrainingStatus.PREPARING,
            started_at=job.started_at or datetime.now(UTC),
            worker_host=socket.gethostname(),
            heartbeat_at=datetime.now(UTC),
        )
        limits = self._confine(job_id, env)
        on_exit = partial(oom.record_exit, env.root)
        warm, self._warm_worker = self._warm_worker, None
        proc = None
        # Not for torchrun (it starts its own workers), nor into a memory cgroup: what a
        # warm worker imported was charged before it could join it.
        if warm is not None and not is_distributed(config) and limits.memory_cgroup is None:
            proc = warm.take(argv[3:], proc_env, env.log_file, on_exit=on_exit)
        if warm is not None and proc is None:
            warm.discard()
        if proc is None:
            proc = spawn(argv, proc_env, env.log_file, on_exit=on_exit)
        self.store.update(job_id, pid=proc.pid, pid_started_at=process_start_time(proc.pid))
        if limits.memory_cgroup is not None:
            try:
                limits.memory_cgroup.add(proc.pid)
            except OSError as exc:
                message = (
                    f"The job runs without its memory limit: joining its cgroup failed ({exc})."
                )
                self.store.add_event(job_id, "memory_limit", message, level="warning")
        return self.require_job(job_id)

    def _confine(self, job_id: str, env: TrainingEnvironment) -> oom.LaunchRecord:
        """What tells an out-of-memory kill apart afterwards (see `flextrain.jobs.oom`): the
        kernel's count now and, with `job_memory_limit_gb`, the job's own memory cgroup."""
        oom.clear_exit(env.root)
        oom.sweep({job.job_id for job in self.store.active_jobs()} | {job_id})
        limits = oom.confine(job_id, env.root, self.settings.job_memory_limit_gb)
        limits.save(env.root)
        if limits.cgroup_error:
            self.store.add_event(job_id, "memory_limit", limits.cgroup_error, level="warning")
        return limits

    def join_command(
        self, job_id: str, rdzv_endpoint: str | None = None
    ) -> tuple[list[str], dict[str, str]]:
        """The torchrun command that makes this machine one more node of a multi-node job.

        The endpoint is the one the job was launched with (its `launched` event), unless
        given. The node needs the same database and the job's folder (a shared
        FLEXTRAIN_HOME) and runs the same worker; torchrun assigns its ranks.
        """
        job = self.require_job(job_id)
        processes, nodes = job_layout(job.config)
        if nodes < 2:
            raise JobStateError(
                f"Job {job_id} runs on one machine (num_nodes {nodes}); there is nothing to "
                "join. Fix: create the job with num_nodes 2 or more."
            )
        if job.is_finished:
            raise JobStateError(f"Job {job_id} is already {job.status.value}.")
        endpoint = rdzv_endpoint or job.config.get("rdzv_endpoint")
        for event in reversed(self.store.events(job_id)):
            if endpoint:
                break
            if event.kind == "launched":
                endpoint = (event.data or {}).get("rdzv_endpoint")
        if not endpoint:
            raise JobStateError(
                f"Job {job_id} has not been launched yet, so its rendezvous endpoint is not "
                "known. Fix: start it first (`flextrain jobs show` then lists the endpoint), "
                "or pass --rdzv-endpoint HOST:PORT."
            )
        threads = job.config.get("num_threads") or max(1, self.hardware().cpu_cores // processes)
        return build_launch_command(
            job_id,
            job.config,
            self.settings,
            Allocation(threads=threads),
            rdzv_endpoint=endpoint,
            join=True,
        )

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
        if job.status in (TrainingStatus.PENDING, TrainingStatus.QUEUED):
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
        if job.pid is not None:
            terminate_tree(job.pid, self._pid_started_at(job_id), timeout=timeout)
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

    def read_log(self, job_id: str, tail: int = 200) -> str:
        job = self.require_job(job_id)
        if not job.log_path or not Path(job.log_path).exists():
            return ""
        lines = Path(job.log_path).read_text(errors="replace").splitlines()
        return "\n".join(lines[-tail:])

    def metric_history(self, job_id: str) -> list[dict[str, Any]]:
        """Every logged step and evaluation of a job, oldest first."""
        self.require_job(job_id)
        return self.store.metric_history(job_id)

    def plot_jobs(self, job_ids: list[str], out: Path | None = None) -> Path:
        """A PNG of loss, eval loss and learning rate per job, side by side."""
        histories = {job_id: self.metric_history(job_id) for job_id in job_ids}
        out = out or self.settings.home / "plots" / f"{'-'.join(job_ids)[:120]}.png"
        return plot_histories(histories, out)

    def events(self, job_id: str, after_id: int = 0) -> list[JobEvent]:
        """Warnings, resumes, interruptions and early stops of a job, oldest first."""
        self.require_job(job_id)
        return self.store.events(job_id, after_id)

    def system_samples(self, job_id: str) -> list[dict[str, Any]]:
        """CPU, memory and GPU use sampled by the worker while it ran."""
        self.require_job(job_id)
        return self.store.samples(job_id)

    def environment(self, job_id: str) -> TrainingEnvironment:
        job = self.require_job(job_id)
        return self.environments.layout(job_id, job.config.get("output_dir"))

    # -- internals ---------------------------------------------------------------------
    def resolve_auto_batch(
        self, config: AdvancedT, hardware: HardwareConstraints
    ) -> tuple[AdvancedT, str | None]:
        """Turn batch_size='auto' into a micro-batch and gradient accumulation for this machine.

        The micro-batch is the largest divisor of the effective batch whose estimated
        peak stays under the memory budget less AUTO_BATCH_MARGIN; accumulation makes
        up the rest, so the optimizer sees the same number of examples per step
        whatever the machine. Returns the config unchanged (and no message) otherwise.
        """
        if config.batch_size != "auto" or config.per_device_train_batch_size:
            return config, None
        effective = config.effective_batch_size or AUTO_EFFECTIVE_BATCH
        model = self.inspect_model(config.model_id)
        data = self.datasets.get(config.dataset_id)
        trial = config.model_copy(update={"batch_size": 1, "gradient_accumulation_steps": 1})
        setup = _estimator_setup(trial, model, data, hardware)
        budget, kind = memory_budget(hardware)
        fitting = largest_fitting_batch(
            model.architecture(), setup, budget * (1 - AUTO_BATCH_MARGIN), upper=effective
        )
        micro = max(d for d in range(1, max(fitting, 1) + 1) if effective % d == 0)
        accumulation = effective // micro
        resolved = config.model_copy(
            update={"batch_size": micro, "gradient_accumulation_steps": accumulation}
        )
        memory = "GPU" if kind == "gpu" else "system"
        message = (
            f"batch_size auto: {micro} per step x {accumulation} accumulation = {effective} "
            f"examples per optimizer step (largest that fits {100 * (1 - AUTO_BATCH_MARGIN):.0f}%"
            f" of {budget / 1024**3:.1f} GB {memory} memory: {fitting or 'none'})"
        )
        return resolved, message

    def start_warm_worker(self) -> None:
        """Start a worker process now for the next job this service launches, so that it
        imports the training libraries (about 4 s) while the job is being validated. For
        a front end about to create and start one job (`flextrain train`); not taken by
        a single-process job of this service, it is stopped when this process exits."""
        if self._warm_worker is not None or self.hardware().gpu_count:
            # With GPUs, which ones a job may see is only known at launch; a fresh
            # process starts with them from its first line.
            return
        warm = WarmWorker(warm_worker_command(), worker_environment())
        self._warm_worker = warm
        atexit.register(warm.discard)

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
        return self._build_spec(job, record=False)

    def _build_spec(
        self, job: TrainingJob, allocation: Allocation | None = None, *, record: bool = True
    ) -> RunSpec:
        config = ExpertTrainingConfig.from_basic(_config_from_job(job))
        if job.dataset_version:  # train on exactly the version the job was created with
            name = config.dataset_id.rpartition("@")[0] or config.dataset_id
            config = config.model_copy(update={"dataset_id": f"{name}@{job.dataset_version}"})
        hw = self.hardware()
        if allocation is not None:
            hw = hw.restricted_to(allocation.gpus)
        config, auto_batch = self.resolve_auto_batch(config, hw)
        if auto_batch and record:
            self.store.add_event(
                job.job_id,
                "auto_batch",
                auto_batch,
                data={
                    "batch_size": config.batch_size,
                    "gradient_accumulation_steps": config.gradient_accumulation_steps,
                },
            )
        issues, model, data = self.validate(config, hardware=hw)
        errors = [i for i in issues if i.severity == "error"]
        if errors:
            raise ConfigValidationError(issues)
        objective = choose_objective(config.training_type, model, data)
        resolved = self.models.resolve(config.model_id)
        env = self.environments.layout(job.job_id, config.output_dir)
        return RunSpec(
            job_id=job.job_id,
            config=config,
            model_path=str(resolved.path),
            objective=objective,
            precision=choose_precision(config, hw),
            lora_target_modules=config.lora_target_modules,
            data=DataSpec.from_info(data),
            output_dir=str(env.output_dir),
            checkpoint_dir=str(env.checkpoint_dir),
            model_dir=str(env.model_dir),
            temp_dir=str(env.temp_dir),
            num_threads=config.num_threads
            or (allocation.threads if allocation and allocation.threads else None)
            or max(1, hw.cpu_cores // config.num_processes),
            eval_data=DataSpec.from_info(self.datasets.get(config.eval_file))
            if config.eval_file
            else None,
            cache_dir=str(self.settings.home / "cache" / "tokenized"),
            allow_pickle_weights=self.settings.allow_pickle_weights,
            cpu_affinity=training_cpus(self.settings.reserved_cpus),
            config_fields=explicit_fields(config),
        )

    def _pid_started_at(self, job_id: str) -> float | None:
        return self.store.pid_started_at(job_id)

    def _reconcile(self, job: TrainingJob) -> TrainingJob:
        """A job that claims to run but whose worker is gone was interrupted.

        On this host the worker's pid (and its start time, against pid reuse) says
        whether it lives; a worker on another host is judged by its heartbeat.
        """
        if job.worker_host in (None, socket.gethostname()):
            started = job.pid_started_at
            if is_alive(
                job.pid, started if started is not None else self._pid_started_at(job.job_id)
            ):
                return job
        else:
            interval = float(job.config.get("monitor_interval") or 5.0)
            limit = max(HEARTBEAT_MISSES * interval, HEARTBEAT_GRACE)
            beat = job.heartbeat_at or job.updated_at
            if (datetime.now(UTC) - beat).total_seconds() < limit:
                return job
        job_dir = self.environments.layout(job.job_id, job.config.get("output_dir")).root
        killed_by_oom = oom.killed_by_oom(job_dir)
        oom.release(job_dir)
        if killed_by_oom:
            return self._after_oom_kill(job, job_dir, killed_by_oom)
        message = (
            "The worker process stopped without reporting a result (killed, out of memory, "
            f"machine restart?); resume continues from the latest checkpoint. Log: {job.log_path}"
        )
        changed = self.store.transition(
            job.job_id,
            [job.status],
            status=TrainingStatus.INTERRUPTED.value,
            error_message=message,
            completed_at=datetime.now(UTC),
        )
        if changed:
            self.store.add_event(job.job_id, "interrupted", message, level="warning")
        return self.store.get(job.job_id) or job

    def _after_oom_kill(self, job: TrainingJob, job_dir: Path, why: str) -> TrainingJob:
        """The kernel killed the worker for memory: with `oom_recovery` (and micro-batch
        left to halve, one process) queue it again from its last checkpoint with half the
        micro-batch and twice the accumulation, the same back-off the worker does for a
        MemoryError it survives; otherwise FAILED with what to change."""
        micro, accumulation = self._batch_in_use(job, job_dir)
        config = job.config
        recover = bool(config.get("oom_recovery", True)) and micro > 1
        if recover and not is_distributed(config):
            checkpoint = latest_checkpoint(
                self.environments.layout(job.job_id, config.get("output_dir")).checkpoint_dir
            )
            smaller = {"batch_size": micro // 2, "gradient_accumulation_steps": accumulation * 2}
            if config.get("per_device_train_batch_size"):  # it wins over batch_size
                smaller["per_device_train_batch_size"] = micro // 2
            message = (
                f"Out of memory at micro-batch {micro}: {why}. Continuing with micro-batch "
                f"{micro // 2} x {accumulation * 2} accumulation (same {micro * accumulation} "
                "examples per optimizer step) from "
                f"{checkpoint.name if checkpoint else 'the start'}."
            )
            level: EventLevel = "warning"
            status = TrainingStatus.INTERRUPTED
            given = sorted({*(job.config_fields or []), *smaller})
            values: dict[str, Any] = {
                "config_json": json.dumps({**config, **smaller}),
                "config_fields_json": json.dumps(given) if job.config_fields is not None else None,
            }
        else:
            reason = (
                "already at micro-batch 1"
                if micro <= 1
                else "oom_recovery is off"
                if not recover
                else "recovery is not done with several processes"
            )
            message = "OutOfMemoryAdvice: " + oom.out_of_memory_advice(
                config, micro, accumulation, f"{why}; {reason}"
            )
            status, level, values, smaller = (
                TrainingStatus.FAILED,
                "error",
                {},
                {},
            )
        if self.store.transition(
            job.job_id,
            [job.status],
            status=status.value,
            error_message=message,
            completed_at=datetime.now(UTC),
            **values,
        ):
            self.store.add_event(job.job_id, "oom_killed", message, level=level, data=smaller)
            updated = self.store.get(job.job_id)
            if updated is not None and status == TrainingStatus.INTERRUPTED:
                self._requeue(updated)  # started by the next scheduler tick
        return self.store.get(job.job_id) or job

    def _batch_in_use(self, job: TrainingJob, job_dir: Path) -> tuple[int, int]:
        """The micro-batch and accumulation the dead worker ran with: a back-off it made
        itself after its last (re)start, else what it was launched with (`job.json`,
        where batch_size "auto" is already resolved)."""
        for event in reversed(self.store.events(job.job_id)):
            if event.kind == "oom_backoff" and event.data:
                return int(event.data["batch_size"]), int(event.data["gradient_accumulation_steps"])
            if event.kind in ("resumed", "oom_killed"):
                break
        try:
            launched = json.loads((job_dir / "job.json").read_text())["config"]
        except (OSError, ValueError, KeyError):
            launched = job.config
        batch = launched.get("batch_size")
        micro = batch if isinstance(batch, int) else 1
        return micro, int(launched.get("gradient_accumulation_steps") or 1)


def training_cpus(reserved: int) -> list[int] | None:
    """The CPUs training runs on when `reserved` are kept for the server: all usable
    CPUs but the first `reserved` (None: no reservation, or too few CPUs)."""
    cpus = _usable_cpus()
    return cpus[reserved:] if reserved and len(cpus) > reserved else None


def server_cpus(reserved: int) -> list[int] | None:
    """The CPUs kept for the API server (the complement of `training_cpus`)."""
    cpus = _usable_cpus()
    return cpus[:reserved] if reserved and len(cpus) > reserved else None


def _usable_cpus() -> list[int]:
    """The CPUs this machine (or container) lets flextrain use: its cpuset cgroup's, not
    this process's own affinity, which the server and the workers narrow when they pin
    themselves (a worker ticking the scheduler must still see every CPU)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        _, controllers, rel = line.split(":", 2)
        if "cpuset" in controllers.split(",") or controllers == "":
            for name in ("cpuset.effective_cpus", "cpuset.cpus.effective"):
                folder = Path("/sys/fs/cgroup", "cpuset" if controllers else "", rel.lstrip("/"))
                cpus = _cpu_list(folder / name)
                if cpus:
                    return cpus
    return list(range(os.cpu_count() or 1))


def _cpu_list(path: Path) -> list[int]:
    """A kernel CPU list ("0-3,6") as numbers; [] when unreadable."""
    try:
        text = path.read_text().strip()
    except OSError:
        return []
    cpus: list[int] = []
    for part in filter(None, text.split(",")):
        first, _, last = part.partition("-")
        cpus.extend(range(int(first), int(last or first) + 1))
    return cpus


def _estimator_setup(
    config: BasicTrainingConfig,
    model: ModelInfo,
    data: DatasetInfo,
    hardware: HardwareConstraints,
) -> TrainingSetup:
    """The memory estimator's view of `config` for this model, data and machine
    (ConfigValidationError when the data does not suit the training type)."""
    advanced = AdvancedTrainingConfig.from_basic(config)
    objective = choose_objective(advanced.training_type, model, data)
    return training_setup(model, advanced, hardware, objective, max(len(data.labels), 2))


def _schedule_of(config: BasicTrainingConfig, data: DatasetInfo) -> list[float] | None:
    """The expression schedule's lr at every step of this run (ConfigValidationError if it
    goes negative or non-finite at a step the sample run of validation did not reach)."""
    if not isinstance(config, ExpertTrainingConfig) or not config.lr_schedule_expr:
        return None
    from flextrain.config.expression import ExpressionError, schedule_values

    rows = max(1, int(data.num_rows * (1 - (0 if config.eval_file else config.eval_split))))
    per_step = config.train_batch_size * config.gradient_accumulation_steps * config.world_size
    steps_per_epoch = max(1, -(-rows // per_step))
    total = config.max_steps if config.max_steps > 0 else steps_per_epoch * config.num_epochs
    warmup = config.warmup_steps or int(config.warmup_ratio * total)
    try:
        return schedule_values(
            config.lr_schedule_expr,
            lr=config.learning_rate,
            total_steps=total,
            warmup=warmup,
            steps_per_epoch=steps_per_epoch,
        )
    except ExpressionError as exc:
        raise ConfigValidationError(
            [ValidationIssue("lr_schedule_expr", str(exc), "change the expression.")]
        ) from None


def output_dir_issue(output_dir: str | None) -> ValidationIssue | None:
    """Why the job's output folder cannot be written, or None.

    Probed by creating (and removing) a file in the folder, or in the nearest
    folder above it that exists (where it would be created): permission bits say
    nothing to root, nor about a read-only mount. A path through a regular file
    is named as such. Checked when a job is created and again when it starts, so
    that the refusal comes from the front end and never from a worker an hour in.
    """
    if not output_dir:
        return None  # the job's own folder in FLEXTRAIN_HOME, checked on creating it
    target = Path(output_dir).expanduser()
    probe = target
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    fix = "choose a folder you can write to (not on a read-only mount), or fix its permissions."
    if not probe.is_dir():
        return ValidationIssue(
            "output_dir",
            f"{target} cannot be created: {probe} is a file, not a folder.",
            "choose another output_dir, or move that file away.",
        )
    try:
        with tempfile.TemporaryFile(dir=probe, prefix=".flextrain-write-test-"):
            pass
    except OSError as exc:
        where = "" if probe == target else f" (its nearest existing folder {probe})"
        return ValidationIssue(
            "output_dir",
            f"{target}{where} is not writable: {exc.strerror or exc}.",
            fix,
        )
    return None


def _free_port() -> int:
    """A TCP port free on this machine now, for a multi-node job's rendezvous."""
    with socket.socket() as sock:
        sock.bind(("", 0))
        return int(sock.getsockname()[1])


def _checkpoint_step(checkpoint: Path | None) -> int:
    """The global step a `checkpoint-N` folder was saved at; 0 for none."""
    if checkpoint is None:
        return 0
    return int(checkpoint.name.rpartition("-")[2])


def _config_from_job(job: TrainingJob) -> BasicTrainingConfig:
    """The job's config as it was created: its values, and the fields it was given."""
    cls: type[BasicTrainingConfig] = (
        BasicTrainingConfig
        if job.mode == TrainingMode.BASIC
        else ExpertTrainingConfig
        if job.mode == TrainingMode.EXPERT
        else AdvancedTrainingConfig
    )
    return restore_config(cls, job.config, job.config_fields)
