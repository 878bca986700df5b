"""The run specification: everything a worker needs, resolved by the service.

The service resolves ids to paths, picks the objective and the precision, and
writes this to the job's `job.json`; the worker reads only this file. A run is
therefore reproducible from the file alone, and the worker never needs the
registries or the hardware probe.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from flextrain.config.schemas import BasicTrainingConfig, ExpertTrainingConfig, with_fields_set
from flextrain.data.shapes import Shape

if TYPE_CHECKING:
    from flextrain.data.registry import DatasetInfo

# The run spec's file in the job's folder (FLEXTRAIN_HOME/jobs/<id>/job.json).
SPEC_FILE = "job.json"

Objective = Literal["sequence_classification", "causal_lm", "masked_lm"]
Precision = Literal["bf16", "fp16", "fp32"]


class DataSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str
    format: Literal["jsonl", "json", "csv", "text"]
    text_column: str | None
    label_column: str | None
    labels: list[str]
    prompt_columns: tuple[str, str] | None = None
    # Shape of a registered version's canonical rows; None for a file read as it is.
    shape: Shape | None = None
    # Content SHA-256 of a registered version: names its tokenised cache entries.
    version: str | None = None

    @classmethod
    def from_info(cls, info: DatasetInfo) -> DataSpec:
        """What the worker needs of a resolved dataset."""
        return cls(
            path=str(info.path),
            format=info.format,
            text_column=info.text_column,
            label_column=info.label_column,
            labels=info.labels,
            prompt_columns=info.prompt_columns,
            shape=info.shape,
            version=info.version,
        )


class RunSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    job_id: str
    # Every mode as the expert shape (its extra knobs at their defaults otherwise).
    config: ExpertTrainingConfig
    model_path: str
    objective: Objective
    precision: Precision
    lora_target_modules: list[str] | None
    data: DataSpec
    output_dir: str
    checkpoint_dir: str
    model_dir: str
    temp_dir: str
    num_threads: int
    # The config's eval_file, resolved: evaluated on instead of a share of `data`.
    eval_data: DataSpec | None = None
    # Where tokenised datasets are kept between jobs; None tokenises every time.
    cache_dir: str | None = None
    # A checkpoint folder to continue from (resume): step count, optimizer, scheduler,
    # RNG and data position come from it.
    resume_from_checkpoint: str | None = None
    # Admin setting FLEXTRAIN_ALLOW_PICKLE_WEIGHTS: otherwise weights load from
    # safetensors only (unpickling a .bin can run code).
    allow_pickle_weights: bool = False
    # CPUs the worker runs on (os.sched_setaffinity): with reserved_cpus, the cores not
    # kept for the server; None: wherever the system puts it.
    cpu_affinity: list[int] | None = None
    # The config fields the user gave (JSON keeps values, not which were given): the
    # worker's own choices (fused AdamW unless an optimizer was chosen) depend on it.
    config_fields: list[str] | None = None

    @field_validator("config", mode="before")
    @classmethod
    def _any_mode(cls, value: Any) -> Any:
        """A basic or advanced config is lifted to the expert shape the worker reads."""
        if isinstance(value, BasicTrainingConfig) and not isinstance(value, ExpertTrainingConfig):
            return ExpertTrainingConfig.from_basic(value)
        return value

    @model_validator(mode="after")
    def _given_fields(self) -> RunSpec:
        """Mark as given only the config fields the job was given, as at creation."""
        if self.config_fields is not None:
            self.config = with_fields_set(self.config, self.config_fields)
        return self

    def write(self, job_dir: Path) -> Path:
        """Write the spec to `job_dir`'s SPEC_FILE, where the worker reads it."""
        path = job_dir / SPEC_FILE
        path.write_text(self.model_dump_json(indent=2))
        return path

    @classmethod
    def read(cls, job_dir: Path) -> RunSpec:
        """The spec written to `job_dir` at launch (OSError when there is none yet)."""
        return cls.model_validate_json((job_dir / SPEC_FILE).read_text())
