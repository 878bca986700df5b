"""Named presets for basic mode.

A preset fills the knobs a newcomer should not have to choose. Explicit values
always win over the preset. Learning rates differ by training type because LoRA
adapters start at zero and need a rate about ten times higher than full
fine-tuning to move in the same number of steps (LoRA paper, PEFT docs).
"""

from __future__ import annotations

from typing import Any

from flextrain.config.enums import PREFERENCE_TYPES, TrainingType

PRESET_NAMES = ("quick", "balanced", "thorough")

_KNOBS: dict[str, dict[str, Any]] = {
    "quick": {"num_epochs": 1, "batch_size": 16, "max_length": 128},
    "balanced": {"num_epochs": 3, "batch_size": 8, "max_length": 256},
    "thorough": {"num_epochs": 5, "batch_size": 8, "max_length": 512},
}

_LEARNING_RATES: dict[str, dict[TrainingType, float]] = {
    "quick": {
        TrainingType.LORA_ADAPTATION: 5e-4,
        TrainingType.FULL_TRAINING: 1e-3,
    },
    "balanced": {
        TrainingType.LORA_ADAPTATION: 2e-4,
        TrainingType.FULL_TRAINING: 5e-4,
    },
    "thorough": {
        TrainingType.LORA_ADAPTATION: 1e-4,
        TrainingType.FULL_TRAINING: 3e-4,
    },
}
# Preference and reward training moves a policy that already answers well (through a
# LoRA adapter by default): rates an order below supervised LoRA keep it near its
# reference, the range TRL's and LLaMA-Factory's examples use.
_PREFERENCE_LR = {"quick": 5e-5, "balanced": 2e-5, "thorough": 1e-5}
for _name, _rate in _PREFERENCE_LR.items():
    for _ttype in PREFERENCE_TYPES:
        _LEARNING_RATES[_name][_ttype] = _rate
_DEFAULT_LR = {"quick": 5e-5, "balanced": 3e-5, "thorough": 2e-5}


def preset_values(name: str, training_type: TrainingType | str | None) -> dict[str, Any]:
    """Return the knob values of preset `name` for `training_type`.

    Raises KeyError for an unknown preset; callers turn that into a field error.
    """
    knobs = dict(_KNOBS[name])
    ttype = TrainingType(training_type) if training_type else None
    rates = _LEARNING_RATES[name]
    knobs["learning_rate"] = rates.get(ttype, _DEFAULT_LR[name]) if ttype else _DEFAULT_LR[name]
    return knobs


def describe_presets() -> dict[str, dict[str, Any]]:
    """All presets with their knobs for each training type, for help texts and the API."""
    return {name: {t.value: preset_values(name, t) for t in TrainingType} for name in PRESET_NAMES}
