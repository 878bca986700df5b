"""FlexTrainer leans on a few private parts of transformers' Trainer: pinned here.

Atomic checkpoints override `_get_output_dir` and `_save_checkpoint` (no public hook
chooses where a checkpoint is written before it is written), expert schedules set
`_created_lr_scheduler`, and resuming a finished run loads weights with
`_load_from_checkpoint`. A transformers release may rename or reshape any of them
without notice; these tests fail then, instead of a run quietly writing checkpoints
under their final name while they are half written.

The signature checks cost nothing; the behavioural ones train a 2-layer Llama of
width 32 for two steps on CPU (a second or two each).
"""

from __future__ import annotations

import errno
import inspect
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import Trainer, TrainingArguments

from flextrain.jobs.checkpoints import STAGING_PREFIX
from flextrain.train.health import HealthChecked
from flextrain.train.resume import finished_training, skip_finished_training
from flextrain.train.trainer import CheckpointDiskFullError, FlexTrainer

# Private Trainer methods FlexTrainer overrides, with the parameters it relies on.
PRIVATE_OVERRIDES = {
    "_get_output_dir": ["self", "trial"],
    "_save_checkpoint": ["self", "model", "trial"],
    "_save_optimizer_and_scheduler": ["self", "output_dir"],
    "_clip_grad_norm": ["self", "model"],
}
# The same for HealthChecked (train/health.py), the mixin of every run's trainer: the
# one place each optimizer step passes with its gradient norm known, update not applied.
HEALTH_PRIVATE_OVERRIDES = {"_get_grad_norm": ["self", "model", "grad_norm"]}
# Private Trainer methods flextrain calls (not overrides), with the parameters it passes.
PRIVATE_CALLS = {"_load_from_checkpoint": ["self", "resume_from_checkpoint"]}


def _names(fn: Any) -> list[str]:
    return list(inspect.signature(fn).parameters)


def _own_methods(cls: type) -> dict[str, Any]:
    return {name: fn for name, fn in vars(cls).items() if inspect.isfunction(fn)}


@pytest.mark.parametrize(("name", "params"), PRIVATE_OVERRIDES.items())
def test_each_overridden_private_method_still_exists_with_the_same_parameters(
    name: str, params: list[str]
) -> None:
    assert inspect.isfunction(getattr(Trainer, name, None)), f"Trainer.{name} is gone"
    assert _names(getattr(Trainer, name)) == params
    assert _names(getattr(FlexTrainer, name)) == params


@pytest.mark.parametrize(("name", "params"), HEALTH_PRIVATE_OVERRIDES.items())
def test_the_health_checks_private_override_still_exists_and_is_called_each_step(
    name: str, params: list[str]
) -> None:
    assert inspect.isfunction(getattr(Trainer, name, None)), f"Trainer.{name} is gone"
    assert _names(getattr(Trainer, name)) == params
    assert _names(getattr(HealthChecked, name)) == params
    source = inspect.getsource(Trainer)
    # Called once per optimizer step, after the gradients are complete and just before
    # the optimizer applies them.
    call = source.index(f"self.{name}(model")
    assert source.count(f"self.{name}(") == 1
    assert 0 < source.index("self.optimizer.step()", call) - call < 600


@pytest.mark.parametrize(
    ("cls", "pinned"), [(FlexTrainer, PRIVATE_OVERRIDES), (HealthChecked, HEALTH_PRIVATE_OVERRIDES)]
)
def test_every_private_override_is_pinned(cls: type, pinned: dict[str, list[str]]) -> None:
    """A new private override must be added above (with a comment in trainer.py saying
    why no public hook does)."""
    private = {n for n in _own_methods(cls) if n.startswith("_") and not n.startswith("__")}
    assert private == set(pinned)


@pytest.mark.parametrize("cls", [FlexTrainer, HealthChecked])
def test_every_override_matches_a_trainer_method(cls: type) -> None:
    """Each method FlexTrainer defines overrides one of Trainer's, with the same
    parameters (or passes them all through): a renamed parameter would silently get
    its default."""
    for name, fn in _own_methods(cls).items():
        if name == "__init__":
            continue
        base = getattr(Trainer, name, None)
        assert inspect.isfunction(base), f"Trainer.{name} is gone"
        ours = inspect.signature(fn).parameters.values()
        if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in ours):
            continue
        assert _names(fn) == _names(base), name


@pytest.mark.parametrize(("name", "params"), PRIVATE_CALLS.items())
def test_each_called_private_method_takes_what_flextrain_passes(
    name: str, params: list[str]
) -> None:
    signature = inspect.signature(getattr(Trainer, name))
    assert list(signature.parameters)[: len(params)] == params
    rest = list(signature.parameters.values())[len(params) :]
    assert all(p.default is not inspect.Parameter.empty for p in rest), signature


# --- behaviour: a real two-step run --------------------------------------------------


def _tiny_run(models_cache: Path) -> tuple[Any, Any, Any]:
    """(tokenizer, a fresh tiny Llama, tokenized rows) with a fixed seed."""
    from datasets import Dataset
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from flextrain.models.builtin import TINY_LLAMA_ID, builtin_path

    tokenizer = AutoTokenizer.from_pretrained(builtin_path(TINY_LLAMA_ID, models_cache))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            max_position_embeddings=64,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    texts = [f"the garden was {w} today" for w in ("warm", "bright", "cold", "dull")] * 2
    return tokenizer, model, Dataset.from_dict(dict(tokenizer(texts)))


def _trainer(
    models_cache: Path, output_dir: Path, cls: type[FlexTrainer] = FlexTrainer
) -> FlexTrainer:
    """Two steps, a checkpoint and an evaluation at each, keeping the best by eval_loss."""
    from transformers import DataCollatorForLanguageModeling

    tokenizer, model, data = _tiny_run(models_cache)
    args = TrainingArguments(
        output_dir=str(output_dir),
        max_steps=2,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        eval_strategy="steps",
        eval_steps=1,
        save_strategy="steps",
        save_steps=1,
        load_best_model_at_end=True,
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        logging_steps=1,
        use_cpu=True,
        report_to="none",
        disable_tqdm=True,
    )
    return cls(
        model=model,
        args=args,
        train_dataset=data,
        eval_dataset=data,
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
        processing_class=tokenizer,
        language_model=True,
    )


class _RecordingTrainer(FlexTrainer):
    """Notes where each checkpoint's weights were written."""

    written: list[str]

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        type(self).written.append(str(output_dir))
        super().save_model(output_dir, _internal_call)


def test_checkpoints_are_written_aside_then_renamed_whole(
    tmp_path: Path, models_cache: Path
) -> None:
    _RecordingTrainer.written = []
    out = tmp_path / "checkpoints"
    trainer = _trainer(models_cache, out, _RecordingTrainer)
    trainer.train()

    # Each checkpoint's weights went into its staging folder, not the final name.
    assert _RecordingTrainer.written == [
        str(out / f"{STAGING_PREFIX}{step}" / f"checkpoint-{step}") for step in (1, 2)
    ]
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint-1", "checkpoint-2"]
    for step in (1, 2):
        # Everything _save_checkpoint writes came along: it all went through _get_output_dir.
        files = {p.name for p in (out / f"checkpoint-{step}").iterdir()}
        assert {"model.safetensors", "trainer_state.json"} <= files, files
        assert any(name.startswith("rng_state") for name in files), files
    # The optimizer state is kept where training can go on, not at the last step (a
    # resume there only loads the weights: see the test below).
    assert {"optimizer.pt", "scheduler.pt"} <= {p.name for p in (out / "checkpoint-1").iterdir()}
    assert not {"optimizer.pt", "scheduler.pt"} & {p.name for p in (out / "checkpoint-2").iterdir()}

    # The best checkpoint is named by its final path, in memory and in its saved state.
    best = trainer.state.best_model_checkpoint
    assert best is not None
    assert Path(best).parent == out
    assert Path(best).is_dir()
    saved = json.loads((Path(best) / "trainer_state.json").read_text())
    assert saved["best_model_checkpoint"] == best
    assert any("eval_perplexity" in entry for entry in trainer.state.log_history)  # log()


def test_a_checkpoint_that_does_not_fit_leaves_the_earlier_ones(
    tmp_path: Path, models_cache: Path
) -> None:
    class FullDisk(FlexTrainer):
        def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
            if self.state.global_step == 2:
                raise OSError(errno.ENOSPC, "No space left on device")
            super().save_model(output_dir, _internal_call)

    out = tmp_path / "checkpoints"
    with pytest.raises(CheckpointDiskFullError, match="checkpoint-1, the latest complete"):
        _trainer(models_cache, out, FullDisk).train()
    assert [p.name for p in out.iterdir()] == ["checkpoint-1"]
    assert (out / "checkpoint-1" / "trainer_state.json").is_file()


def test_a_run_resumed_at_its_last_step_loads_the_weights_without_training(
    tmp_path: Path, models_cache: Path
) -> None:
    out = tmp_path / "checkpoints"
    trained = _trainer(models_cache, out)
    trained.train()
    last = str(out / "checkpoint-2")
    finished = finished_training(last)
    assert finished is not None
    assert finished.global_step == 2

    fresh = _trainer(models_cache, tmp_path / "again")
    embeddings = "model.embed_tokens.weight"
    before = fresh.model.state_dict()[embeddings].clone()
    assert not torch.equal(before, trained.model.state_dict()[embeddings])  # trained moved it
    result = skip_finished_training(fresh, fresh.args, last, finished)

    assert result.global_step == 2
    assert fresh.state.global_step == 2
    # The best checkpoint's weights, which load_best_model_at_end also gave `trained`.
    for (name, want), got in zip(
        trained.model.state_dict().items(), fresh.model.state_dict().values(), strict=True
    ):
        assert torch.equal(want, got), name
    assert not list((tmp_path / "again").glob("*checkpoint-*"))  # nothing trained or saved


def test_the_scheduler_flag_an_expert_schedule_sets_is_the_trainers_own(
    tmp_path: Path, models_cache: Path
) -> None:
    """FlexTrainer.create_scheduler sets `_created_lr_scheduler` as Trainer's does, so a
    later train() rebuilds the schedule: the flag must still mean that."""
    trainer = _trainer(models_cache, tmp_path / "checkpoints")
    assert trainer._created_lr_scheduler is False
    trainer.create_optimizer()
    Trainer.create_scheduler(trainer, num_training_steps=2)
    assert trainer._created_lr_scheduler is True


@pytest.mark.parametrize("max_norm", [1e-4, 1e4])
def test_clipping_gives_the_trainers_gradients_and_norm_to_the_bit(
    tmp_path: Path, models_cache: Path, max_norm: float
) -> None:
    """Below max_norm the gradients are left as they are (no multiply by 1), above it
    they are scaled; either way exactly what the Trainer's own clipping gives."""
    trainer = _trainer(models_cache, tmp_path / "out")
    trainer.args.max_grad_norm = max_norm
    model = trainer.model
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    model(**batch).loss.backward()
    grads = [p.grad.clone() for p in model.parameters()]

    ours = trainer._clip_grad_norm(model)
    clipped = [p.grad.clone() for p in model.parameters()]
    for p, g in zip(model.parameters(), grads, strict=True):
        p.grad = g.clone()
    theirs = Trainer._clip_grad_norm(trainer, model)

    assert torch.equal(ours, theirs)
    for p, mine in zip(model.parameters(), clipped, strict=True):
        assert torch.equal(p.grad, mine)
    scaled = not torch.equal(clipped[0], grads[0])
    assert scaled == (max_norm < float(theirs)), (max_norm, float(theirs))
