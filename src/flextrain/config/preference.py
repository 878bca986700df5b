"""Options of preference and reward training (DPO, ORPO, KTO, SimPO, GRPO).

The knobs users tune most have typed fields here, checked like every other field;
`trl_options` passes any other field of the method's TRL config through, checked
by name against that config (see flextrain.train.preference), so advanced mode
reaches every TRL knob without this module copying TRL's list.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from flextrain.config.enums import TrainingType

# DPO's loss variants, as TRL 1.x names them (DPOConfig.loss_type).
DPO_LOSS_TYPES = (
    "sigmoid",
    "hinge",
    "ipo",
    "exo_pair",
    "nca_pair",
    "robust",
    "bco_pair",
    "sppo_hard",
    "aot",
    "aot_unpaired",
    "apo_zero",
    "apo_down",
    "discopop",
    "sft",
    "sigmoid_norm",
)
KTO_LOSS_TYPES = ("kto", "apo_zero_unpaired")

# beta where the user gives none: TRL's defaults for DPO, ORPO (its lambda), KTO; SimPO
# paper's range (2.0 to 2.5); GRPO without a KL term (TRL's default since 0.19: no
# reference model is needed).
DEFAULT_BETA: dict[TrainingType, float] = {
    TrainingType.DPO: 0.1,
    TrainingType.ORPO: 0.1,
    TrainingType.KTO: 0.1,
    TrainingType.SIMPO: 2.0,
    TrainingType.GRPO: 0.0,
}

# What each method reads: the data shapes it trains on (flextrain.data.shapes).
ACCEPTED_SHAPES: dict[TrainingType, tuple[str, ...]] = {
    TrainingType.DPO: ("preference",),
    TrainingType.ORPO: ("preference",),
    TrainingType.SIMPO: ("preference",),
    TrainingType.KTO: ("unpaired", "preference"),
    TrainingType.GRPO: ("prompt", "completion", "preference"),
}

RewardName = Literal["exact_match", "regex_match", "contains", "format", "length"]


class RewardSpec(BaseModel):
    """A built-in GRPO reward: data, not code, so any user may choose one.

    The reference answer of a row is its `completion` (prompt/completion data) or its
    chosen answer (pairs). exact_match: 1 when the completion (stripped) equals the
    reference; regex_match: 1 when what `pattern` extracts from the completion (its
    first group, or the whole match) equals what it extracts from the reference (or
    the whole reference); contains: 1 when `pattern` occurs in the completion;
    format: 1 when the whole completion matches `pattern`; length: 1 at
    `target_length` characters, falling linearly to 0 at none or twice as many.
    """

    model_config = ConfigDict(extra="forbid")

    name: RewardName = Field(description="exact_match, regex_match, contains, format, length.")
    pattern: str | None = Field(
        None, max_length=500, description="Regular expression (regex_match, contains, format)."
    )
    target_length: int | None = Field(None, description="Characters the length reward aims at.")
    weight: float = Field(1.0, description="Weight of this reward in the sum.")


class PreferenceOptions(BaseModel):
    """How a preference or reward run trains; ignored by the supervised types."""

    model_config = ConfigDict(extra="forbid")

    use_lora: bool = Field(
        True,
        description="Train a LoRA adapter (lora_r, lora_alpha...); its reference is the base "
        "with the adapter off, no second copy in memory. False: train every weight against "
        "a frozen copy.",
    )
    reference: Literal["auto", "precomputed"] = Field(
        "auto",
        description="precomputed: the reference log-probs are computed once before training "
        "(DPO, KTO) and no reference model stays in memory; auto: the adapter-off base with "
        "LoRA, a frozen copy without.",
    )
    beta: float | None = Field(
        None,
        description="Strength of the pull towards the reference (DPO, KTO), ORPO's lambda, "
        "SimPO's reward scale, GRPO's KL weight; None: the method's usual value.",
    )
    loss_type: str | None = Field(
        None,
        max_length=50,
        description=f"DPO loss: {', '.join(DPO_LOSS_TYPES)}; KTO: {', '.join(KTO_LOSS_TYPES)}.",
    )
    label_smoothing: float = Field(
        0.0, description="Share of preference labels assumed wrong (cDPO, robust DPO)."
    )
    simpo_gamma: float = Field(0.5, description="SimPO's target margin over beta (gamma/beta).")
    desirable_weight: float = Field(1.0, description="KTO: weight of desirable examples.")
    undesirable_weight: float = Field(1.0, description="KTO: weight of undesirable examples.")
    num_generations: int = Field(4, description="GRPO: completions sampled per prompt.")
    max_completion_length: int = Field(64, description="GRPO: tokens per sampled completion.")
    temperature: float = Field(1.0, description="GRPO: sampling temperature.")
    rewards: list[RewardSpec] = Field(
        default_factory=list,
        max_length=16,
        description="GRPO: built-in rewards, summed with their weights.",
    )
    trl_options: dict[str, Any] = Field(
        default_factory=dict,
        max_length=64,
        description="Any other field of the method's TRL config (DPOConfig, KTOConfig, "
        "GRPOConfig...), e.g. {use_weighting: true}; checked against that config.",
    )

    def beta_for(self, ttype: TrainingType) -> float:
        return self.beta if self.beta is not None else DEFAULT_BETA[ttype]
