"""The rules about where and how a run happens: checkpoints, the data's size, memory on
this machine, experiment tracking packages, and several processes or machines."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator

from flextrain.config.enums import TrainingType
from flextrain.config.issues import RuleContext, ValidationIssue
from flextrain.config.issues import err as _err
from flextrain.config.issues import warn as _warn


def checkpointing_rule(ctx: RuleContext) -> Iterator[ValidationIssue]:
    c = ctx.config
    model = ctx.model
    if c.gradient_checkpointing and model and not model.supports_gradient_checkpointing:
        yield _warn(
            "gradient_checkpointing",
            "this model does not support it; it will be off.",
            "set gradient_checkpointing=False to silence this.",
        )


def data_rule(ctx: RuleContext) -> Iterator[ValidationIssue]:
    c = ctx.config
    data = ctx.dataset
    if data is None:
        return
    if data.num_rows < 2:
        yield _err(
            "dataset_id",
            f"the dataset has {data.num_rows} usable rows.",
            "provide at least 2 rows (hundreds for a useful model).",
        )
    if c.training_type == TrainingType.TASK_SPECIFIC:
        if not data.has_labels:
            yield _err(
                "dataset_id",
                "task_specific training needs a 'label' column.",
                "use a dataset with text and label columns, or another training type.",
            )
        elif data.num_labels < 2:
            yield _err(
                "dataset_id",
                f"has {data.num_labels} distinct label(s).",
                "provide examples of at least 2 labels.",
            )


# An estimate is not a measurement: refuse only what clearly cannot fit, warn near the edge.
MEMORY_REFUSE_FACTOR = 1.10
MEMORY_WARN_FACTOR = 0.90


def memory_rule(ctx: RuleContext) -> Iterator[ValidationIssue]:
    mem = ctx.memory
    if mem is None:
        return
    message = (
        f"needs about {mem.peak_gb:.2f} GB of {mem.kind} memory; "
        f"{mem.available_gb:.2f} GB is available."
    )
    if mem.peak_gb > mem.available_gb * MEMORY_REFUSE_FACTOR:
        if ctx.config.ignore_memory_estimate:
            yield _warn(
                "batch_size", message + " Started anyway (ignore_memory_estimate).", mem.fix
            )
        else:
            yield _err("batch_size", message, f"{mem.fix} Or force it with ignore_memory_estimate.")
    elif mem.peak_gb > mem.available_gb * MEMORY_WARN_FACTOR:
        yield _warn("batch_size", message + " It may not fit.", mem.fix)


def tracking_rule(ctx: RuleContext) -> Iterator[ValidationIssue]:
    # Import names per tracker, as flextrain.train.tracking has them (config imports
    # nothing of ours); TensorBoardCallback also writes with tensorboardX.
    packages = {"mlflow": ("mlflow",), "tensorboard": ("tensorboard", "tensorboardX")}
    for tracker in dict.fromkeys(ctx.config.tracking):
        if not any(importlib.util.find_spec(name) for name in packages[tracker]):
            yield _err(
                "tracking",
                f"{tracker} is requested but the {tracker} package is not installed.",
                f"pip install 'flextrain[tracking]', or remove {tracker} from tracking.",
            )


def distributed_rule(ctx: RuleContext) -> Iterator[ValidationIssue]:
    """Process layout and strategy: what torchrun would otherwise fail on, minutes in."""
    c = ctx.config
    for name in ("num_processes", "num_nodes"):
        if getattr(c, name) < 1:
            yield _err(name, f"{getattr(c, name)} is below 1.", f"set {name} to 1 or more.")
    if c.distributed_timeout < 30:
        yield _err(
            "distributed_timeout",
            f"{c.distributed_timeout} s is too short for a rendezvous or a checkpoint save.",
            "use 30 seconds or more (default 600).",
        )
    if c.num_nodes > 1 and c.rdzv_endpoint is not None and ":" not in c.rdzv_endpoint:
        yield _err(
            "rdzv_endpoint",
            f"'{c.rdzv_endpoint}' has no port.",
            "write it as HOST:PORT, e.g. node0.example.org:29400.",
        )
    if c.distributed_strategy != "ddp" and c.world_size == 1:
        yield _warn(
            "distributed_strategy",
            f"{c.distributed_strategy} shards over several processes; with one process the "
            "job trains as a plain single-process run.",
            "raise num_processes (one per GPU), or leave distributed_strategy at ddp.",
        )
    if c.distributed_strategy == "deepspeed" and not importlib.util.find_spec("deepspeed"):
        yield _err(
            "distributed_strategy",
            "deepspeed is requested but the deepspeed package is not installed.",
            "pip install 'flextrain[deepspeed]', or use fsdp (built into PyTorch).",
        )
    hardware = ctx.hardware
    if hardware is None or c.num_processes <= 1:
        return
    gpus = hardware.gpu_count
    if gpus > 0 and c.num_processes > gpus:
        yield _err(
            "num_processes",
            f"{c.num_processes} processes but this machine has {gpus} GPU(s); each process "
            "trains on its own GPU.",
            f"set num_processes to {gpus} or fewer (or add nodes with num_nodes).",
        )
    cores = getattr(hardware, "cpu_cores", None)
    if gpus == 0 and cores and c.num_processes > cores:
        yield _err(
            "num_processes",
            f"{c.num_processes} CPU processes on {cores} cores: each needs a core of its own "
            "(oversubscribed threads run several times slower).",
            f"set num_processes to {cores} or fewer.",
        )
    if gpus == 0 and c.distributed_strategy == "deepspeed":
        yield _err(
            "distributed_strategy",
            "DeepSpeed trains on GPUs and this machine has none.",
            "use ddp (or fsdp) on CPU, or run the job on a GPU machine.",
        )
