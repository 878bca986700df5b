"""Free space checked before each checkpoint, and watched while the run trains.

A checkpoint that does not fit is worse than none: written file by file, it fails
half-way (the atomic save then removes it, but the step's work is lost with the run).
So before the Trainer saves, the guard compares the checkpoint's size (the last one's,
or what the model and optimizer state add up to before there is one) with the free
space less the reserve the config keeps. Short of room it prunes older checkpoints
when allowed, and otherwise stops the run without saving: the job ends PAUSED,
resumable from its latest complete checkpoint once there is room.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from flextrain.config.health import HealthOptions
from flextrain.hardware.disk import describe_bytes, free_bytes
from flextrain.jobs.checkpoints import latest_checkpoint, list_checkpoints, prune_checkpoints
from flextrain.jobs.store import JobStore
from flextrain.train import distributed

# Room a checkpoint gets beyond its measured or counted size (files grow: trainer state).
_MARGIN = 1.05
# Scheduler, RNG and trainer state, configs: counted before a checkpoint exists to measure.
_SMALL_FILES = 256 * 1024
# Seconds between looks at the free space while the run trains.
WATCH_INTERVAL_S = 30.0


def tensor_bytes(tensors: Any) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if hasattr(t, "numel"))


def counted_checkpoint_bytes(model: Any, optimizer: Any, tokenizer: int = 0) -> int:
    """What a checkpoint of `model` and `optimizer` holds before one exists to measure:
    the saved weights (the adapter alone when peft trains one), the optimizer's state,
    the tokenizer's files (`tokenizer` bytes) and small files."""
    params = list(model.parameters()) if model is not None else []
    if hasattr(model, "peft_config"):
        params = [p for p in params if p.requires_grad]
    weights = tensor_bytes(params)
    state = 0
    if optimizer is not None:
        for entry in getattr(optimizer, "state", {}).values():
            state += tensor_bytes(entry.values())
    return weights + state + tokenizer + _SMALL_FILES


class DiskGuard(TrainerCallback):
    """See the module docstring; `paused` holds the reason once the run was stopped."""

    def __init__(
        self,
        store: JobStore,
        job_id: str,
        checkpoint_dir: Path,
        options: HealthOptions,
        *,
        reporter: bool = True,
        tokenizer_bytes: int = 0,
    ) -> None:
        self.tokenizer_bytes = tokenizer_bytes
        self.store = store
        self.job_id = job_id
        self.checkpoint_dir = checkpoint_dir
        self.options = options
        self.reporter = reporter
        self.paused: str | None = None
        self._last_watch = 0.0
        self._low = False

    @property
    def reserve(self) -> int:
        return int(self.options.disk_reserve_mb * 1024**2)

    def needed(self, model: Any, optimizer: Any) -> int:
        """Bytes the next checkpoint needs: the latest one's size, else the count."""
        infos = list_checkpoints(self.checkpoint_dir)
        size = (
            infos[-1].size_bytes
            if infos
            else counted_checkpoint_bytes(model, optimizer, self.tokenizer_bytes)
        )
        return int(size * _MARGIN)

    def room(self) -> int:
        return free_bytes(self.checkpoint_dir) - self.reserve

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        now = time.monotonic()
        if not control.should_save:
            if self.reporter and now - self._last_watch >= WATCH_INTERVAL_S:
                self._last_watch = now
                self._watch(kw.get("model"), kw.get("optimizer"), state.global_step)
            return
        short = False
        if self.reporter:
            need = self.needed(kw.get("model"), kw.get("optimizer"))
            if need > self.room() and self.options.prune_checkpoints_when_full:
                self._prune(state.global_step)
            short = need > self.room()
            if short:
                self.paused = self._message(state.global_step, need)
        # Every rank skips the save together (they wait for each other inside it).
        if distributed.agree(short):
            self.paused = self.paused or "another process found the disk full"
            control.should_save = False
            control.should_training_stop = True
            print(f"[flextrain] {self.paused}", flush=True)

    def _watch(self, model: Any, optimizer: Any, step: int) -> None:
        """A warning event when the next checkpoint would not fit (once, until it would)."""
        need = self.needed(model, optimizer)
        low = need > self.room()
        if low and not self._low:
            self.store.add_event(
                self.job_id,
                "disk_low",
                f"At step {step}, {self.checkpoint_dir} has {describe_bytes(self.room())} "
                f"free beyond the reserve; the next checkpoint needs about "
                f"{describe_bytes(need)}. The job pauses before it unless space is freed.",
                level="warning",
                data={"step": step, "free_bytes": self.room(), "needed_bytes": need},
            )
        self._low = low

    def _prune(self, step: int) -> None:
        infos = list_checkpoints(self.checkpoint_dir)
        if len(infos) < 2:
            return
        deleted, freed = prune_checkpoints(self.checkpoint_dir, keep=[infos[-1].step])
        if deleted:
            self.store.add_event(
                self.job_id,
                "checkpoints_pruned",
                f"Disk short before checkpoint-{step}: deleted "
                f"{', '.join(f'checkpoint-{s}' for s in deleted)} ({describe_bytes(freed)}); "
                "prune_checkpoints_when_full is on.",
                level="warning",
                data={"step": step, "deleted": deleted, "freed_bytes": freed},
            )

    def _message(self, step: int, need: int) -> str:
        latest = latest_checkpoint(self.checkpoint_dir)
        kept = (
            f"{latest.name} is the latest checkpoint and resume continues from it"
            if latest is not None
            else "there is no earlier checkpoint, so resume starts over"
        )
        free = free_bytes(self.checkpoint_dir)
        return (
            f"Paused at step {step} before its checkpoint: it needs about "
            f"{describe_bytes(need)}, and {self.checkpoint_dir} has {describe_bytes(free)} "
            f"free, {describe_bytes(self.reserve)} of which is kept free "
            f"(health.disk_reserve_mb); nothing was half-written; {kept}. Fix: free space "
            "on that disk (`flextrain jobs checkpoints JOB --prune` deletes all but the "
            "latest and best checkpoints; health.prune_checkpoints_when_full does it "
            "by itself), or move output_dir to a larger disk, then `flextrain jobs resume JOB`."
        )
