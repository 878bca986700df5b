"""What a run will write to disk, before it starts.

A run that fills its disk at the third checkpoint has wasted every step since the
second; the numbers are known before it starts. A checkpoint holds the trained
weights (the adapter alone for LoRA), the optimizer's state, the tokenizer and a few
small files; the Trainer writes a new one before rotating the oldest out, so with
`save_total_limit` k, k + 1 exist for a moment. The final model is the weights again
(and the tokenizer). Sizes are those of fp32 tensors, what the Trainer saves here.
"""

from __future__ import annotations

from dataclasses import dataclass

from flextrain.estimate.memory import OPTIMIZER_STATE_BYTES
from flextrain.hardware.disk import describe_bytes

# trainer_state.json, scheduler and RNG state, configs: small, but not nothing (logs go
# to the job folder, not the output folder).
SMALL_FILES_BYTES = 1024**2
# Files a tokenizer is saved as: each checkpoint and the final model carry a copy.
TOKENIZER_FILES = ("tokenizer*", "vocab*", "merges*", "special_tokens*", "added_tokens*", "*.model")
_FP32 = 4


@dataclass(frozen=True)
class DiskEstimate:
    """Bytes the run writes, by part; `peak` is what must be free at its fullest."""

    checkpoint: int  # one checkpoint
    checkpoints_at_once: int  # the most that exist together (one more during rotation)
    final_model: int
    small_files: int = SMALL_FILES_BYTES

    @property
    def peak(self) -> int:
        return self.checkpoint * self.checkpoints_at_once + self.final_model + self.small_files

    def describe(self) -> str:
        """The parts, in words: what the refusal and the check show."""
        many = self.checkpoints_at_once
        return (
            f"{many} checkpoint{'s' if many != 1 else ''} of {describe_bytes(self.checkpoint)} "
            f"at once + the final model {describe_bytes(self.final_model)} + logs"
        )


def estimate_disk(
    *,
    total_parameters: int,
    trainable_parameters: int,
    lora: bool,
    optimizer: str,
    tokenizer_bytes: int,
    total_steps: int,
    steps_per_save: int,
    save_total_limit: int | None,
) -> DiskEstimate:
    """The bytes a run writes, from its parameter counts and checkpoint schedule.

    `steps_per_save` is the number of optimizer steps between checkpoints (an epoch's
    when it saves per epoch); the run's last step is saved too.
    """
    saved_weights = (trainable_parameters if lora else total_parameters) * _FP32
    optimizer_state = int(trainable_parameters * OPTIMIZER_STATE_BYTES.get(optimizer, 8.0))
    checkpoint = saved_weights + optimizer_state + tokenizer_bytes
    saves = max(1, -(-max(total_steps, 1) // max(steps_per_save, 1)))
    at_once = saves if save_total_limit is None else min(saves, save_total_limit + 1)
    return DiskEstimate(
        checkpoint=checkpoint,
        checkpoints_at_once=at_once,
        final_model=saved_weights + tokenizer_bytes,
    )
