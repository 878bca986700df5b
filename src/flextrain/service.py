"""The facade the front ends use: the Python API, the CLI, REST and the web page.

It builds the service layer for one flextrain home and offers what a front end may
do, and nothing else; the work is done by the modules named for it:

- `estimate.plan.Planner`: the check before training (validation, memory, what fits);
- `jobs.control.JobControl`: create, start, resume, cancel, wait (the job's life);
- `jobs.lifecycle`: the one table of status changes a job may make;
- `jobs.scheduler.Scheduler`: the queue, started jobs that fit the machine;
- `jobs.launcher.Launcher` and `jobs.executor`: the run spec, the command, and where
  it runs (`FLEXTRAIN_EXECUTOR`);
- `data`, `models`, `jobs.checkpoints`, `accounts`: datasets, models, checkpoints, users, audit.

A front end needs only this module and `flextrain.public` (the types, constants and
errors its methods take, return and raise); a contract in pyproject.toml keeps it so.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flextrain.accounts.audit import AuditLog
from flextrain.accounts.users import UserStore
from flextrain.config.enums import TrainingMode, TrainingStatus, TrainingType
from flextrain.data.manager import TrainingDataManager
from flextrain.data.versions import dataset_folder
from flextrain.db import make_sessionmaker
from flextrain.estimate.plan import Planner
from flextrain.hardware.detect import HardwareConstraints
from flextrain.jobs import checkpoints
from flextrain.jobs.control import JobControl
from flextrain.jobs.environment import TrainingEnvironment, TrainingEnvironmentManager
from flextrain.jobs.executor import ClusterExecutor, LocalExecutor
from flextrain.jobs.executors import make_executor
from flextrain.jobs.launcher import Launcher
from flextrain.jobs.plots import HEALTH_MARKS, plot_histories
from flextrain.jobs.resources import Allocation
from flextrain.jobs.scheduler import LOOP_INTERVAL, QueueSnapshot, Scheduler, SchedulerLoop
from flextrain.jobs.spec import RunSpec
from flextrain.jobs.store import JobEvent, JobStore, TrainingJob
from flextrain.migrations import make_engine
from flextrain.models.compatibility import ModelCompatibilityChecker
from flextrain.models.registry import ModelRegistry, RegisteredModel
from flextrain.models.resolve import ModelResolver
from flextrain.settings import Settings

if TYPE_CHECKING:  # the modules below are imported when their method first runs
    from flextrain.data.checks import DataReport
    from flextrain.data.formats import SourceFormat
    from flextrain.data.preview import Preview
    from flextrain.data.registry import DatasetInfo
    from flextrain.data.shapes import ColumnMap, Shape
    from flextrain.jobs.scheduler import TickReport
    from flextrain.models.evaluate import EvaluationResult, Split, TryResult
    from flextrain.models.export import ExportFormat, ExportResult, MergeResult
    from flextrain.models.gguf_parity import ParityReport
    from flextrain.models.hub import HubAccess, ModelFilters, TrainableListing
    from flextrain.models.pull import PullProgress, PullResult


class TrainingService:
    """Creates, starts, cancels and reports training jobs for one flextrain home."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        hardware_probe: Callable[[], HardwareConstraints] | None = None,
        models: ModelResolver | None = None,
        datasets: TrainingDataManager | None = None,
        model_registry: ModelRegistry | None = None,
    ) -> None:
        """`models`, `datasets` and `model_registry` replace flextrain's own resolver of
        model ids, dataset manager and model registry (the seed's constructor takes
        them); by default they are built for `settings`' home."""
        self.settings = settings or Settings()
        self.settings.ensure_home()
        self.engine = make_engine(self.settings.resolved_database_url)
        sessions = make_sessionmaker(self.engine)
        self.store = JobStore(sessions)
        self.users = UserStore(sessions)
        self.audit = AuditLog(sessions)
        self.datasets = datasets or TrainingDataManager(sessions, self.settings.home / "datasets")
        # A registered model name resolves to its folder wherever a model id is taken.
        self.models = models or ModelResolver(
            self.settings.builtin_models_dir,
            allow_pickle=self.settings.allow_pickle_weights,
            registered=lambda name: self.model_registry.folder_for(name),
        )
        self._hardware_probe = hardware_probe or (
            lambda: HardwareConstraints.detect_current(self.settings.home)
        )
        self.planner = Planner(
            self.models,
            self.datasets,
            self.hardware,
            self.settings.home / "cache" / "model-info",
            jobs_dir=self.settings.jobs_dir,
        )
        self.model_registry = model_registry or ModelRegistry(
            sessions, self.models, on_change=self.planner.forget_models
        )
        self.environments = TrainingEnvironmentManager(self.settings.jobs_dir)
        self.executor = make_executor(self.settings, self.store)
        self.launcher = Launcher(
            self.settings, self.store, self.environments, self.planner, self.executor
        )
        self.jobs = JobControl(
            self.store,
            self.environments,
            self.planner,
            self.launcher,
            self.executor,
            tick=lambda: self.scheduler.tick(),
        )

        # -- jobs: their life (jobs.control) -----------------------------------------------
        self.create_job = self.jobs.create_job
        self.start_job = self.jobs.start_job
        self.resume_job = self.jobs.resume_job
        self.cancel_job = self.jobs.cancel_job
        self.plan_start = self.jobs.plan_start
        self.get_job = self.jobs.get_job
        self.require_job = self.jobs.require_job
        self.list_jobs = self.jobs.list_jobs
        self.count_jobs = self.jobs.count_jobs
        self.running_jobs = self.jobs.running_jobs
        self.watch_cluster_jobs = self.jobs.watch_cluster_jobs
        self.recover_jobs = self.jobs.recover_jobs
        self.wait = self.jobs.wait
        self.tick_while_queued = self.jobs.tick_while_queued

        # -- the check before training (estimate.plan) -------------------------------------
        self.validate = self.planner.validate
        self.check_compatibility = self.planner.check_compatibility
        self.inspect_model = self.planner.inspect_model
        self.resolve_auto_batch = self.planner.resolve_auto_batch
        self.estimated_peak_gb = self.planner.estimated_peak_gb

        # -- datasets (data.manager) -------------------------------------------------------
        self.add_dataset = self.datasets.add
        self.register_dataset = self.datasets.register
        self.validate_dataset = self.datasets.validate
        self.get_dataset = self.datasets.get
        self.describe_dataset = self.datasets.describe
        self.list_datasets = self.datasets.list_datasets
        self.dataset_names = self.datasets.names
        self.dataset_versions = self.datasets.versions
        self.dataset_access = self.datasets.access
        self.jobs_using_dataset = self.store.jobs_using
        self.queued_jobs = self.store.queued_jobs

        # -- models (models.resolve, models.registry) --------------------------------------
        self.resolve_model = self.models.resolve
        self.resolve_model_config = self.models.resolve_config
        self.register_model = self.model_registry.add
        self.find_registered_model = self.model_registry.find
        self.get_registered_model = self.model_registry.get
        self.list_registered_models = self.model_registry.list
        self.remove_registered_model = self.model_registry.remove
        self.remove_model_versions = self.model_registry.remove_versions
        self.model_versions = self.model_registry.versions
        self.diff_models = self.model_registry.diff
        self.jobs_using_model = self.model_registry.jobs_using

    # -- facts -------------------------------------------------------------------------
    def hardware(self) -> HardwareConstraints:
        """This machine as training may use it: `reserved_cpus` cores are left to the API
        server and the system, so estimates, validation and the scheduler all count the
        cores a job will really get. With a cluster executor it is one of the cluster's
        nodes (a job runs there, not here), when the cluster can tell."""
        if isinstance(self.executor, ClusterExecutor):
            node = self.executor.node_hardware()
            if node is not None:
                return node
        hardware = self._hardware_probe()
        reserved = self.settings.reserved_cpus
        if reserved and hardware.cpu_cores > 1:
            cores = max(1, hardware.cpu_cores - reserved)
            hardware = hardware.model_copy(update={"cpu_cores": cores})
        return hardware

    @property
    def compatibility(self) -> ModelCompatibilityChecker:
        return self.planner.compatibility

    @property
    def dataset_storage(self) -> Path:
        """Where uploaded datasets are stored (paths under it are the server's own)."""
        return self.datasets.root

    def delete_dataset(self, name: str, version: str | None = None, *, force: bool = False) -> Any:
        """Delete a dataset (or one version), refused while jobs use it unless `force`."""
        return self.datasets.delete(name, version, used_by=self.store.jobs_using, force=force)

    def dataset_folder(self, name: str) -> Path:
        """The folder dataset `name`'s versions are stored in (no name leads out of it)."""
        return dataset_folder(self.datasets.root, name)

    @staticmethod
    def check_dataset_file(
        path: Path, *, shape: Shape | None = None, columns: ColumnMap | None = None
    ) -> tuple[list[dict[str, Any]], DataReport, SourceFormat, ColumnMap]:
        """Read, shape and check a file, registering nothing (`data.manager.load_and_check`)."""
        from flextrain.data.manager import load_and_check

        return load_and_check(path, shape=shape, columns=columns)

    @staticmethod
    def preview_dataset(info: DatasetInfo, limit: int) -> Preview:
        """Up to `limit` rows of the dataset `info` describes, as training reads them."""
        from flextrain.data.preview import first_rows

        return first_rows(info, limit)

    # -- model versions (models.registry) ----------------------------------------------
    def promote_model(
        self, source: str, name: str, description: str = "", owner: str | None = None
    ) -> RegisteredModel:
        """Make `source` the newest version of `name`: a registered version (`other:3`,
        `other`), else a completed job's model by job id. A registered reference wins
        over a job id spelled alike (a job with no run name registers under its id)."""
        from flextrain.models.refs import ModelNotRegisteredError, ModelRegistryError

        if self.model_registry.find(source) is not None:
            return self.model_registry.promote(source, name, description, owner)
        job = self.get_job(source) if source.isalnum() and len(source) <= 32 else None
        if job is None:
            shown = source if len(source) <= 60 else source[:60] + "..."
            raise ModelNotRegisteredError(
                f"{shown!r} is neither a registered model nor a job. Fix: give a version "
                "(`flextrain models list`) or a completed job's id (`flextrain jobs list`)."
            )
        if job.status != TrainingStatus.COMPLETED or not job.model_path:
            raise ModelRegistryError(
                f"Job {job.job_id} is {job.status.value}: it has no finished model to "
                "promote. Fix: promote a completed job's model."
            )
        return self.model_registry.promote(source, name, description, owner, job=job)

    # -- models from the hub (models.hub, models.pull) ---------------------------------
    def list_trainable_models(
        self, filters: ModelFilters, visible: Callable[[RegisteredModel], bool] | None = None
    ) -> TrainableListing:
        """Built-in, registered (those `visible` keeps) and, when asked, hub models."""
        from flextrain.models.hub import list_trainable

        local = [m for m in self.list_registered_models() if visible is None or visible(m)]
        return list_trainable(filters, check=self.check_compatibility, local=local)

    @staticmethod
    def pull_access(model_id: str) -> HubAccess:
        """The hub access for a pull of `model_id`, refused for a bad id or when offline."""
        from flextrain.models.hub import HubAccess, HubOfflineError, offline_message
        from flextrain.models.pull import check_model_id

        check_model_id(model_id)
        access = HubAccess.from_env()
        if access.offline:
            raise HubOfflineError(offline_message(model_id))
        return access

    @staticmethod
    def pull_model(
        model_id: str,
        revision: str = "main",
        *,
        access: HubAccess | None = None,
        progress: Callable[[PullProgress], None] | None = None,
    ) -> PullResult:
        """Download a hub model into the hub cache (static: a pull needs no flextrain home)."""
        from flextrain.models.pull import pull

        return pull(model_id, revision=revision, access=access, progress=progress)

    # -- the queue ---------------------------------------------------------------------
    @cached_property
    def scheduler(self) -> Scheduler:
        """This home's scheduler; its ticks are serialised across processes by a file lock."""
        return Scheduler(self)

    def queue(self) -> QueueSnapshot:
        """Queued jobs in start order (position, priority, why each waits) and the running
        jobs with the GPUs and threads they hold."""
        return self.scheduler.snapshot()

    def scheduler_loop(
        self,
        interval: float = LOOP_INTERVAL,
        on_report: Callable[[TickReport], None] | None = None,
    ) -> SchedulerLoop:
        """A loop ticking this home's scheduler (`start`: a thread, `run`: in the foreground)."""
        return SchedulerLoop(self, interval=interval, on_report=on_report)

    def launch(
        self, job: TrainingJob, resume_from: Path | None, allocation: Allocation | None = None
    ) -> None:
        """Launch a job the scheduler took from the queue (for the scheduler only)."""
        self.launcher.launch(job, resume_from, allocation)

    def start_warm_worker(self) -> None:
        """Start a worker process now for the next job this service launches, so that it
        imports the training libraries (about 4 s) while the job is being validated. For
        a front end about to create and start one job (`flextrain train`). Not with GPUs
        (which ones a job may see is only known at launch) nor other executors."""
        if isinstance(self.executor, LocalExecutor) and not self.hardware().gpu_count:
            self.executor.prepare()

    def join_command(
        self, job_id: str, rdzv_endpoint: str | None = None
    ) -> tuple[list[str], dict[str, str]]:
        """The torchrun command that makes this machine one more node of a multi-node job."""
        return self.launcher.join_command(self.require_job(job_id), rdzv_endpoint)

    # -- what a job left ---------------------------------------------------------------
    def read_log(self, job_id: str, tail: int = 200) -> str:
        """The last `tail` lines of the job's log, wherever its executor ran it."""
        return self.executor.read_log(self.require_job(job_id), tail)

    def metric_history(self, job_id: str) -> list[dict[str, Any]]:
        """Every logged step and evaluation of a job, oldest first."""
        self.require_job(job_id)
        return self.store.metric_history(job_id)

    def plot_jobs(self, job_ids: list[str], out: Path | None = None) -> Path:
        """A PNG of loss, eval loss, learning rate and gradient norm per job, side by
        side, with health events marked at their step."""
        histories = {job_id: self.metric_history(job_id) for job_id in job_ids}
        marks = {
            job_id: [
                (int(e.data["step"]), e.kind)
                for e in self.events(job_id)
                if e.kind in HEALTH_MARKS and isinstance(e.data.get("step"), int)
            ]
            for job_id in job_ids
        }
        out = out or self.settings.home / "plots" / f"{'-'.join(job_ids)[:120]}.png"
        return plot_histories(histories, out, marks)

    def events(self, job_id: str, after_id: int = 0) -> list[JobEvent]:
        """Warnings, resumes, interruptions and early stops of a job, oldest first."""
        self.require_job(job_id)
        return self.store.events(job_id, after_id)

    def system_samples(self, job_id: str) -> list[dict[str, Any]]:
        """CPU, memory and GPU use sampled by the worker while it ran."""
        self.require_job(job_id)
        return self.store.samples(job_id)

    def environment(self, job_id: str) -> TrainingEnvironment:
        """The job's folders: its output, checkpoints, log and run spec."""
        job = self.require_job(job_id)
        return self.environments.layout(job_id, job.settings.output_dir)

    def setup_environment(
        self, job_id: str, output_dir: str | Path | None = None
    ) -> TrainingEnvironment:
        """Create (or re-check) a job's folders: disk space and write permission first."""
        return self.environments.setup(job_id, output_dir)

    async def setup_environment_for(
        self,
        model_id: str,
        training_type: TrainingType | str,
        training_mode: TrainingMode | str = TrainingMode.BASIC,
        job_id: str | None = None,
    ) -> TrainingEnvironment:
        """The original module's environment set-up: a new job folder under this home's
        jobs, described with the model, type, mode and this machine's hardware."""
        return await self.environments.setup_environment(
            model_id, training_type, training_mode, job_id
        )

    def run_spec(self, job_id: str) -> RunSpec:
        """The run spec the job's worker read (OSError before its first launch)."""
        return RunSpec.read(self.environment(job_id).root)

    def list_checkpoints(self, job_id: str) -> list[checkpoints.CheckpointInfo]:
        """The job's complete checkpoints, oldest step first, with losses and size."""
        return checkpoints.list_checkpoints(self.environment(job_id).checkpoint_dir)

    def prune_checkpoints(
        self, job_id: str, keep: list[int] | None = None
    ) -> tuple[list[int], int]:
        """Delete all but `keep` (default: latest and best): (steps deleted, bytes freed)."""
        return checkpoints.prune_checkpoints(self.environment(job_id).checkpoint_dir, keep)

    def export_checkpoint(self, job_id: str, step: int | None, destination: Path) -> Path:
        """Copy what loading checkpoint `step` (None: latest) needs into `destination`."""
        return checkpoints.export_checkpoint(
            self.environment(job_id).checkpoint_dir, step, destination
        )

    # -- after training (models.export, models.evaluate): in this process -------------
    def merge_model(
        self, job_id: str, out_dir: str | Path | None = None, *, force: bool = False
    ) -> MergeResult:
        """Merge a LoRA job's adapter into its base model and save it (safetensors)."""
        from flextrain.models.export import merge

        return merge(self, job_id, out_dir, force=force)

    def export_model(
        self,
        job_id: str,
        out_dir: str | Path,
        *,
        adapter_only: bool = False,
        force: bool = False,
        full_config: bool = False,
        format: ExportFormat = "vllm",
        quant: str | None = None,
        verify: bool = True,
    ) -> ExportResult:
        """Write the trained model and a README.md model card to `out_dir`: a safetensors
        folder with its tokenizer (format vllm), or one GGUF file checked against the
        trained model (format gguf)."""
        from flextrain.models.export_gguf import export_as

        return export_as(
            self,
            job_id,
            out_dir,
            adapter_only=adapter_only,
            force=force,
            full_config=full_config,
            format=format,
            quant=quant,
            verify=verify,
        )

    def verify_export(self, path: str | Path, *, job_id: str | None = None) -> ParityReport:
        """Check an export made earlier against the job its flextrain.json names (which
        must be `job_id`, when given): a GGUF file read back by transformers, or a
        safetensors folder loaded on its own."""
        from flextrain.models.export_check import verify_export

        return verify_export(self, path, job_id=job_id)

    def try_model(
        self, job_id: str, texts: list[str], *, max_new_tokens: int = 32, chat: bool | None = None
    ) -> TryResult:
        """The trained and the base model's answers to each text, side by side."""
        from flextrain.models.evaluate import try_model

        return try_model(self, job_id, texts, max_new_tokens=max_new_tokens, chat=chat)

    def evaluate_model(
        self,
        job_id: str,
        dataset_id: str | None = None,
        *,
        split: Split | None = None,
        limit: int | None = 1000,
        batch_size: int = 16,
    ) -> EvaluationResult:
        """Loss or accuracy and F1 of the trained and the base model on a dataset."""
        from flextrain.models.evaluate import evaluate

        return evaluate(self, job_id, dataset_id, split=split, limit=limit, batch_size=batch_size)

    def close(self) -> None:
        """Release the database connections (the service is not used afterwards)."""
        self.engine.dispose()


def tick_after_exit(home: Path, database_url: str) -> None:
    """Start the next queued jobs now that a job's processes have ended (see
    `jobs.scheduler.tick_after_exit`); here because it builds a whole service."""
    from flextrain.jobs.scheduler import tick_after_exit as tick

    tick(home, database_url, TrainingService)
