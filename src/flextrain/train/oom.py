"""Running out of memory inside the worker: recognising it, backing off, advising.

The runner retries at half the micro-batch and twice the gradient accumulation (the
same examples per optimizer step) while it can; when it cannot, the job fails with
what to change instead of an allocator's stack trace. A worker killed by the kernel
for memory never gets here: flextrain.jobs.oom explains those from outside.
"""

from __future__ import annotations

import gc
from dataclasses import replace
from typing import Any

import torch
from transformers import TrainingArguments

from flextrain.jobs import oom


class OutOfMemoryAdvice(RuntimeError):
    """The run ran out of memory and was not (or no longer) recovered: what to change."""


def out_of_memory_advice(cfg: Any, micro: int, accumulation: int) -> str:
    """The message a user can act on, instead of an allocator's stack trace."""
    why = (
        "already at micro-batch 1"
        if micro == 1
        else "oom_recovery is off"
        if not cfg.oom_recovery
        else "recovery is not done with several processes"
    )
    return oom.out_of_memory_advice(cfg, micro, accumulation, why)


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA/MPS/XPU out-of-memory errors, the CPU allocator's failure, Python's MemoryError
    (accelerate's list of messages, which auto_find_batch_size also relies on)."""
    from accelerate.utils.memory import should_reduce_batch_size

    return isinstance(exc, MemoryError | torch.OutOfMemoryError) or (
        isinstance(exc, Exception) and should_reduce_batch_size(exc)
    )


def halved_batch(args: TrainingArguments) -> TrainingArguments:
    """Half the micro-batch and twice the accumulation: each optimizer step still sees the
    same examples, so the run's schedule and results stay comparable."""
    return replace(
        args,
        per_device_train_batch_size=args.per_device_train_batch_size // 2,
        gradient_accumulation_steps=args.gradient_accumulation_steps * 2,
    )


def free_memory() -> None:
    """Give back what the dropped model held before a smaller one is built: cycles first,
    then (with a GPU) the allocator's cached blocks."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
