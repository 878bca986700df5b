"""The Trainer subclass every run uses: atomic checkpoints, expert mode, perplexity.

Most of it goes through the Trainer's documented extension points (create_optimizer,
create_scheduler, compute_loss, training_step, log). Atomic checkpoints cannot: the
Trainer has no public say in where a checkpoint is written before it writes it, so
`_get_output_dir` and `_save_checkpoint` are overridden. Two more private ones save
work without changing a result (`_save_optimizer_and_scheduler`, `_clip_grad_norm`; see
there). tests/train/test_trainer_overrides.py fails when a transformers release changes
any of them.
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import DistributedType
from torch.nn.utils import clip_grads_with_norm_, get_total_norm
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from flextrain.jobs.checkpoints import STAGING_PREFIX, disk_full_message, is_disk_full
from flextrain.train.expert import ExpertSetup
from flextrain.train.health import HealthChecked
from flextrain.train.stop import DiskPausedError


class CheckpointDiskFullError(DiskPausedError, OSError):
    """A checkpoint did not fit on the disk (the disk filled while it was written); the
    message says what was kept and the fix."""


class FlexTrainer(HealthChecked):
    """Trainer that also reports perplexity wherever a language model's eval loss is logged
    (history, job metrics, and the best-model choice, which reads the same dict), and
    checks each step's health (HealthChecked)."""

    def __init__(
        self,
        *args: Any,
        language_model: bool = False,
        expert: ExpertSetup | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.language_model = language_model
        self.expert = expert or ExpertSetup()
        self._staging_dir: str | None = None

    # Checkpoints are written whole or not at all. The Trainer writes `checkpoint-N`
    # file by file, so a full disk or a kill half-way left a folder with the final
    # name. Here it writes into `tmp-checkpoint-N/` (its run folder while saving),
    # which is renamed to `checkpoint-N` once complete; a failed save is removed, and
    # a full disk says what was kept and what to do.
    #
    # Private overrides, because no public hook fits: `on_save` runs after the files
    # are already under their final name, and `save_model` writes only the weights
    # (the optimizer, scheduler, RNG and trainer state are written by
    # `_save_checkpoint` itself, into `_get_output_dir`'s folder).
    def _get_output_dir(self, trial: Any) -> str:
        return self._staging_dir or super()._get_output_dir(trial)

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        run_dir = super()._get_output_dir(trial)
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        staging = os.path.join(run_dir, f"{STAGING_PREFIX}{self.state.global_step}")
        final, staged = os.path.join(run_dir, name), os.path.join(staging, name)
        main = self.args.should_save  # the process that writes the shared files
        if main:  # a save a kill interrupted: nothing in it is wanted
            for stale in Path(run_dir).glob(f"{STAGING_PREFIX}*"):
                shutil.rmtree(stale, ignore_errors=True)
        self.accelerator.wait_for_everyone()
        self._staging_dir = staging
        try:
            super()._save_checkpoint(model, trial)  # its rotation sees only the staged one
            self.accelerator.wait_for_everyone()  # every rank's RNG state is in
            if main:
                if self.state.best_model_checkpoint == staged:  # this one is the best
                    self.state.best_model_checkpoint = final
                    self.state.save_to_json(os.path.join(staged, TRAINER_STATE_NAME))
                if os.path.isdir(final):  # the same step saved before (the Trainer overwrote)
                    shutil.rmtree(final)
                os.replace(staged, final)
                os.rmdir(staging)
        except Exception as exc:
            disk_full = is_disk_full(exc, Path(run_dir))
            if main:
                shutil.rmtree(staging, ignore_errors=True)
            if disk_full:
                raise CheckpointDiskFullError(
                    disk_full_message(Path(run_dir), self.state.global_step)
                ) from exc
            raise
        finally:
            self._staging_dir = None
        if main:
            rotate_checkpoints(
                output_dir=run_dir,
                save_total_limit=self.args.save_total_limit,
                best_model_checkpoint=self.state.best_model_checkpoint,
                use_mtime=True,
            )
        self.accelerator.wait_for_everyone()

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        # A checkpoint of the last step is only ever resumed to skip training
        # (train/resume.py: its weights and state are loaded, no optimizer step follows),
        # so its optimizer state (twice the weights for AdamW) is not written. Every rank
        # sees the same step, so the collective saves of FSDP are skipped by all or none.
        if self.state.max_steps and self.state.global_step >= self.state.max_steps:
            return
        super()._save_optimizer_and_scheduler(output_dir)

    def _clip_grad_norm(self, model: Any) -> Any:
        # The Trainer scales every gradient by min(1, max_norm / norm) even when that is
        # 1, to spare an accelerator a host sync. On the CPU there is no sync to spare,
        # and the multiply is a pass over every gradient (3% of a MiniLM step): it is
        # skipped when it would multiply by 1. The norm is the Trainer's, to the bit.
        kind = self.accelerator.distributed_type
        plain = kind in (DistributedType.NO, DistributedType.MULTI_CPU)
        on_cpu = (
            self.args.device.type == "cpu" and getattr(self.accelerator, "scaler", None) is None
        )
        if not (plain and on_cpu) or self._has_mixed_mesh_grads(model):
            return super()._clip_grad_norm(model)
        max_norm = float(self.args.max_grad_norm)
        params = [p for p in model.parameters() if p.grad is not None]
        if not params:
            return torch.zeros(())
        # The accelerator's way (a norm per device mesh, then the norm of those): one here.
        per_mesh = torch.stack([get_total_norm([p.grad for p in params], 2.0)])
        total = torch.linalg.vector_norm(per_mesh, 2.0)
        if not bool(max_norm / (total + 1e-6) >= 1.0):  # NaN too: scaled, as before
            clip_grads_with_norm_(params, max_norm, total)
        return total

    # Expert mode through the Trainer's own extension points: what it builds is then
    # checkpointed, resumed and logged like the defaults.
    def create_optimizer(self, model: Any = None) -> Any:
        if self.expert.optimizer is not None and self.optimizer is None:
            target = self.model if model is None else model
            assert target is not None
            self.optimizer = self.expert.optimizer(target)
            return self.optimizer
        return super().create_optimizer(model)

    def create_scheduler(self, num_training_steps: int, optimizer: Any = None) -> Any:
        if self.expert.schedule is not None and self.lr_scheduler is None:
            chosen = optimizer or self.optimizer
            assert chosen is not None, "create_optimizer runs first"
            self.lr_scheduler = self.expert.schedule(chosen, num_training_steps)
            # The flag the Trainer's own create_scheduler sets (a private attribute): a
            # later train() call then builds the schedule again for its own step count.
            self._created_lr_scheduler = True
            return self.lr_scheduler
        return super().create_scheduler(num_training_steps, optimizer)

    def compute_loss(
        self,
        model: Any,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        if self.expert.user_loss is None:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        # The user's function returns a per-batch mean, like a model's own loss.
        self.loss_is_scaled_for_ga = False
        outputs = model(**inputs)
        loss = self.expert.user_loss(model, inputs, outputs)
        return (loss, outputs) if return_outputs else loss

    def training_step(self, *args: Any, **kwargs: Any) -> Any:
        # Fault injection for the tests of out-of-memory back-off (CI has no GPU to fill).
        limit = os.environ.get("FLEXTRAIN_FAULT_OOM_ABOVE_BATCH")
        if limit and self.args.per_device_train_batch_size > int(limit):
            raise torch.OutOfMemoryError(
                "CUDA out of memory. (injected: FLEXTRAIN_FAULT_OOM_ABOVE_BATCH)"
            )
        return super().training_step(*args, **kwargs)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self.language_model:
            for key in [k for k in logs if k.endswith("eval_loss")]:
                # exp() overflows past ~709; a loss that high means "no model" anyway.
                logs[key.replace("eval_loss", "eval_perplexity")] = math.exp(min(logs[key], 700))
        super().log(logs, start_time)


def trainer_class(expert: ExpertSetup) -> type[FlexTrainer]:
    """FlexTrainer, or with the user's Trainer subclass first in the order: its overrides
    win, and flextrain's checkpointing and reporting stay underneath."""
    if expert.trainer_class is None:
        return FlexTrainer
    return type("ExpertTrainer", (expert.trainer_class, FlexTrainer), {})
