"""FlexibleTrainingInterface: the seed's Python API over TrainingService.

Methods that may take time (model inspection, environment checks, launching a
worker) are async and run in a thread so an event loop stays responsive;
`get_training_job` and `list_training_jobs` are plain reads and synchronous,
as the seed's example calls them (`interface.get_training_job(id).progress`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flextrain.config.enums import TrainingMode, TrainingStatus, TrainingType
from flextrain.config.schemas import (
    AdvancedTrainingConfig,
    BasicTrainingConfig,
    ExpertTrainingConfig,
)
from flextrain.hardware.detect import HardwareConstraints
from flextrain.public import (
    DatasetInfo,
    EvaluationResult,
    ExportFormat,
    ExportResult,
    JobEvent,
    MergeResult,
    ModelCompatibility,
    ModelDiff,
    ModelFilters,
    ModelRegistry,
    ModelResolver,
    ParityReport,
    PullProgress,
    PullResult,
    QueueSnapshot,
    RegisteredModel,
    Split,
    TrainableListing,
    TrainingDataManager,
    TrainingEnvironment,
    TrainingJob,
    TryResult,
)
from flextrain.service import TrainingService
from flextrain.settings import Settings

logger = logging.getLogger(__name__)


class FlexibleTrainingInterface:
    """Check, create, start, watch and cancel training jobs from Python.

    The three service arguments mirror the seed's constructor. Each defaults to
    flextrain's own component: `enhanced_hf_service` resolves model ids
    (ModelResolver), `training_data_manager` names datasets (TrainingDataManager),
    `system_model_manager` keeps registered model folders and trained models
    (ModelRegistry).
    """

    def __init__(
        self,
        enhanced_hf_service: Any = None,
        training_data_manager: Any = None,
        system_model_manager: Any = None,
        base_dir: str | Path | None = None,
        *,
        settings: Settings | None = None,
        service: TrainingService | None = None,
    ) -> None:
        """The original module's constructor, positionally or by keyword. Each service
        is used when it is flextrain's own (ModelResolver, TrainingDataManager,
        ModelRegistry); the original's services (its Hugging Face service, data manager,
        system model manager) are set aside with a logged note, as flextrain reads
        models, data and registered models itself (docs/compat.md). `base_dir`, where the
        original kept its training environments, is the home (FLEXTRAIN_HOME) here."""
        own = (ModelResolver, TrainingDataManager, ModelRegistry)
        given = (enhanced_hf_service, training_data_manager, system_model_manager)
        names = ("enhanced_hf_service", "training_data_manager", "system_model_manager")
        components: list[Any] = []
        for name, value, kind in zip(names, given, own, strict=True):
            if value is not None and not isinstance(value, kind):
                logger.info(
                    "FlexibleTrainingInterface: %s (%s) is set aside; flextrain uses its own "
                    "%s (docs/compat.md).",
                    name,
                    type(value).__name__,
                    kind.__name__,
                )
                value = None
            components.append(value)
        if service is not None and (any(c is not None for c in components) or base_dir):
            raise ValueError(
                "give either service or the components (enhanced_hf_service, "
                "training_data_manager, system_model_manager, base_dir), not both. Fix: "
                "pass the components to TrainingService(...) and that service here."
            )
        if settings is None and base_dir is not None:
            settings = Settings(home=Path(base_dir).expanduser().resolve())
        self.service = service or TrainingService(
            settings,
            models=components[0],
            datasets=components[1],
            model_registry=components[2],
        )

    @property
    def active_jobs(self) -> dict[str, TrainingJob]:
        """The original module's job table: every job, by id (newest first). The store
        is the table here, so jobs of other processes and earlier sessions are in it."""
        return {job.job_id: job for job in self.service.list_jobs(limit=1_000_000)}

    # -- checks ------------------------------------------------------------------------
    async def check_model_compatibility(
        self,
        model_id: str,
        training_type: TrainingType | str | None = None,
        *,
        config: BasicTrainingConfig | None = None,
        dataset_id: str | None = None,
        batch_size: int = 8,
        max_length: int = 512,
        probe: bool = False,
    ) -> ModelCompatibility:
        """Full report: supported types, memory parts, time, verdict, recommendations.

        Reads only the model's config; `probe=True` runs a few real steps in a
        subprocess (seconds on small models) and reports the calibrated estimate.
        """
        ttype = TrainingType(training_type) if training_type is not None else None
        return await asyncio.to_thread(
            self.service.check_compatibility,
            model_id,
            ttype,
            config=config,
            dataset_id=dataset_id,
            batch_size=batch_size,
            max_length=max_length,
            probe=probe,
        )

    async def setup_training_environment(
        self,
        model_id: str,
        training_type: TrainingType | str,
        training_mode: TrainingMode | str = TrainingMode.BASIC,
        *,
        job_id: str | None = None,
    ) -> TrainingEnvironment:
        """A new job folder (disk space and write permission checked first), described
        with the model, type, mode and this machine's hardware: the original's call."""
        return await self.service.setup_environment_for(
            model_id, training_type, training_mode, job_id
        )

    def get_hardware_constraints(self) -> HardwareConstraints:
        """This machine's hardware (a plain call, as in the original module)."""
        return self.service.hardware()

    async def get_trainable_models(
        self, filters: ModelFilters | dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """Built-in and registered models, plus hub models when `filters` asks (see
        ModelFilters: search, task, library, license, max_parameters, include_hub),
        each with the training types it supports. No filters: local only, no network."""
        listing = await self.search_models(filters)
        return [m.model_dump(mode="json") for m in listing.models]

    async def search_models(
        self, filters: ModelFilters | dict[str, Any] | None = None
    ) -> TrainableListing:
        """`get_trainable_models` with its notes (e.g. that the hub was not searched)."""
        chosen = ModelFilters.model_validate(filters or {})
        return await asyncio.to_thread(self.service.list_trainable_models, chosen)

    async def pull_model(
        self,
        model_id: str,
        revision: str = "main",
        progress: Callable[[PullProgress], None] | None = None,
    ) -> PullResult:
        """Download a hub model's config, tokenizer and safetensors weights into the hub
        cache (resumable; disk space checked first); it then trains offline."""
        return await asyncio.to_thread(
            self.service.pull_model, model_id, revision=revision, progress=progress
        )

    # -- registered models -------------------------------------------------------------
    async def register_model(
        self,
        path: str | Path,
        name: str,
        description: str = "",
        owner: str | None = None,
    ) -> RegisteredModel:
        """Register a local model folder under `name` (checked and described first: its
        config is read on the meta device); the name then works as a job's model_id."""
        return await asyncio.to_thread(self.service.register_model, path, name, description, owner)

    def list_models(self) -> list[RegisteredModel]:
        """Registered models: folders added by hand and models trained here."""
        return self.service.list_registered_models()

    def get_model(self, name: str) -> RegisteredModel:
        """One registered model with its lineage (ModelNotRegisteredError if none)."""
        return self.service.get_registered_model(name)

    def remove_model(self, name: str) -> RegisteredModel:
        """Forget `name:N`, or every version of `name` (the files stay); refused while an
        unfinished job names what goes."""
        return self.service.remove_registered_model(name)

    def model_versions(self, name: str) -> list[RegisteredModel]:
        """Every version of a registered name, oldest first; the last is what `name` means."""
        return self.service.model_versions(name)

    def promote_model(self, source: str, name: str, description: str = "") -> RegisteredModel:
        """Make a registered version (`other:3`) or a completed job's model (its job id)
        the newest version of `name`, with the source's lineage."""
        return self.service.promote_model(source, name, description)

    def diff_models(self, a: str, b: str) -> ModelDiff:
        """Two versions side by side: lineage, the config settings that differ, metrics."""
        return self.service.diff_models(a, b)

    # -- datasets ----------------------------------------------------------------------
    def register_dataset(self, name: str, path: str | Path, description: str = "") -> DatasetInfo:
        return self.service.register_dataset(name, path, description)

    # -- jobs --------------------------------------------------------------------------
    async def create_basic_training_job(
        self, config: BasicTrainingConfig, *, priority: int = 0
    ) -> TrainingJob:
        """A PENDING job; `priority` orders the queue once started (higher first)."""
        return await asyncio.to_thread(
            self.service.create_job, config, mode=TrainingMode.BASIC, priority=priority
        )

    async def create_advanced_training_job(
        self, config: AdvancedTrainingConfig, *, priority: int = 0
    ) -> TrainingJob:
        """A PENDING job; `priority` orders the queue once started (higher first)."""
        return await asyncio.to_thread(
            self.service.create_job, config, mode=TrainingMode.ADVANCED, priority=priority
        )

    async def create_expert_training_job(
        self, config: ExpertTrainingConfig, *, priority: int = 0
    ) -> TrainingJob:
        """A PENDING expert job: custom loss, optimizer, schedule expression, hooks and
        user code. The schedule is checked and plotted (schedule.png in the job folder)
        before anything trains."""
        return await asyncio.to_thread(
            self.service.create_job, config, mode=TrainingMode.EXPERT, priority=priority
        )

    async def start_training_job(self, job_id: str) -> TrainingJob:
        """Start the job now if the machine has room, else queue it (status `queued`,
        `wait_reason` says why); `wait_for_job` starts it when room frees up."""
        return await asyncio.to_thread(self.service.start_job, job_id)

    async def cancel_training_job(self, job_id: str) -> TrainingJob:
        return await asyncio.to_thread(self.service.cancel_job, job_id)

    async def resume_training_job(self, job_id: str) -> TrainingJob:
        """Continue an interrupted, cancelled or failed job from its latest checkpoint."""
        return await asyncio.to_thread(self.service.resume_job, job_id)

    async def wait_for_job(self, job_id: str, timeout: float | None = None) -> TrainingJob:
        return await asyncio.to_thread(self.service.wait, job_id, timeout)

    # -- after training ----------------------------------------------------------------
    # These load the trained model (and its base) in this process, on the CPU, in a
    # thread: seconds on small models.
    async def merge_model(
        self, job_id: str, out_dir: str | Path | None = None, *, force: bool = False
    ) -> MergeResult:
        """Merge a LoRA job's adapter into its base model and save it (safetensors) to
        `out_dir`, by default the job's folder (jobs/ID/merged)."""
        return await asyncio.to_thread(self.service.merge_model, job_id, out_dir, force=force)

    async def export_model(
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
        """Write the model (merged if LoRA, unless `adapter_only`), its tokenizer and a
        README.md model card (base model, data hash, config, metrics) to `out_dir`; with
        format "gguf", one GGUF file in `quant`, checked against the trained model."""
        return await asyncio.to_thread(
            self.service.export_model,
            job_id,
            out_dir,
            adapter_only=adapter_only,
            force=force,
            full_config=full_config,
            format=format,
            quant=quant,
            verify=verify,
        )

    async def verify_export(self, path: str | Path) -> ParityReport:
        """Check an export made earlier (a GGUF file or a safetensors folder) against the
        job that trained it: complete, same tokens and template, same answers."""
        return await asyncio.to_thread(self.service.verify_export, path)

    async def try_model(
        self,
        job_id: str,
        texts: list[str],
        *,
        max_new_tokens: int = 32,
        chat: bool | None = None,
    ) -> TryResult:
        """The trained and the base model's answers to each text: greedy generations for
        language models, label and scores for classifiers."""
        return await asyncio.to_thread(
            self.service.try_model, job_id, texts, max_new_tokens=max_new_tokens, chat=chat
        )

    async def evaluate_model(
        self,
        job_id: str,
        dataset_id: str | None = None,
        *,
        split: Split | None = None,
        limit: int | None = 1000,
        batch_size: int = 16,
    ) -> EvaluationResult:
        """Loss and perplexity, or accuracy and macro F1, of the trained and the base model
        on a dataset (default: the job's own), tokenised as the job's training data was.

        `split` defaults to the rows the job held out ("heldout") when it held some out
        of the data evaluated, else "all" (with a note); the result's `split`, `rows`,
        `title` and `notes` say which rows were scored."""
        return await asyncio.to_thread(
            self.service.evaluate_model,
            job_id,
            dataset_id,
            split=split,
            limit=limit,
            batch_size=batch_size,
        )

    def get_training_job(self, job_id: str) -> TrainingJob | None:
        return self.service.get_job(job_id)

    def get_job_metrics(self, job_id: str) -> list[dict[str, Any]]:
        """The job's metric history (loss, learning rate, eval results per step)."""
        return self.service.metric_history(job_id)

    def get_job_events(self, job_id: str) -> list[JobEvent]:
        """Memory warnings, interruptions, resumes and early stops, oldest first."""
        return self.service.events(job_id)

    def get_system_metrics(self, job_id: str) -> list[dict[str, Any]]:
        """CPU, memory and GPU use sampled while the job ran."""
        return self.service.system_samples(job_id)

    def get_queue(self) -> QueueSnapshot:
        """Queued jobs in start order with why each waits, and the running jobs with the
        GPUs and CPU threads they hold."""
        return self.service.queue()

    def list_training_jobs(
        self, status: TrainingStatus | None = None, limit: int = 100, offset: int = 0
    ) -> list[TrainingJob]:
        return self.service.list_jobs(status=status, limit=limit, offset=offset)
