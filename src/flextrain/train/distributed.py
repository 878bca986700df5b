"""What a worker needs to know when torchrun started it as one rank of several.

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; the Trainer (through accelerate)
builds the process group from them. Only rank 0 reports to the job store and
writes the result files; every rank trains, evaluates and takes part in saving
(FSDP gathers the sharded weights through collectives).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_distributed() -> bool:
    return world_size() > 1


def is_reporter() -> bool:
    """Whether this process writes progress, metrics, events and result files (rank 0)."""
    return rank() == 0


def backend() -> str:
    """NCCL between GPUs, gloo between CPU processes."""
    return "nccl" if torch.cuda.is_available() else "gloo"


def agree(flag: bool) -> bool:
    """True on every rank if it is True on any: a stop asked on one rank (its SIGTERM, or
    rank 0 seeing a cancel in the store) must stop all of them at the same step, or the
    others would wait forever in the next collective."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return flag
    device = torch.device("cuda", torch.cuda.current_device()) if backend() == "nccl" else "cpu"
    value = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def strategy_arguments(config: Any, model: Any) -> dict[str, Any]:
    """TrainingArguments for the job's strategy when it runs as several processes.

    DDP: the backend and the collective timeout (a dead rank fails the job after
    `distributed_timeout` seconds instead of hanging). FSDP (version 2): full
    sharding, each of the model's decoder layer classes wrapped on its own (from
    `_no_split_modules`, the layers transformers never splits), a full state dict
    at save so the result loads like any model. DeepSpeed: ZeRO stage 2 unless a
    config file is given.
    """
    if not is_distributed():
        return {}
    out: dict[str, Any] = {"ddp_backend": backend(), "ddp_timeout": config.distributed_timeout}
    strategy = config.distributed_strategy
    if strategy == "fsdp":
        fsdp_config: dict[str, Any] = {
            "version": 2,
            "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "state_dict_type": "FULL_STATE_DICT",
        }
        layers = decoder_layer_classes(model)
        if layers:
            fsdp_config["transformer_layer_cls_to_wrap"] = layers
        out.update({"fsdp": True, "fsdp_config": fsdp_config})
    elif strategy == "deepspeed":
        out["deepspeed"] = config.deepspeed_config or {
            "zero_optimization": {"stage": 2},
            "train_micro_batch_size_per_gpu": "auto",
            "gradient_accumulation_steps": "auto",
            "gradient_clipping": "auto",
            "bf16": {"enabled": "auto"},
            "fp16": {"enabled": "auto"},
        }
    else:
        # Every trainable parameter of the five training types takes part in the forward
        # pass; the Trainer's default would search the graph for unused ones every step.
        out["ddp_find_unused_parameters"] = False
    return out


def decoder_layer_classes(model: Any) -> list[str]:
    """The model's repeated block classes (e.g. LlamaDecoderLayer), through a PEFT wrapper."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    names = getattr(base, "_no_split_modules", None) or []
    return [str(n) for n in names]


def init_process_group(timeout_seconds: int) -> None:
    """Join the process group torchrun set up, with our timeout on every backend.

    The Trainer would create it too, but on CPU without a timeout (gloo's default is
    30 minutes): a rank whose peer died would wait that long in its next collective.
    accelerate finds the group already initialised and uses it.
    """
    import torch.distributed as dist

    if not is_distributed() or dist.is_initialized():
        return
    from datetime import timedelta

    if backend() == "nccl":
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend=backend(), timeout=timedelta(seconds=timeout_seconds))


@contextmanager
def rank_zero_first() -> Iterator[None]:
    """Rank 0 runs the block first (tokenising into the shared cache), the others after,
    reading what it stored instead of each tokenising the same data."""
    import torch.distributed as dist

    active = is_distributed() and dist.is_available() and dist.is_initialized()
    if active and rank() != 0:
        dist.barrier()
    try:
        yield
    finally:
        if active and rank() == 0:
            dist.barrier()


def shutdown() -> None:
    """Leave the process group before the interpreter exits: torch's background threads
    (the TCP store, gloo) torn down by interpreter shutdown instead can abort the process
    ("terminate called without an active exception"), turning a finished run into a
    failed rank."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        try:
            dist.destroy_process_group()
        except Exception as exc:  # the run's result is recorded already
            print(f"[flextrain] leaving the process group: {exc}", flush=True)
