"""Training-step hooks change real Trainer runs: gradients clamped at the optimizer step,
an EMA of the weights that the model ends up holding, and data seen in curriculum order."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from datasets import Dataset
from transformers import (
    Trainer,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)

from flextrain.train.hooks import (
    ClipGradValueCallback,
    EMACallback,
    apply_curriculum,
    curriculum_order,
)
from tests.train.helpers import tiny_llama


def rows(count: int = 8, seed: int = 0) -> Dataset:
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, 12, (count,), generator=generator).tolist()
    ids = [torch.randint(0, 64, (n,), generator=generator).tolist() for n in lengths]
    return Dataset.from_dict({"input_ids": ids, "labels": ids})


def pad(features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    longest = max(len(f["input_ids"]) for f in features)

    def padded(values: list[int], fill: int) -> list[int]:
        return list(values) + [fill] * (longest - len(values))

    return {
        "input_ids": torch.tensor([padded(f["input_ids"], 0) for f in features]),
        "labels": torch.tensor([padded(f["labels"], -100) for f in features]),
        "attention_mask": torch.tensor([padded([1] * len(f["input_ids"]), 0) for f in features]),
    }


def arguments(tmp_path: Path, **overrides: Any) -> TrainingArguments:
    settings: dict[str, Any] = {
        "output_dir": str(tmp_path),
        "max_steps": 4,
        "per_device_train_batch_size": 2,
        "learning_rate": 1e-2,
        "use_cpu": True,
        "report_to": "none",
        "save_strategy": "no",
        "disable_tqdm": True,
        "logging_steps": 100,
    }
    settings.update(overrides)
    return TrainingArguments(**settings)


def largest_grad(model: torch.nn.Module) -> float:
    return max(float(p.grad.abs().max()) for p in model.parameters() if p.grad is not None)


class GradientProbe(TrainerCallback):
    """Largest |gradient| seen at each pre-optimizer-step event."""

    def __init__(self) -> None:
        self.largest: list[float] = []

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.largest.append(largest_grad(kwargs["model"]))


class WeightRecorder(TrainerCallback):
    """Trainable weights at train begin and after each step (float64 copies)."""

    def __init__(self) -> None:
        self.snapshots: list[dict[str, torch.Tensor]] = []

    def _record(self, model: torch.nn.Module) -> None:
        self.snapshots.append(
            {n: p.detach().double().clone() for n, p in model.named_parameters() if p.requires_grad}
        )

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._record(kwargs["model"])

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._record(kwargs["model"])


def test_clip_grad_value_clamps_large_gradients(tmp_path: Path) -> None:
    model = tiny_llama()
    loss = model(**pad(list(rows(2)))).loss * 1e6
    loss.backward()
    assert largest_grad(model) > 1.0

    callback = ClipGradValueCallback(0.01)
    callback.on_pre_optimizer_step(
        arguments(tmp_path), TrainerState(), TrainerControl(), model=model
    )
    assert largest_grad(model) <= 0.01


def test_clip_grad_value_runs_before_each_optimizer_step(tmp_path: Path) -> None:
    value = 1e-4
    before, after = GradientProbe(), GradientProbe()
    trainer = Trainer(
        model=tiny_llama(),
        args=arguments(tmp_path, max_steps=3),
        train_dataset=rows(),
        data_collator=pad,
        callbacks=[before, ClipGradValueCallback(value), after],
    )
    trainer.train()
    assert len(before.largest) == len(after.largest) == 3
    assert all(g > value for g in before.largest)  # the clamp had work to do
    assert all(g <= value for g in after.largest)


def test_clip_grad_value_must_be_positive() -> None:
    with pytest.raises(ValueError, match="> 0"):
        ClipGradValueCallback(0)


def closed_form_ema(
    snapshots: list[dict[str, torch.Tensor]], decay: float, every: int
) -> dict[str, torch.Tensor]:
    """s_0 = w_0; s <- decay * s + (1 - decay) * w_k at every `every`-th step k."""
    average = dict(snapshots[0])
    for step, weights in enumerate(snapshots[1:], start=1):
        if step % every == 0:
            average = {n: decay * average[n] + (1 - decay) * weights[n] for n in average}
    return average


@pytest.mark.parametrize("every", [1, 2])
def test_ema_matches_the_closed_form_and_ends_in_the_model(tmp_path: Path, every: int) -> None:
    decay = 0.6
    ema, recorder = EMACallback(decay, every=every), WeightRecorder()
    model = tiny_llama()
    trainer = Trainer(
        model=model,
        args=arguments(tmp_path, max_steps=4),
        train_dataset=rows(),
        data_collator=pad,
        callbacks=[ema, recorder],
    )
    trainer.train()

    assert len(recorder.snapshots) == 5  # begin + 4 steps
    expected = closed_form_ema(recorder.snapshots, decay, every)
    assert set(ema.shadow) == set(expected)
    for name, average in ema.shadow.items():
        assert average.dtype == torch.float32
        torch.testing.assert_close(average.double(), expected[name], rtol=0, atol=1e-6)
    final = dict(model.named_parameters())
    assert all(torch.equal(final[n].detach(), t) for n, t in ema.shadow.items())
    last = recorder.snapshots[-1]["lm_head.weight"]
    assert not torch.allclose(last, final["lm_head.weight"].detach().double())


def test_ema_resumes_from_the_average_saved_with_the_checkpoint(tmp_path: Path) -> None:
    decay = 0.6
    first = EMACallback(decay)
    trainer = Trainer(
        model=tiny_llama(),
        args=arguments(tmp_path, max_steps=2, save_strategy="steps", save_steps=2),
        train_dataset=rows(),
        data_collator=pad,
        callbacks=[first],
    )
    trainer.train()
    checkpoint = tmp_path / "checkpoint-2"
    assert (checkpoint / "ema_shadow-0.pt").is_file()
    saved = {n: t.clone() for n, t in first.shadow.items()}

    class ShadowAtBegin(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.shadow = {n: t.clone() for n, t in resumed.shadow.items()}

    resumed, probe = EMACallback(decay), ShadowAtBegin()
    trainer = Trainer(
        model=tiny_llama(),
        args=arguments(tmp_path, max_steps=3, save_strategy="no"),
        train_dataset=rows(),
        data_collator=pad,
        callbacks=[resumed, probe],
    )
    trainer.train(resume_from_checkpoint=str(checkpoint))
    assert all(torch.equal(probe.shadow[n], saved[n]) for n in saved)


def test_curriculum_order_sorts_by_column_or_length() -> None:
    data = Dataset.from_dict(
        {"input_ids": [[1, 2, 3], [1], [1, 2], [4]], "score": [0.5, 0.1, 0.9, 0.1]}
    )
    assert curriculum_order(data, "length") == [1, 3, 2, 0]  # ties keep their order
    assert curriculum_order(data, "length", descending=True) == [0, 2, 1, 3]
    assert curriculum_order(data, "score") == [1, 3, 0, 2]
    assert curriculum_order(data, "input_ids") == [1, 3, 2, 0]
    with pytest.raises(ValueError, match="no column 'difficulty'; columns: input_ids, score"):
        curriculum_order(data, "difficulty")


def test_trainer_sees_batches_in_ascending_length(tmp_path: Path) -> None:
    seen: list[int] = []

    def recording_pad(features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        seen.extend(len(f["input_ids"]) for f in features)
        return pad(features)

    data = rows(12, seed=3)
    lengths = [len(ids) for ids in data["input_ids"]]
    assert lengths != sorted(lengths)
    trainer = Trainer(
        model=tiny_llama(),
        args=arguments(tmp_path, max_steps=6, per_device_train_batch_size=2),
        train_dataset=data,
        data_collator=recording_pad,
    )
    apply_curriculum(trainer, curriculum_order(data, "length"))
    trainer.train()
    assert seen == sorted(lengths)


def test_curriculum_rejects_indices_out_of_range(tmp_path: Path) -> None:
    trainer = Trainer(
        model=tiny_llama(), args=arguments(tmp_path), train_dataset=rows(4), data_collator=pad
    )
    with pytest.raises(ValueError, match=r"out of range: \[7\]"):
        apply_curriculum(trainer, [0, 7])
