"""QLoRA: a LoRA adapter trained on a base held in 4 bits (bitsandbytes NF4), on CPU.

bitsandbytes 0.50 multiplies 4-bit weights on the CPU (a slower fallback kernel), so
the run here is the real thing: the base loads quantized, the adapter learns, and the
merged model answers as the 4-bit model with its adapter did.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from flextrain.config.enums import TrainingType
from flextrain.config.schemas import AdvancedTrainingConfig
from flextrain.models.quantize import KEEP_OUTSIDE_BLOCKS, bnb_4bit_config
from flextrain.service import TrainingService
from flextrain.train.model import build_model, load_tokenizer
from tests.train.helpers import (
    PREFERENCE_FAST,
    logged_losses,
    lora_classifier_spec,
    run_job,
    write_keyword_preferences,
)

pytest.importorskip("bitsandbytes")

ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _corpus(path: Path) -> Path:
    path.write_text(
        "\n".join(
            f"the {w} weather made {s} feel {f}"
            for w in ("cold", "warm", "wet", "dry")
            for s in ("the town", "the market", "the river", "the garden")
            for f in ("slow", "bright")
        )
        * 4
    )
    return path


def _four_bit_with_adapter(base: str, adapter: Path) -> torch.nn.Module:
    """The model as training ran it: the base quantized to NF4 again, the adapter on it."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    quant = bnb_4bit_config("nf4", double_quant=True, compute_dtype=torch.float32)
    model = AutoModelForCausalLM.from_pretrained(
        base, quantization_config=quant, device_map={"": "cpu"}, dtype=torch.float32
    )
    return PeftModel.from_pretrained(model, str(adapter)).eval()


def _logits(model: torch.nn.Module, ids: list[list[int]]) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=torch.tensor(ids)).logits.float()


def test_qlora_trains_an_adapter_on_a_4bit_base_and_merges_to_the_same_answers(
    service: TrainingService, tmp_path: Path
) -> None:
    cfg = AdvancedTrainingConfig(
        model_id="flextrain/tiny-llama",
        dataset_id=str(_corpus(tmp_path / "weather.txt")),
        training_type=TrainingType.LORA_ADAPTATION,
        load_in_4bit=True,
        num_epochs=3,
        learning_rate=1e-2,
        batch_size=16,
        lora_r=8,
        lora_alpha=16,
        lora_dropout=0.0,
        lora_target_modules=ALL_LINEAR,
        max_length=48,
        logging_steps=2,
        num_threads=2,
        save_total_limit=1,
        gradient_checkpointing=False,
    )
    job = run_job(service, cfg)
    losses = logged_losses(service, job.job_id)
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.5, losses
    assert job.metrics["eval_loss"] < job.metrics["initial_eval_loss"]

    model_dir = Path(job.model_path or "")
    meta = json.loads((model_dir / "flextrain.json").read_text())
    assert meta["base_quantization"] == {
        "bits": 4,
        "quant_type": "nf4",
        "double_quant": True,
        "compute_dtype": "float32",
        "kept": KEEP_OUTSIDE_BLOCKS,
    }
    assert (model_dir / "adapter_model.safetensors").is_file()
    assert not (model_dir / "model.safetensors").exists()  # the base is not copied

    # The merged export loads on its own and passes the parity check against the
    # trained model (its adapter on the dequantized 4-bit base, at float32).
    out = tmp_path / "merged"
    result = service.export_model(job.job_id, out)
    assert result.parity is not None
    assert result.parity.passed, result.parity
    assert result.parity.max_abs_diff < 1e-3

    # The adapter alone: its model card loads the base in 4 bits, as it trained.
    adapter_out = tmp_path / "adapter"
    alone = service.export_model(job.job_id, adapter_out, adapter_only=True)
    assert alone.parity is not None
    assert alone.parity.passed, alone.parity
    card = (adapter_out / "README.md").read_text()
    snippet = card.split("```python\n")[-1].split("```")[0]
    assert 'bnb_4bit_quant_type="nf4"' in snippet
    compile(snippet, "card", "exec")  # the card's code is valid Python

    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()
    assert "quantization_config" not in json.loads((out / "config.json").read_text())
    four_bit = _four_bit_with_adapter(meta["base_model_path"], model_dir)
    ids = meta["probe"]["input_ids"]
    same_length = [seq[: min(len(s) for s in ids)] for seq in ids]
    # bitsandbytes' CPU kernel rounds like bfloat16: the 4-bit model and the merged one
    # agree to that, and the merged one is far closer to it than the original base is.
    trained = _logits(four_bit, same_length)
    gap = (trained - _logits(merged, same_length)).abs().max().item()
    assert gap < 0.05, gap
    base = AutoModelForCausalLM.from_pretrained(meta["base_model_path"], dtype=torch.float32)
    assert (trained - _logits(base.eval(), same_length)).abs().max().item() > 10 * gap


def _adapter_grads(
    model: torch.nn.Module, batch: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    model.train()
    torch.manual_seed(0)  # the same dropout masks in both models
    model(**batch).loss.backward()
    return {
        name: param.grad.clone()
        for name, param in model.named_parameters()
        if param.requires_grad and param.grad is not None
    }


def test_an_evaluation_before_training_leaves_the_4bit_gradients_whole(
    tmp_path: Path, models_cache: Path
) -> None:
    """bitsandbytes repacks CPU weights for inference at the first eval-mode forward and
    its inference kernel has no backward: without our guard, training after the
    evaluation-before-training got no gradient through any base weight (a DPO run's
    loss stayed at ln 2) and BERT's biased layers failed."""
    spec = lora_classifier_spec(tmp_path, models_cache, load_in_4bit=True, lora_dropout=0.0)
    tokenizer = load_tokenizer(spec)
    batch = dict(tokenizer(["the soup was good", "the train was late"], return_tensors="pt"))
    batch["labels"] = torch.tensor([1, 0])

    fresh, _ = build_model(spec, tokenizer)
    evaluated, _ = build_model(spec, tokenizer)
    assert any(type(m).__name__ == "Linear4bit" for m in evaluated.modules())
    evaluated.eval()
    with torch.no_grad():
        evaluated(**batch)  # as evaluate_before_training does
    want, got = _adapter_grads(fresh, batch), _adapter_grads(evaluated, batch)
    # lora_B starts at zero (so lora_A's first gradient is zero too); the first layer's
    # lora_B gradient comes back through every later layer's 4-bit base weights.
    first_layer = [n for n in want if "layer.0." in n and "lora_B" in n]
    assert first_layer
    assert set(got) == set(want)
    for name, grad in want.items():
        assert torch.allclose(got[name], grad, atol=1e-6), name
    assert all(want[name].abs().sum() > 0 for name in first_layer)


def test_dpo_with_a_4bit_base_learns_the_preferences(
    service: TrainingService, tmp_path: Path
) -> None:
    # DPO's reference pass runs the base with the adapter off, in eval mode: the case
    # where the repacked weights stopped every gradient.
    cfg = AdvancedTrainingConfig(
        model_id="flextrain/tiny-llama",
        dataset_id=str(write_keyword_preferences(tmp_path / "pairs.jsonl", rows=120)),
        training_type=TrainingType.DPO,
        load_in_4bit=True,
        num_epochs=1,
        learning_rate=1e-3,
        batch_size=8,
        eval_split=0.2,
        **PREFERENCE_FAST,
    )
    job = run_job(service, cfg)
    assert job.metrics["train_loss"] < 0.69
    assert job.metrics["eval_preference_accuracy"] > job.metrics["initial_eval_preference_accuracy"]
