"""Checkpoints of real runs: listed with their losses and sizes, exported as a model
that loads and predicts like the checkpoint, pruned to exactly the kept steps.

One full fine-tune and one LoRA run of the tiny Llama (6 steps, a checkpoint every
2) are trained once for the module, side by side; tests that change files work on
a copy of their checkpoint folder.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import torch

from flextrain.config.enums import TrainingStatus, TrainingType
from flextrain.config.schemas import AdvancedTrainingConfig
from flextrain.jobs import checkpoints as ckpt
from flextrain.jobs.checkpoints import (
    CheckpointNotFoundError,
    disk_usage,
    export_checkpoint,
    latest_checkpoint,
    list_checkpoints,
    prune_checkpoints,
)
from flextrain.service import TrainingService
from flextrain.settings import Settings

RESUME_ONLY = {"optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin"}
TOKENIZER = {"tokenizer.json", "tokenizer_config.json"}


def checkpoint_config(training_type: TrainingType) -> AdvancedTrainingConfig:
    return AdvancedTrainingConfig(
        model_id="flextrain/tiny-llama",
        dataset_id="demo/text",
        training_type=training_type,
        num_epochs=1,
        max_steps=6,
        learning_rate=3e-3,
        batch_size=8,
        max_length=32,
        logging_steps=1,
        save_steps=2,
        save_total_limit=None,
        eval_strategy="steps",
        eval_steps=2,
        evaluate_before_training=False,
        num_threads=1,
    )


@dataclass(frozen=True)
class Run:
    job_id: str
    checkpoint_dir: Path
    history: list[dict[str, Any]]
    started: datetime
    base_model: Path


@pytest.fixture(scope="module")
def runs(
    tmp_path_factory: pytest.TempPathFactory, models_cache: Path
) -> Iterator[dict[TrainingType, Run]]:
    home = tmp_path_factory.mktemp("checkpoints") / "home"
    service = TrainingService(Settings(home=home, models_cache=models_cache))
    started = datetime.now(UTC)
    try:
        ids = {}
        for kind in (TrainingType.FINE_TUNING, TrainingType.LORA_ADAPTATION):
            ids[kind] = service.create_job(checkpoint_config(kind)).job_id
            service.start_job(ids[kind])
        out = {}
        for kind, job_id in ids.items():
            job = service.wait(job_id, timeout=120, poll=0.2)
            assert job.status == TrainingStatus.COMPLETED, service.read_log(job_id, 40)
            out[kind] = Run(
                job_id=job_id,
                checkpoint_dir=service.environment(job_id).checkpoint_dir,
                history=service.metric_history(job_id),
                started=started,
                base_model=service.models.resolve("flextrain/tiny-llama").path,
            )
        yield out
    finally:
        for job in service.list_jobs():
            if not job.is_finished:
                service.cancel_job(job.job_id)
        service.engine.dispose()


@pytest.fixture
def full(runs: dict[TrainingType, Run]) -> Run:
    return runs[TrainingType.FINE_TUNING]


@pytest.fixture
def lora(runs: dict[TrainingType, Run]) -> Run:
    return runs[TrainingType.LORA_ADAPTATION]


@pytest.fixture
def copied(full: Run, tmp_path: Path) -> Path:
    """A copy of the full run's checkpoints that a test may change."""
    return Path(shutil.copytree(full.checkpoint_dir, tmp_path / "checkpoints"))


def bytes_under(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def logits(model: Any, tokenizer_dir: Path) -> torch.Tensor:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    batch = tokenizer(["the river was bright today"], return_tensors="pt")
    model.eval()
    with torch.no_grad():
        out: torch.Tensor = model(**batch).logits
    return out


def causal_logits(folder: Path) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    return logits(AutoModelForCausalLM.from_pretrained(folder), folder)


def peft_logits(folder: Path) -> torch.Tensor:
    from peft import AutoPeftModelForCausalLM

    return logits(AutoPeftModelForCausalLM.from_pretrained(folder), folder)


# -- listing ---------------------------------------------------------------------------


def test_list_reports_every_step_with_its_losses_size_and_time(full: Run) -> None:
    infos = list_checkpoints(full.checkpoint_dir)

    assert [i.step for i in infos] == [2, 4, 6]
    assert [i.path.name for i in infos] == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]
    epochs = [i.epoch for i in infos]
    assert all(e is not None and e > 0 for e in epochs)
    assert epochs == sorted(epochs)
    # The losses agree with what the worker recorded in the store at each step.
    for info in infos:
        loss_rows = [r for r in full.history if "loss" in r and r["step"] == info.step]
        eval_rows = [r for r in full.history if "eval_loss" in r and r["step"] == info.step]
        assert info.loss == pytest.approx(loss_rows[-1]["loss"])
        assert info.eval_loss == pytest.approx(eval_rows[-1]["eval_loss"])
        assert info.size_bytes == bytes_under(info.path) > 0
        assert info.modified.tzinfo is not None
        assert full.started.timestamp() - 1 <= info.modified.timestamp()
        assert info.modified <= datetime.now(UTC)
    assert len({i.loss for i in infos}) == 3
    # No metric_for_best_model, so the Trainer names no best checkpoint: the one whose
    # own step was evaluated lowest is the best (the column was empty on every job).
    lowest = min(infos, key=lambda i: i.eval_loss or float("inf"))
    assert [i.step for i in infos if i.is_best] == [lowest.step]

    assert latest_checkpoint(full.checkpoint_dir) == full.checkpoint_dir / "checkpoint-6"
    assert disk_usage(full.checkpoint_dir) == sum(i.size_bytes for i in infos)
    as_json = json.loads(json.dumps(infos[0].to_dict()))
    assert as_json["step"] == 2
    assert as_json["path"] == str(infos[0].path)
    assert datetime.fromisoformat(as_json["modified"]) == infos[0].modified


def test_a_missing_folder_has_no_checkpoints(tmp_path: Path) -> None:
    assert list_checkpoints(tmp_path / "nope") == []
    assert latest_checkpoint(tmp_path / "nope") is None
    assert disk_usage(tmp_path / "nope") == 0
    with pytest.raises(CheckpointNotFoundError, match="available steps: none yet"):
        export_checkpoint(tmp_path / "nope", None, tmp_path / "out")
    assert prune_checkpoints(tmp_path / "nope") == ([], 0)


def test_folders_being_written_are_never_listed_or_deleted(copied: Path) -> None:
    size = disk_usage(copied)
    source = copied / "checkpoint-6"
    shutil.copytree(source, copied / "tmp-checkpoint-8")
    no_state = Path(shutil.copytree(source, copied / "checkpoint-10"))
    (no_state / "trainer_state.json").unlink()
    half = Path(shutil.copytree(source, copied / "checkpoint-12"))
    state = half / "trainer_state.json"
    state.write_text(state.read_text()[:40])
    (copied / "checkpoint-14").write_text("not a folder")

    assert [i.step for i in list_checkpoints(copied)] == [2, 4, 6]
    assert latest_checkpoint(copied) == source
    assert disk_usage(copied) == size

    deleted, _ = prune_checkpoints(copied)
    assert deleted == [2, 4]
    untouched = ["checkpoint-6", "tmp-checkpoint-8", "checkpoint-10", "checkpoint-12"]
    assert {p.name for p in copied.iterdir()} == {*untouched, "checkpoint-14"}


# -- export ----------------------------------------------------------------------------


def test_exported_full_model_loads_and_predicts_like_its_checkpoint(
    full: Run, tmp_path: Path
) -> None:
    out = export_checkpoint(full.checkpoint_dir, 2, tmp_path / "exported")

    assert out == (tmp_path / "exported").resolve()
    names = {p.name for p in out.iterdir()}
    assert names == {"config.json", "generation_config.json", "model.safetensors", *TOKENIZER}
    assert not names & (RESUME_ONLY | {"trainer_state.json"})
    exported = causal_logits(out)
    assert torch.equal(exported, causal_logits(full.checkpoint_dir / "checkpoint-2"))
    # It is step 2's model, not the latest one.
    assert not torch.allclose(exported, causal_logits(full.checkpoint_dir / "checkpoint-6"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exported"]  # no staging left


def test_exported_latest_lora_adapter_loads_with_peft(lora: Run, tmp_path: Path) -> None:
    target = tmp_path / "adapter"
    target.mkdir()  # an empty folder is a fine destination
    out = export_checkpoint(lora.checkpoint_dir, None, target)

    names = {p.name for p in out.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", *TOKENIZER} <= names
    assert not names & (RESUME_ONLY | {"trainer_state.json", "model.safetensors"})
    exported = peft_logits(out)
    assert torch.equal(exported, peft_logits(lora.checkpoint_dir / "checkpoint-6"))
    # The adapter really is applied: the base model alone predicts otherwise.
    assert not torch.allclose(exported, causal_logits(lora.base_model))


def test_export_refuses_a_used_destination_and_leaves_nothing_on_failure(
    full: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    used = tmp_path / "used"
    used.mkdir()
    (used / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not an empty folder"):
        export_checkpoint(full.checkpoint_dir, 4, used)
    assert [p.name for p in used.iterdir()] == ["keep.txt"]
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    with pytest.raises(FileExistsError):
        export_checkpoint(full.checkpoint_dir, 4, a_file)

    copies = 0
    real_copy = shutil.copy2

    def fail_on_second(src: Any, dst: Any) -> Any:
        nonlocal copies
        copies += 1
        if copies == 2:
            raise OSError(28, "No space left on device")
        return real_copy(src, dst)

    monkeypatch.setattr(ckpt.shutil, "copy2", fail_on_second)
    with pytest.raises(OSError, match="No space left"):
        export_checkpoint(full.checkpoint_dir, 4, tmp_path / "half")
    assert copies == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "used"]


def test_an_unknown_step_names_the_available_ones(full: Run, tmp_path: Path) -> None:
    with pytest.raises(CheckpointNotFoundError, match=r"step 3 .*available steps: 2, 4, 6\.$"):
        export_checkpoint(full.checkpoint_dir, 3, tmp_path / "out")
    assert issubclass(CheckpointNotFoundError, LookupError)
    assert not (tmp_path / "out").exists()


# -- prune -----------------------------------------------------------------------------


def test_prune_keeps_the_latest_and_the_best_by_default(copied: Path) -> None:
    # As the Trainer writes it with metric_for_best_model: the path it saved to,
    # which is the original folder, not this copy.
    state_file = copied / "checkpoint-6" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    state["best_model_checkpoint"] = "/elsewhere/checkpoints/checkpoint-2"
    state_file.write_text(json.dumps(state))
    assert [i.step for i in list_checkpoints(copied) if i.is_best] == [2]
    before = bytes_under(copied)
    size_of_4 = bytes_under(copied / "checkpoint-4")

    deleted, freed = prune_checkpoints(copied)

    assert deleted == [4]
    assert freed == size_of_4 == before - bytes_under(copied)
    assert sorted(p.name for p in copied.iterdir()) == ["checkpoint-2", "checkpoint-6"]
    assert prune_checkpoints(copied) == ([], 0)


def _forget_evaluations(folder: Path) -> None:
    """As a run without evaluation writes its checkpoints: no eval rows at all."""
    for state_file in folder.glob("checkpoint-*/trainer_state.json"):
        state = json.loads(state_file.read_text())
        state["log_history"] = [r for r in state["log_history"] if "eval_loss" not in r]
        state_file.write_text(json.dumps(state))


def test_without_a_recorded_best_the_lowest_evaluated_checkpoint_is_kept(copied: Path) -> None:
    infos = list_checkpoints(copied)
    best = min(infos, key=lambda i: i.eval_loss or float("inf")).step
    deleted, _ = prune_checkpoints(copied)
    assert sorted({best, 6}) == [i.step for i in list_checkpoints(copied)]
    assert deleted == [s for s in (2, 4) if s != best]


def test_prune_without_a_best_keeps_only_the_latest(copied: Path) -> None:
    _forget_evaluations(copied)
    assert not any(i.is_best for i in list_checkpoints(copied))
    before = bytes_under(copied)
    deleted, freed = prune_checkpoints(copied)
    assert deleted == [2, 4]
    assert freed == before - bytes_under(copied) > 0
    assert [p.name for p in copied.iterdir()] == ["checkpoint-6"]


def test_prune_keeps_exactly_the_named_steps(copied: Path) -> None:
    before = bytes_under(copied)
    deleted, freed = prune_checkpoints(copied, keep=[4])
    assert deleted == [2, 6]
    assert freed == before - bytes_under(copied)
    assert [i.step for i in list_checkpoints(copied)] == [4]
    assert [p.name for p in copied.iterdir()] == ["checkpoint-4"]


def test_prune_with_an_unknown_step_deletes_nothing(copied: Path) -> None:
    with pytest.raises(CheckpointNotFoundError, match=r"steps 3, 99 .*available steps: 2, 4, 6"):
        prune_checkpoints(copied, keep=[4, 3, 99])
    assert [i.step for i in list_checkpoints(copied)] == [2, 4, 6]
