"""Parameter counts behind the estimate, checked against real models and real peft.

The estimate counts LoRA parameters from the (module, d_in, d_out) list that
`inspect_model` reads on the meta device; here the same built-in models are
loaded with transformers, wrapped with peft, and their parameters counted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from flextrain.estimate.memory import TrainingSetup, estimate_memory, lora_parameters
from flextrain.models.builtin import TINY_BERT_ID, TINY_LLAMA_ID
from flextrain.models.inspect import ModelInfo, choose_lora_targets, inspect_model
from flextrain.models.resolve import ModelResolver
from flextrain.service import TrainingService

RANK = 8


@pytest.fixture(scope="module")
def paths(models_cache: Path) -> dict[str, Path]:
    resolver = ModelResolver(models_cache)
    return {mid: resolver.resolve(mid).path for mid in (TINY_LLAMA_ID, TINY_BERT_ID)}


def lora_setup(info: ModelInfo, objective: str, targets: list[str], **extra: Any) -> TrainingSetup:
    return TrainingSetup(
        objective=objective,  # type: ignore[arg-type]
        lora=True,
        batch_size=1,
        seq_len=16,
        lora_r=RANK,
        lora_targets=tuple(targets),
        **extra,
    )


def wrap(model: Any, targets: list[str], task_type: Any, modules_to_save: Any = None) -> Any:
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=RANK, target_modules=targets, task_type=task_type, modules_to_save=modules_to_save
    )
    return get_peft_model(model, config)


def adapter_numel(model: Any) -> int:
    return sum(p.numel() for name, p in model.named_parameters() if "lora_" in name)


def trainable_numel(model: Any) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_tiny_llama_lora_trainable_count_matches_peft(
    service: TrainingService, paths: dict[str, Path]
) -> None:
    from peft import TaskType
    from transformers import AutoModelForCausalLM

    info = service.inspect_model(TINY_LLAMA_ID)
    targets = choose_lora_targets(info.linear_module_names)
    assert targets == ["q_proj", "v_proj"]
    estimate = estimate_memory(info.architecture(), lora_setup(info, "causal_lm", targets))

    model = wrap(
        AutoModelForCausalLM.from_pretrained(paths[TINY_LLAMA_ID]), targets, TaskType.CAUSAL_LM
    )
    assert estimate.trainable_parameters == trainable_numel(model)
    assert estimate.trainable_parameters == adapter_numel(model)
    assert estimate.total_parameters == sum(p.numel() for p in model.parameters())
    assert estimate.trainable_parameters > 0


def test_tiny_bert_classification_adapter_count_matches_peft(
    service: TrainingService, paths: dict[str, Path]
) -> None:
    from peft import TaskType
    from transformers import AutoModelForSequenceClassification

    base = service.inspect_model(TINY_BERT_ID)
    targets = choose_lora_targets(base.linear_module_names)
    assert targets == ["query", "value"]
    info = inspect_model(paths[TINY_BERT_ID], objective="sequence_classification", num_labels=2)

    model = AutoModelForSequenceClassification.from_pretrained(paths[TINY_BERT_ID], num_labels=2)
    peft_model = wrap(model, targets, TaskType.SEQ_CLS)
    assert lora_parameters(info.linear_layers, targets, RANK) == adapter_numel(peft_model)
    assert adapter_numel(peft_model) > 0


def test_tiny_bert_classification_trainable_count_matches_the_worker_setup(
    paths: dict[str, Path],
) -> None:
    """As the training worker does: heads missing from the checkpoint train in full."""
    from peft import TaskType
    from transformers import AutoModelForSequenceClassification

    info = inspect_model(paths[TINY_BERT_ID], objective="sequence_classification", num_labels=2)
    targets = choose_lora_targets(info.linear_module_names)
    model, loading = AutoModelForSequenceClassification.from_pretrained(
        paths[TINY_BERT_ID], num_labels=2, output_loading_info=True
    )
    fresh = sorted({key.rsplit(".", 1)[0] for key in loading["missing_keys"]})
    assert fresh == ["bert.pooler.dense", "classifier"]  # saved as a masked-LM model
    peft_model = wrap(model, targets, TaskType.SEQ_CLS, modules_to_save=fresh)

    estimate = estimate_memory(
        info.architecture(), lora_setup(info, "sequence_classification", targets)
    )
    assert estimate.trainable_parameters == trainable_numel(peft_model)
    assert estimate.total_parameters == sum(p.numel() for p in peft_model.parameters())


def test_tiny_llama_classification_trainable_count_matches_the_worker_setup(
    paths: dict[str, Path],
) -> None:
    from peft import TaskType
    from transformers import AutoModelForSequenceClassification

    info = inspect_model(paths[TINY_LLAMA_ID], objective="sequence_classification", num_labels=2)
    targets = choose_lora_targets(info.linear_module_names)
    model, loading = AutoModelForSequenceClassification.from_pretrained(
        paths[TINY_LLAMA_ID], num_labels=2, output_loading_info=True
    )
    fresh = sorted({key.rsplit(".", 1)[0] for key in loading["missing_keys"]})
    assert fresh == ["score"]
    peft_model = wrap(model, targets, TaskType.SEQ_CLS, modules_to_save=fresh)

    estimate = estimate_memory(
        info.architecture(), lora_setup(info, "sequence_classification", targets)
    )
    assert estimate.trainable_parameters == trainable_numel(peft_model)


@pytest.mark.parametrize("model_id", [TINY_LLAMA_ID, TINY_BERT_ID])
@pytest.mark.parametrize("rank", [2, 16])
def test_adapter_count_at_other_ranks(paths: dict[str, Path], model_id: str, rank: int) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel

    info = inspect_model(paths[model_id])
    targets = choose_lora_targets(info.linear_module_names)
    model = get_peft_model(
        AutoModel.from_pretrained(paths[model_id]), LoraConfig(r=rank, target_modules=targets)
    )
    assert lora_parameters(info.linear_layers, targets, rank) == adapter_numel(model)


@pytest.mark.parametrize("model_id", [TINY_LLAMA_ID, TINY_BERT_ID])
def test_classification_parameter_count_is_exact(paths: dict[str, Path], model_id: str) -> None:
    from transformers import AutoModelForSequenceClassification

    info = inspect_model(paths[model_id], objective="sequence_classification", num_labels=3)
    model = AutoModelForSequenceClassification.from_pretrained(paths[model_id], num_labels=3)
    assert info.num_parameters == sum(p.numel() for p in model.parameters())
    # The head is part of the count: more labels, more parameters.
    two = inspect_model(paths[model_id], objective="sequence_classification", num_labels=2)
    assert info.num_parameters > two.num_parameters
