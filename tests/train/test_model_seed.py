"""The config's seed decides every weight a run draws, whatever the process did before.

A fresh classification head and LoRA's A matrices are drawn when the model is built;
before this was seeded, a warm worker or an earlier in-process test left the global
generator elsewhere and the same job reached a different accuracy.
"""

from __future__ import annotations

from pathlib import Path

import torch

from flextrain.jobs.spec import RunSpec
from flextrain.train.model import build_model, load_tokenizer
from tests.train.helpers import lora_classifier_spec


def _spec(tmp_path: Path, models_cache: Path, seed: int) -> RunSpec:
    return lora_classifier_spec(tmp_path, models_cache, seed=seed)


def _drawn(spec: RunSpec) -> dict[str, torch.Tensor]:
    """The weights the build drew at random: the fresh head's and the adapters' A."""
    model, fresh = build_model(spec, load_tokenizer(spec))
    assert "classifier" in fresh
    drawn = {
        name: param.detach().clone()
        for name, param in model.named_parameters()
        if "lora_A" in name or ("classifier" in name and "modules_to_save" in name)
    }
    assert any("lora_A" in name for name in drawn)
    assert any("classifier" in n for n in drawn)
    return drawn


def test_the_same_seed_draws_the_same_weights_after_other_random_work(
    tmp_path: Path, models_cache: Path
) -> None:
    spec = _spec(tmp_path, models_cache, seed=42)
    torch.manual_seed(1)
    first = _drawn(spec)
    torch.rand(1000)  # what another job, test or import might have drawn
    torch.manual_seed(12345)
    second = _drawn(spec)
    assert first.keys() == second.keys()
    for name, weight in first.items():
        assert torch.equal(weight, second[name]), name


def test_another_seed_draws_other_weights(tmp_path: Path, models_cache: Path) -> None:
    first = _drawn(_spec(tmp_path, models_cache, seed=42))
    other = _drawn(_spec(tmp_path, models_cache, seed=43))
    assert any(not torch.equal(weight, other[name]) for name, weight in first.items())
