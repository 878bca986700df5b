"""Expert optimizer options land in the optimizer: per-group lrs and decay, layer-wise
decay, frozen layers, optimizers by name, and clear errors for bad names and keywords."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import Trainer, TrainingArguments

from flextrain.train.optim import (
    ParamGroupRule,
    block_index,
    build_optimizer,
    describe_groups,
    freeze,
    param_groups,
)
from tests.train.helpers import tiny_llama

LR = 1e-3


def tiny_lora() -> Any:
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    return get_peft_model(tiny_llama(), config)


def batch(seed: int = 0) -> dict[str, torch.Tensor]:
    ids = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(seed))
    return {"input_ids": ids, "labels": ids.clone()}


def lr_and_decay_by_name(optimizer: torch.optim.Optimizer) -> dict[str, tuple[float, float]]:
    return {
        name: (group["lr"], group["weight_decay"])
        for group in optimizer.param_groups
        for name in group["names"]
    }


def test_lora_b_rule_gives_ten_times_the_lr() -> None:
    model = tiny_lora()
    rules = [ParamGroupRule("*lora_B*", lr_scale=10)]
    optimizer = build_optimizer(model, name="AdamW", lr=LR, weight_decay=0.01, rules=rules)

    settings = lr_and_decay_by_name(optimizer)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert sorted(settings) == sorted(trainable)
    lora_b = [n for n in settings if "lora_B" in n]
    lora_a = [n for n in settings if "lora_A" in n]
    assert len(lora_b) == len(lora_a) == 6  # q and v in 3 layers
    assert all(settings[n] == pytest.approx((10 * LR, 0.01)) for n in lora_b)
    assert all(settings[n] == pytest.approx((LR, 0.01)) for n in lora_a)
    assert len(optimizer.param_groups) == 2  # same settings share a group


def test_norms_get_no_weight_decay_unless_a_rule_says_so() -> None:
    model = tiny_llama()
    settings = lr_and_decay_by_name(build_optimizer(model, name="AdamW", lr=LR, weight_decay=0.1))
    norms = [n for n in settings if "norm" in n]
    assert len(norms) == 7  # two per layer and the final one
    assert all(settings[n][1] == 0.0 for n in norms)
    assert settings["model.layers.0.mlp.up_proj.weight"][1] == 0.1

    plain = lr_and_decay_by_name(
        build_optimizer(
            model, name="AdamW", lr=LR, weight_decay=0.1, no_decay_on_norms_and_biases=False
        )
    )
    assert all(plain[n][1] == 0.1 for n in norms)

    ruled = lr_and_decay_by_name(
        build_optimizer(
            model,
            name="AdamW",
            lr=LR,
            weight_decay=0.1,
            rules=[ParamGroupRule("model.norm.*", weight_decay=0.5)],
        )
    )
    assert ruled["model.norm.weight"][1] == 0.5


def test_first_matching_rule_wins_and_lr_can_be_absolute() -> None:
    rules = [
        ParamGroupRule("*.layers.0.*", lr=5e-2),
        ParamGroupRule("*.layers.*", lr_scale=0.5),
    ]
    settings = lr_and_decay_by_name(
        build_optimizer(tiny_llama(), name="SGD", lr=LR, weight_decay=0.0, rules=rules)
    )
    assert settings["model.layers.0.self_attn.q_proj.weight"][0] == pytest.approx(5e-2)
    assert settings["model.layers.2.self_attn.q_proj.weight"][0] == pytest.approx(LR / 2)
    assert settings["lm_head.weight"][0] == pytest.approx(LR)


def test_layerwise_decay_follows_the_beit_convention() -> None:
    decay = 0.5
    groups = param_groups(tiny_llama(), lr=LR, weight_decay=0.0, layerwise_lr_decay=decay)
    lr_of = {name: g["lr"] for g in groups for name in g["names"]}
    blocks = 3
    assert lr_of["model.embed_tokens.weight"] == pytest.approx(LR * decay ** (blocks + 1))
    for i in range(blocks):
        expected = LR * decay ** (blocks - i)
        layer = [n for n in lr_of if n.startswith(f"model.layers.{i}.")]
        assert len(layer) == 9
        assert all(lr_of[n] == pytest.approx(expected) for n in layer)
    assert lr_of["model.norm.weight"] == pytest.approx(LR)
    assert lr_of["lm_head.weight"] == pytest.approx(LR)
    # A rule's lr_scale multiplies the decayed lr.
    ruled = param_groups(
        tiny_llama(),
        lr=LR,
        weight_decay=0.0,
        layerwise_lr_decay=decay,
        rules=[ParamGroupRule("*q_proj*", lr_scale=3)],
    )
    ruled_lr = {name: g["lr"] for g in ruled for name in g["names"]}
    assert ruled_lr["model.layers.1.self_attn.q_proj.weight"] == pytest.approx(3 * LR * 0.25)


def test_block_index_reads_the_usual_stacks() -> None:
    assert block_index("model.layers.12.mlp.up_proj.weight") == 12
    assert block_index("bert.encoder.layer.3.output.dense.bias") == 3
    assert block_index("transformer.h.0.attn.c_attn.weight") == 0
    assert block_index("blocks.7.norm1.weight") == 7
    assert block_index("lm_head.weight") is None
    assert block_index("model.heads.1.weight") is None


def test_layerwise_decay_needs_numbered_blocks() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    with pytest.raises(ValueError, match="no numbered blocks"):
        param_groups(model, lr=LR, weight_decay=0.0, layerwise_lr_decay=0.9)


def test_frozen_parameters_are_in_no_group_and_do_not_change() -> None:
    model = tiny_llama()
    frozen = freeze(model, ["*.layers.0.*", "*embed_tokens*"])
    assert len(frozen) == 10
    assert "model.embed_tokens.weight" in frozen
    optimizer = build_optimizer(model, name="AdamW", lr=1e-2, weight_decay=0.0)
    grouped = {n for g in optimizer.param_groups for n in g["names"]}
    assert grouped.isdisjoint(frozen)

    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model(**batch()).loss.backward()
    optimizer.step()
    after = dict(model.named_parameters())
    assert all(torch.equal(before[n], after[n]) for n in frozen)
    assert not torch.equal(before["lm_head.weight"], after["lm_head.weight"])
    assert not torch.equal(
        before["model.layers.1.mlp.up_proj.weight"], after["model.layers.1.mlp.up_proj.weight"]
    )


def test_freeze_names_the_pattern_that_matches_nothing() -> None:
    model = tiny_llama()
    with pytest.raises(ValueError, match=r"'\*decoder\.block\*'.*model\.embed_tokens\.weight"):
        freeze(model, ["*.layers.0.*", "*decoder.block*"])
    # Nothing was frozen by the failed call.
    assert all(p.requires_grad for p in model.parameters())


def test_rule_matching_nothing_trainable_is_an_error() -> None:
    with pytest.raises(ValueError, match="lora_b"):
        param_groups(
            tiny_lora(), lr=LR, weight_decay=0.0, rules=[ParamGroupRule("*lora_b*", lr_scale=2)]
        )


def test_rule_takes_lr_or_lr_scale_not_both() -> None:
    with pytest.raises(ValueError, match="not both"):
        ParamGroupRule("*", lr=1e-3, lr_scale=2)


def test_sgd_with_nesterov_is_built() -> None:
    optimizer = build_optimizer(
        tiny_llama(),
        name="SGD",
        lr=0.1,
        weight_decay=0.0,
        kwargs={"momentum": 0.9, "nesterov": True},
    )
    assert isinstance(optimizer, torch.optim.SGD)
    assert optimizer.defaults["nesterov"] is True
    assert all(g["momentum"] == 0.9 for g in optimizer.param_groups)


def test_adafactor_follows_the_given_lr() -> None:
    model = tiny_llama()
    optimizer = build_optimizer(model, name="Adafactor", lr=LR, weight_decay=0.0)
    assert optimizer.defaults["relative_step"] is False
    assert optimizer.defaults["scale_parameter"] is False
    assert all(g["lr"] == LR for g in optimizer.param_groups)
    model(**batch()).loss.backward()
    optimizer.step()


def test_bad_optimizer_name_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown optimizer 'AdamX'.*AdamW, .*SGD.*Adafactor"):
        build_optimizer(tiny_llama(), name="AdamX", lr=LR, weight_decay=0.0)
    with pytest.raises(ValueError, match="cannot be driven by the Trainer"):
        build_optimizer(tiny_llama(), name="LBFGS", lr=LR, weight_decay=0.0)
    with pytest.raises(ValueError, match="unknown optimizer 'lr_scheduler'"):
        build_optimizer(tiny_llama(), name="lr_scheduler", lr=LR, weight_decay=0.0)


def test_bad_keyword_names_the_optimizer_and_the_keyword() -> None:
    with pytest.raises(ValueError, match=r"AdamW takes no keyword argument\(s\) 'betaz'"):
        build_optimizer(
            tiny_llama(), name="AdamW", lr=LR, weight_decay=0.0, kwargs={"betaz": (0.9, 0.9)}
        )
    with pytest.raises(ValueError, match="SGD: Nesterov"):
        build_optimizer(
            tiny_llama(), name="SGD", lr=LR, weight_decay=0.0, kwargs={"nesterov": True}
        )
    with pytest.raises(ValueError, match="lr cannot be set in kwargs"):
        build_optimizer(tiny_llama(), name="SGD", lr=LR, weight_decay=0.0, kwargs={"lr": 1.0})


def test_adamw8bit_without_bitsandbytes_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # unimportable, as if absent
    monkeypatch.setitem(sys.modules, "bitsandbytes.optim", None)
    with pytest.raises(ValueError, match="pip install bitsandbytes"):
        build_optimizer(tiny_llama(), name="AdamW8bit", lr=LR, weight_decay=0.0)


def test_describe_groups_reports_each_group() -> None:
    model = tiny_lora()
    optimizer = build_optimizer(
        model,
        name="AdamW",
        lr=LR,
        weight_decay=0.01,
        rules=[ParamGroupRule("*lora_B*", lr_scale=10)],
    )
    rows = describe_groups(optimizer)
    assert [row["lr"] for row in rows] == pytest.approx([LR, 10 * LR])
    assert [row["tensors"] for row in rows] == [6, 6]
    assert sum(row["parameters"] for row in rows) == sum(
        p.numel() for p in model.parameters() if p.requires_grad
    )
    assert "lora_B" in rows[1]["names"][0]


def test_trainer_keeps_the_group_learning_rates(tmp_path: Path) -> None:
    model = tiny_lora()
    optimizer = build_optimizer(
        model,
        name="AdamW",
        lr=LR,
        weight_decay=0.0,
        rules=[ParamGroupRule("*lora_B*", lr_scale=10)],
    )
    data = [batch(seed) for seed in range(4)]
    rows = [{"input_ids": b["input_ids"][0], "labels": b["labels"][0]} for b in data]
    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=2,
        per_device_train_batch_size=2,
        learning_rate=LR,
        lr_scheduler_type="constant",
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=rows, optimizers=(optimizer, None))
    trainer.train()
    assert optimizer.param_groups[1]["lr"] == pytest.approx(10 * LR)
    assert all("lora_B" in n for n in optimizer.param_groups[1]["names"])
