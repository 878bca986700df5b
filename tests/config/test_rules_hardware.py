"""The seed's "supported training types by hardware" table, one test per row: each
cell checked on a CPU-only machine, one GPU and several (config/rules_hardware.py)."""

from __future__ import annotations

from flextrain.config.enums import TrainingType
from flextrain.config.issues import ModelFacts, ValidationIssue
from flextrain.config.rules_hardware import CPU_SCRATCH_PARAMETERS, LARGE_MODEL_PARAMETERS
from flextrain.config.schemas import AdvancedTrainingConfig
from flextrain.config.validation import TrainingParameterValidator
from tests.conftest import cpu_hardware, gpu_hardware

SMALL = 22_000_000  # all-MiniLM-L6-v2
LARGE = 7_000_000_000


def _issues(
    training_type: TrainingType, params: int, gpus: int, **overrides: object
) -> list[ValidationIssue]:
    hardware = (
        cpu_hardware()
        if gpus == 0
        else cpu_hardware(**{**gpu_hardware().__dict__, "gpu_count": gpus})
    )
    config = AdvancedTrainingConfig(
        model_id="m",
        dataset_id="d",
        training_type=training_type,
        num_processes=max(gpus, 1),
        **overrides,  # type: ignore[arg-type]
    )
    issues = TrainingParameterValidator().validate(
        config, hardware=hardware, model=ModelFacts(num_parameters=params)
    )
    return [i for i in issues if i.field == "training_type"]


def _cell(training_type: TrainingType, params: int, gpus: int) -> str:
    """What the table says for this cell: yes, warning or no."""
    found = _issues(training_type, params, gpus)
    if any(i.severity == "error" for i in found):
        return "no"
    return "warning" if found else "yes"


def test_fine_tuning_a_small_model_runs_everywhere() -> None:
    for ttype in (TrainingType.FINE_TUNING, TrainingType.CONTINUED_PRETRAINING):
        assert [_cell(ttype, SMALL, gpus) for gpus in (0, 1, 4)] == ["yes", "yes", "yes"]


def test_lora_adaptation_runs_everywhere_even_for_a_large_model() -> None:
    cells = [_cell(TrainingType.LORA_ADAPTATION, LARGE, gpus) for gpus in (0, 1, 4)]
    assert cells == ["yes", "yes", "yes"]


def test_fine_tuning_a_large_model_on_cpu_only_is_a_warning() -> None:
    cells = [_cell(TrainingType.FINE_TUNING, LARGE, gpus) for gpus in (0, 1, 4)]
    assert cells == ["warning", "yes", "yes"]
    [issue] = _issues(TrainingType.FINE_TUNING, LARGE, 0)
    assert str(issue) == (
        "training_type: fine_tuning updates every weight of a 7.0B-parameter model on CPU "
        "only: each step takes minutes. Fix: use lora_adaptation (an adapter of a few "
        "million weights), or a GPU machine."
    )
    # Just past the line, and just under it.
    assert _cell(TrainingType.FINE_TUNING, LARGE_MODEL_PARAMETERS + 1, 0) == "warning"
    assert _cell(TrainingType.FINE_TUNING, LARGE_MODEL_PARAMETERS, 0) == "yes"


def test_full_training_is_refused_on_cpu_warned_on_one_gpu_and_fine_on_several() -> None:
    cells = [_cell(TrainingType.FULL_TRAINING, LARGE, gpus) for gpus in (0, 1, 4)]
    assert cells == ["no", "warning", "yes"]
    [refusal] = _issues(TrainingType.FULL_TRAINING, LARGE, 0)
    assert "full_training trains a 7.0B-parameter model from random weights on CPU" in str(refusal)
    assert "Fix: fine-tune a pretrained model instead" in str(refusal)
    assert "ignore_memory_estimate: true starts it anyway" in str(refusal)
    [forced] = _issues(TrainingType.FULL_TRAINING, LARGE, 0, ignore_memory_estimate=True)
    assert forced.severity == "warning"
    [one_gpu] = _issues(TrainingType.FULL_TRAINING, LARGE, 1)
    assert "on one GPU: expect weeks" in str(one_gpu)
    # A toy model from scratch (the tests', the demo's) is fine on CPU.
    assert _cell(TrainingType.FULL_TRAINING, CPU_SCRATCH_PARAMETERS, 0) == "yes"
    assert _cell(TrainingType.FULL_TRAINING, CPU_SCRATCH_PARAMETERS + 1, 0) == "no"
