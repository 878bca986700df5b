"""Model facts read from config alone, LoRA target choice, and the compatibility check."""

from __future__ import annotations

from pathlib import Path

import pytest

from flextrain.config.enums import TrainingType
from flextrain.models.builtin import MINILM_ID, TINY_BERT_ID, TINY_LLAMA_ID
from flextrain.models.compatibility import framework_versions, supported_types
from flextrain.models.inspect import ModelInfo, choose_lora_targets, inspect_model
from flextrain.models.resolve import ModelResolver
from flextrain.service import TrainingService
from tests.conftest import cpu_hardware, gpu_hardware

LLAMA_LINEARS = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


@pytest.fixture(scope="module")
def llama_path(models_cache: Path) -> Path:
    return ModelResolver(models_cache).resolve(TINY_LLAMA_ID).path


@pytest.fixture(scope="module")
def bert_path(models_cache: Path) -> Path:
    return ModelResolver(models_cache).resolve(TINY_BERT_ID).path


@pytest.fixture(scope="module")
def llama(llama_path: Path) -> ModelInfo:
    return inspect_model(llama_path)


@pytest.fixture(scope="module")
def bert(bert_path: Path) -> ModelInfo:
    return inspect_model(bert_path)


# -- inspect_model ---------------------------------------------------------------------


def test_tiny_llama_facts(llama: ModelInfo) -> None:
    assert llama.model_type == "llama"
    assert llama.architectures == ["LlamaForCausalLM"]
    assert llama.supports_causal_lm
    assert not llama.is_encoder
    assert llama.lm_objective == "causal_lm"
    assert llama.supports_sequence_classification
    assert llama.supports_gradient_checkpointing
    assert llama.hidden_size == 64
    assert llama.num_layers == 2
    assert llama.max_position_embeddings == 512
    assert llama.vocab_size is not None
    assert llama.vocab_size <= 1024
    assert llama.linear_module_names >= LLAMA_LINEARS
    assert "lm_head" in llama.linear_module_names


def test_tiny_llama_parameter_count_matches_the_loaded_model(
    llama: ModelInfo, llama_path: Path
) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(llama_path)
    # Tied embeddings: parameters() yields the shared tensor once, on both sides.
    assert llama.num_parameters == sum(p.numel() for p in model.parameters())
    assert 50_000 < llama.num_parameters < 1_000_000


def test_tiny_llama_facts_for_validation(llama: ModelInfo) -> None:
    facts = llama.facts()
    assert facts.max_position_embeddings == 512
    assert facts.linear_module_names == llama.linear_module_names
    assert facts.supports_gradient_checkpointing is True


def test_tiny_bert_facts(bert: ModelInfo, bert_path: Path) -> None:
    assert bert.model_type == "bert"
    assert bert.is_encoder
    assert bert.supports_masked_lm
    assert bert.supports_sequence_classification
    assert bert.lm_objective == "masked_lm"
    assert {"query", "key", "value"} <= bert.linear_module_names

    from transformers import AutoModelForMaskedLM

    model = AutoModelForMaskedLM.from_pretrained(bert_path)
    assert bert.num_parameters == sum(p.numel() for p in model.parameters())


def test_inspect_reads_config_only(tmp_path: Path, llama_path: Path) -> None:
    """A folder with nothing but config.json is enough: weights are never read."""
    folder = tmp_path / "config-only"
    folder.mkdir()
    (folder / "config.json").write_text((llama_path / "config.json").read_text())
    info = inspect_model(folder)
    assert info.model_type == "llama"
    assert info.num_parameters == inspect_model(llama_path).num_parameters


# -- choose_lora_targets ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        ({"q_proj", "k_proj", "v_proj", "o_proj"}, ["q_proj", "v_proj"]),
        ({"query", "key", "value", "dense"}, ["query", "value"]),
        ({"fc1", "fc2", "lm_head"}, ["fc1", "fc2"]),
        ({"c_attn", "c_proj", "c_fc"}, ["c_attn"]),
        ({"q_proj", "k_proj"}, ["k_proj", "q_proj"]),  # no v_proj: every non-head linear
        ({"lm_head", "classifier"}, []),
        (set(), []),
    ],
)
def test_choose_lora_targets(names: set[str], expected: list[str]) -> None:
    assert choose_lora_targets(names) == expected
    assert choose_lora_targets(frozenset(names)) == expected


def test_lora_targets_of_real_models(llama: ModelInfo, bert: ModelInfo) -> None:
    assert choose_lora_targets(llama.linear_module_names) == ["q_proj", "v_proj"]
    assert choose_lora_targets(bert.linear_module_names) == ["query", "value"]


# -- compatibility ---------------------------------------------------------------------


def test_supported_types_of_tiny_llama(llama: ModelInfo) -> None:
    supported, reasons = supported_types(llama)
    assert supported == list(TrainingType)
    assert reasons == {}


def test_a_model_without_heads_supports_only_lora(llama: ModelInfo) -> None:
    import dataclasses

    bare = dataclasses.replace(
        llama,
        supports_causal_lm=False,
        supports_masked_lm=False,
        supports_sequence_classification=False,
    )
    supported, reasons = supported_types(bare)
    assert supported == [TrainingType.LORA_ADAPTATION]
    assert set(reasons) == {
        "fine_tuning",
        "continued_pretraining",
        "task_specific",
        "full_training",
        # Preference and reward training needs a causal-LM head.
        "dpo",
        "orpo",
        "kto",
        "simpo",
        "grpo",
    }
    assert reasons["dpo"] == "no causal-LM head"


def test_service_compatibility_tiny_llama(service: TrainingService) -> None:
    result = service.check_compatibility(TINY_LLAMA_ID)
    assert result.is_compatible, result.issues
    assert result.issues == []
    assert result.model_type == "llama"
    assert result.architecture == "LlamaForCausalLM"
    assert set(result.supported_training_types) == set(TrainingType)
    assert result.unsupported_reasons == {}
    assert result.lora_target_modules == ["q_proj", "v_proj"]
    assert result.max_sequence_length == 512
    assert result.num_parameters == service.inspect_model(TINY_LLAMA_ID).num_parameters
    assert result.memory_kind == "system"  # no GPU here
    assert result.recommended_batch_size == 8
    # At least the framework baseline of a CPU worker, and the same as the memory report.
    assert result.required_memory_gb is not None
    assert result.required_memory_gb > 0.5
    assert result.memory is not None
    assert result.required_memory_gb == pytest.approx(result.memory.peak_gb, abs=1e-3)
    versions = result.framework_versions
    for name in ("torch", "transformers", "peft"):
        assert versions[name] != "missing"
    assert versions == framework_versions()


def test_service_compatibility_tiny_bert(service: TrainingService) -> None:
    result = service.check_compatibility(TINY_BERT_ID, TrainingType.TASK_SPECIFIC)
    assert result.is_compatible, result.issues
    assert result.training_type == TrainingType.TASK_SPECIFIC
    assert result.model_type == "bert"
    assert result.lora_target_modules == ["query", "value"]


def test_not_enough_memory(service: TrainingService) -> None:
    result = service.compatibility.check(
        TINY_LLAMA_ID,
        TrainingType.FULL_TRAINING,
        hardware=cpu_hardware(available_memory_gb=0.01),
    )
    assert result.is_compatible is False
    assert any("Not enough system memory" in issue for issue in result.issues), result.issues
    assert result.available_memory_gb == pytest.approx(0.01)
    assert result.recommended_batch_size == 0  # not even one row fits
    assert any("LoRA" in r for r in result.recommendations)


def test_gpu_memory_is_compared_on_a_gpu_machine(service: TrainingService) -> None:
    result = service.compatibility.check(TINY_LLAMA_ID, hardware=gpu_hardware())
    assert result.is_compatible, result.issues
    assert result.memory_kind == "gpu"
    assert result.available_memory_gb == pytest.approx(20.0)


def test_large_batch_is_lowered_to_fit(service: TrainingService) -> None:
    hw = cpu_hardware(available_memory_gb=1.0)
    result = service.compatibility.check(
        TINY_LLAMA_ID, hardware=hw, batch_size=4096, max_length=512
    )
    # The requested batch does not fit; a smaller one with accumulation does.
    assert not result.is_compatible
    assert result.recommended_batch_size is not None
    assert 1 <= result.recommended_batch_size < 4096
    fitting = [r for r in result.recommendation_details if r.fits]
    assert any("gradient accumulation" in r.description for r in fitting)
    assert all(r.peak_gb <= 1.0 for r in fitting)


def test_minilm_is_an_encoder(service: TrainingService) -> None:
    result = service.check_compatibility(MINILM_ID)
    assert result.is_compatible, result.issues
    assert result.model_type == "bert"
    assert result.num_parameters is not None
    assert 20_000_000 < result.num_parameters < 25_000_000


def test_unloadable_config_is_reported(service: TrainingService, tmp_path: Path) -> None:
    folder = tmp_path / "strange"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "no-such-architecture"}')
    result = service.check_compatibility(str(folder))
    assert result.is_compatible is False
    assert len(result.issues) == 1
    assert "cannot be loaded by transformers" in result.issues[0]
    assert result.recommendations
