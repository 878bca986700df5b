"""The one place where configuration, registries, the job store and the worker meet.

Front ends (Python API, CLI, later REST) call only this. It validates, resolves
ids to files, writes the run spec, launches and supervises worker processes,
and reconciles the store with reality (a worker killed from outside is shown
FAILED, not left "training" forever).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path

from flextrain.config.enums import TrainingMode, TrainingStatus, TrainingType
from flextrain.config.schemas import AdvancedTrainingConfig, BasicTrainingConfig
from flextrain.config.validation import (
    ConfigValidationError,
    TrainingParameterValidator,
    ValidationIssue,
)
from flextrain.data.registry import DatasetInfo, DatasetRegistry
from flextrain.db import make_engine, make_sessionmaker
from flextrain.hardware.detect import HardwareConstraints
from flextrain.jobs.environment import TrainingEnvironment, TrainingEnvironmentManager
from flextrain.jobs.process import (
    build_worker_command,
    is_alive,
    process_start_time,
    spawn,
    terminate_tree,
)
from flextrain.jobs.spec import DataSpec, Objective, Precision, RunSpec
from flextrain.jobs.store import JobStore, TrainingJob
from flextrain.models.compatibility import ModelCompatibility, ModelCompatibilityChecker
from flextrain.models.inspect import ModelInfo, inspect_model
from flextrain.models.resolve import ModelResolver
from flextrain.settings import Settings


class JobNotFoundError(LookupError):
    """No job has this id."""


class JobStateError(RuntimeError):
    """The job is in a state that does not allow the requested action."""


def choose_objective(ttype: TrainingType, model: ModelInfo, data: DatasetInfo) -> Objective:
    """The training objective for a type, a model and a dataset, or a clear error.

    Labelled data means classification for every type except continued
    pre-training, which always trains the language-model objective on the text.
    """
    classify = ttype == TrainingType.TASK_SPECIFIC or (
        data.has_labels and ttype != TrainingType.CONTINUED_PRETRAINING
    )
    if classify:
        if not model.supports_sequence_classification:
            raise ConfigValidationError(
                [
                    ValidationIssue(
                        "training_type",
                        f"model type '{model.model_type}' has no sequence-classification head.",
                        "use a model supported by AutoModelForSequenceClassification, "
                        "or a dataset without labels for language modelling.",
                    )
                ]
            )
        return "sequence_classification"
    if model.is_encoder and model.supports_masked_lm:
        return "masked_lm"
    if model.supports_causal_lm:
        return "causal_lm"
    raise ConfigValidationError(
        [
            ValidationIssue(
                "training_type",
                f"model type '{model.model_type}' has no language-model head for text data.",
                "use a labelled dataset (classification) or a causal/masked LM model.",
            )
        ]
    )


def choose_precision(config: AdvancedTrainingConfig, hw: HardwareConstraints) -> Precision:
    """Explicit fp16/bf16 win; otherwise use_mixed_precision picks what the GPU does best."""
    if config.bf16:
        return "bf16"
    if config.fp16:
        return "fp16"
    if config.use_mixed_precision and hw.gpu_count > 0:
        return "bf16" if hw.supports_bf16 else "fp16"
    return "fp32"


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
        self.datasets = DatasetRegistry(sessions)
        self.models = ModelResolver(self.settings.builtin_models_dir)
        self.environments = TrainingEnvironmentManager(self.settings.jobs_dir)
        self.validator = TrainingParameterValidator()
        self.compatibility = ModelCompatibilityChecker(self.models)
        self._hardware_probe = hardware_probe or (
            lambda: HardwareConstraints.detect_current(self.settings.home)
        )
        self._inspect = lru_cache(maxsize=32)(self._inspect_uncached)

    # -- facts -------------------------------------------------------------------------
    def hardware(self) -> HardwareConstraints:
        return self._hardware_probe()

    def inspect_model(self, model_id: str) -> ModelInfo:
        return self._inspect(model_id)

    def _inspect_uncached(self, model_id: str) -> ModelInfo:
        return inspect_model(self.models.resolve_config(model_id).path)

    def check_compatibility(
        self, model_id: str, training_type: TrainingType | None = None, **kwargs: int
    ) -> ModelCompatibility:
        return self.compatibility.check(model_id, training_type, hardware=self.hardware(), **kwargs)

    def validate(
        self, config: BasicTrainingConfig, *, hardware: HardwareConstraints | None = None
    ) -> tuple[list[ValidationIssue], ModelInfo, DatasetInfo]:
        """Every issue of `config` against its model, its data and (if given) hardware.

        Raises ModelNotFoundError / DatasetNotFoundError when the ids resolve to nothing.
        """
        model = self.inspect_model(config.model_id)
        data = self.datasets.get(config.dataset_id)
        issues = self.validator.validate(
            config, hardware=hardware, model=model.facts(), dataset=data.facts()
        )
        if not any(i.severity == "error" for i in issues):
            try:
                choose_objective(config.training_type, model, data)
            except ConfigValidationError as exc:
                issues.extend(exc.issues)
        return issues, model, data

    # -- jobs --------------------------------------------------------------------------
    def create_job(
        self,
        config: BasicTrainingConfig,
        *,
        mode: TrainingMode | None = None,
        owner: str | None = None,
        strict_hardware: bool = False,
    ) -> TrainingJob:
        """Validate and record a PENDING job with its folders.

        Problems that depend on this machine (fp16 without a GPU) are errors when
        `strict_hardware`, else warnings kept on the job and checked again at start:
        a job is a plan and may be started where the hardware fits.
        """
        hw = self.hardware()
        issues, _model, _data = self.validate(config, hardware=hw)
        static_issues, _, _ = self.validate(config)
        static = {(i.field, i.message) for i in static_issues}
        hardware_only = [i for i in issues if (i.field, i.message) not in static]
        errors = [i for i in static_issues if i.severity == "error"]
        if strict_hardware:
            errors += [i for i in hardware_only if i.severity == "error"]
        if errors:
            raise ConfigValidationError(issues if strict_hardware else static_issues)
        warnings = [str(i) for i in issues if i.severity == "warning" or i in hardware_only]
        if mode is None:
            mode = (
                TrainingMode.ADVANCED
                if isinstance(config, AdvancedTrainingConfig)
                else TrainingMode.BASIC
            )
        job_id = uuid.uuid4().hex[:12]
        env = self.environments.setup(job_id, config.output_dir)
        try:
            return self.store.create(
                job_id=job_id,
                mode=mode,
                config=config.model_dump(mode="json"),
                output_dir=str(env.output_dir),
                log_path=str(env.log_file),
                warnings=warnings,
                owner=owner,
            )
        except Exception:
            self.environments.remove(env)
            raise

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
        self, *, status: TrainingStatus | None = None, limit: int = 100, offset: int = 0
    ) -> list[TrainingJob]:
        jobs = self.store.list_jobs(status=status, limit=limit, offset=offset)
        return [self._reconcile(j) if j.status.is_active and j.pid else j for j in jobs]

    def start_job(self, job_id: str) -> TrainingJob:
        """Re-validate against this machine, write the run spec and launch the worker."""
        job = self.require_job(job_id)
        if job.status != TrainingStatus.PENDING:
            raise JobStateError(
                f"Job {job_id} is {job.status.value}; only a pending job can be started."
            )
        if not self.store.update(job_id, status=TrainingStatus.VALIDATING):
            raise JobStateError(f"Job {job_id} changed state while starting.")
        try:
            spec = self._build_spec(job)
        except Exception as exc:
            self.store.update(
                job_id,
                status=TrainingStatus.FAILED,
                error_message=str(exc),
                completed_at=datetime.now(UTC),
            )
            raise
        env = self.environments.layout(job_id, job.config.get("output_dir"))
        env.config_file.write_text(spec.model_dump_json(indent=2))
        argv, proc_env = build_worker_command(
            job_id=job_id,
            database_url=self.settings.resolved_database_url,
            home=self.settings.home,
        )
        # Status first: once the worker runs, it alone moves the status forward.
        self.store.update(job_id, status=TrainingStatus.PREPARING, started_at=datetime.now(UTC))
        proc = spawn(argv, proc_env, env.log_file)
        self.store.update(job_id, pid=proc.pid, pid_started_at=process_start_time(proc.pid))
        return self.require_job(job_id)

    def cancel_job(self, job_id: str, timeout: float = 5.0) -> TrainingJob:
        """Mark the job CANCELLED, then stop its worker and all the worker's children."""
        job = self.require_job(job_id)
        if job.is_finished:
            raise JobStateError(f"Job {job_id} is already {job.status.value}.")
        self.store.update(job_id, status=TrainingStatus.CANCELLED, completed_at=datetime.now(UTC))
        if job.pid is not None:
            terminate_tree(job.pid, self._pid_started_at(job_id), timeout=timeout)
        return self.require_job(job_id)

    def wait(self, job_id: str, timeout: float | None = None, poll: float = 0.5) -> TrainingJob:
        """Block until the job is finished (or `timeout` seconds pass)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.require_job(job_id)
            if job.is_finished:
                return job
            if deadline is not None and time.monotonic() > deadline:
                return job
            time.sleep(poll)

    def read_log(self, job_id: str, tail: int = 200) -> str:
        job = self.require_job(job_id)
        if not job.log_path or not Path(job.log_path).exists():
            return ""
        lines = Path(job.log_path).read_text(errors="replace").splitlines()
        return "\n".join(lines[-tail:])

    def environment(self, job_id: str) -> TrainingEnvironment:
        job = self.require_job(job_id)
        return self.environments.layout(job_id, job.config.get("output_dir"))

    # -- internals ---------------------------------------------------------------------
    def _build_spec(self, job: TrainingJob) -> RunSpec:
        config = AdvancedTrainingConfig.from_basic(_config_from_job(job))
        hw = self.hardware()
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
            data=DataSpec(
                path=str(data.path),
                format=data.format,
                text_column=data.text_column,
                label_column=data.label_column,
                labels=data.labels,
                prompt_columns=data.prompt_columns,
            ),
            output_dir=str(env.output_dir),
            checkpoint_dir=str(env.checkpoint_dir),
            model_dir=str(env.model_dir),
            temp_dir=str(env.temp_dir),
            num_threads=config.num_threads or hw.cpu_cores,
        )

    def _pid_started_at(self, job_id: str) -> float | None:
        return self.store.pid_started_at(job_id)

    def _reconcile(self, job: TrainingJob) -> TrainingJob:
        """A job that claims to run but whose worker is gone has failed."""
        if is_alive(job.pid, self._pid_started_at(job.job_id)):
            return job
        message = (
            "The worker process exited without reporting a result (killed, out of memory?). "
            f"See the log: {job.log_path}"
        )
        self.store.update(
            job.job_id,
            status=TrainingStatus.FAILED,
            error_message=message,
            completed_at=datetime.now(UTC),
        )
        return self.store.get(job.job_id) or job


def _config_from_job(job: TrainingJob) -> BasicTrainingConfig:
    if job.mode == TrainingMode.BASIC:
        return BasicTrainingConfig(**job.config)
    return AdvancedTrainingConfig(**job.config)
