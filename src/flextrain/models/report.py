"""The compatibility report's shape: what `flextrain check`, `GET .../compatibility`
and the Python API return (computed in `models.compatibility`)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, computed_field

from flextrain.config.enums import TrainingType


class MemoryReport(BaseModel):
    device: str = Field(description="'cpu' (peak resident memory) or 'cuda' (peak reserved).")
    weights_gb: float
    gradients_gb: float
    optimizer_gb: float
    activations_gb: float
    logits_gb: float
    reference_gb: float = Field(
        0.0, description="A frozen reference copy of the weights (preference training)."
    )
    generation_gb: float = Field(
        0.0, description="GRPO's KV cache and sampling logits, before the training forward."
    )
    dequantization_gb: float = Field(
        0.0, description="QLoRA: one 4-bit weight unpacked for its matmul (transient)."
    )
    baseline_gb: float
    peak_gb: float
    available_gb: float
    fits: bool
    source: str = Field(description="'analytic' or 'probe'.")
    trainable_parameters: int
    total_parameters: int
    notes: list[str] = Field(default_factory=list)


class TimeReport(BaseModel):
    seconds: float
    low_seconds: float
    high_seconds: float
    tokens_per_epoch: int
    epochs: float
    optimizer_steps: int
    flops_per_token: float
    source: str = Field(description="'prior' (device class) or 'probe' (measured steps).")
    assumption: str | None = None
    overhead_seconds: float = Field(
        0.0, description="Start-up and per-step costs included in `seconds` (not arithmetic)."
    )
    batching: str | None = Field(
        None,
        description="How a causal-LM job will batch its rows (grouped, padded, packed, "
        "padding_free): the exact strategy with the least work for this data and device.",
    )
    batching_reason: str | None = None


class RecommendationReport(BaseModel):
    description: str
    changes: dict[str, Any]
    peak_gb: float
    fits: bool


class ModelCompatibility(BaseModel):
    model_config = {"protected_namespaces": ()}

    model_id: str
    training_type: TrainingType | None = None
    is_compatible: bool
    architecture: str | None = None
    model_type: str | None = None
    num_parameters: int | None = None
    objective: str | None = None
    supported_training_types: list[TrainingType] = Field(default_factory=list)
    unsupported_reasons: dict[str, str] = Field(default_factory=dict)
    task_heads: list[str] = Field(default_factory=list)
    lora_target_modules: list[str] = Field(default_factory=list)
    max_sequence_length: int | None = None
    supports_gradient_checkpointing: bool = False
    needs_trust_remote_code: bool = False
    required_memory_gb: float | None = None
    available_memory_gb: float | None = None
    memory_kind: str | None = Field(None, description="'gpu' or 'system' memory compared.")
    memory: MemoryReport | None = None
    recommended_batch_size: int | None = None
    estimated_training_time_hours: float | None = None
    time: TimeReport | None = None
    probe: dict[str, Any] | None = None
    framework_versions: dict[str, str] = Field(default_factory=dict)
    issues: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    recommendations: list[str] = Field(default_factory=list)
    recommendation_details: list[RecommendationReport] = Field(default_factory=list)

    # The original module's fields, derived from the ones above (computed: in every
    # JSON answer too, so clients written for it read them).
    @computed_field  # type: ignore[prop-decorator]
    @property
    def supports_fine_tuning(self) -> bool:
        return TrainingType.FINE_TUNING in self.supported_training_types

    @computed_field  # type: ignore[prop-decorator]
    @property
    def supports_lora(self) -> bool:
        return TrainingType.LORA_ADAPTATION in self.supported_training_types

    @computed_field  # type: ignore[prop-decorator]
    @property
    def supports_full_training(self) -> bool:
        return TrainingType.FULL_TRAINING in self.supported_training_types

    @computed_field  # type: ignore[prop-decorator]
    @property
    def required_gpu_memory_gb(self) -> float:
        """The estimate's peak when it was made for a GPU, else 0."""
        return (self.required_memory_gb or 0.0) if self.memory_kind == "gpu" else 0.0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def training_frameworks(self) -> list[str]:
        return sorted(self.framework_versions)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def compatibility_issues(self) -> list[str]:
        return list(self.issues)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def estimated_training_time(self) -> str | None:
        """The time estimate in words ("2.5 hours", "40 minutes"); None without one."""
        hours = self.estimated_training_time_hours
        if hours is None:
            return None
        return f"{hours:.1f} hours" if hours >= 1 else f"{max(hours * 60, 1):.0f} minutes"
