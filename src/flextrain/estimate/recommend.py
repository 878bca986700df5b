"""What to change when a configuration does not fit, each with its estimate.

Tried in the order a user loses least by: smaller micro-batch with gradient
accumulation (same effective batch, same result, slower), gradient
checkpointing (about 20-30% slower), mixed precision on GPU, LoRA instead of
full fine-tuning, QLoRA (the frozen base in 4 bits) when LoRA alone does not fit,
sharding over several GPUs; then combinations.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from flextrain.estimate.memory import Architecture, MemoryEstimate, TrainingSetup, estimate_memory


@dataclass(frozen=True)
class Recommendation:
    description: str
    changes: dict[str, Any]
    estimate: MemoryEstimate
    fits: bool


def largest_fitting_batch(
    arch: Architecture, setup: TrainingSetup, budget_bytes: float, upper: int = 4096
) -> int:
    """Largest micro-batch (powers of two, then exact) whose peak is within budget; 0 if none."""
    if estimate_memory(arch, replace(setup, batch_size=1)).peak > budget_bytes:
        return 0
    lo, hi = 1, 2
    while hi <= upper and estimate_memory(arch, replace(setup, batch_size=hi)).peak <= budget_bytes:
        lo, hi = hi, hi * 2
    hi = min(hi, upper + 1)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if estimate_memory(arch, replace(setup, batch_size=mid)).peak <= budget_bytes:
            lo = mid
        else:
            hi = mid
    return lo


def recommend(
    arch: Architecture,
    setup: TrainingSetup,
    budget_bytes: float,
    *,
    gpu_count: int = 0,
    lora_targets: tuple[str, ...] = (),
) -> list[Recommendation]:
    """Changes that make `setup` fit in `budget_bytes`; empty when it already fits."""
    if estimate_memory(arch, setup).peak <= budget_bytes:
        return []
    out: list[Recommendation] = []
    effective = setup.batch_size * setup.gradient_accumulation_steps

    def add(description: str, changes: dict[str, Any], candidate: TrainingSetup) -> None:
        estimate = estimate_memory(arch, candidate)
        out.append(Recommendation(description, changes, estimate, estimate.peak <= budget_bytes))

    def smaller_batch(base: TrainingSetup, label: str, extra: dict[str, Any]) -> bool:
        batch = largest_fitting_batch(
            arch,
            replace(base, gradient_accumulation_steps=2),
            budget_bytes,
            upper=max(setup.batch_size - 1, 1),
        )
        if batch < 1:
            return False
        accumulation = max(1, -(-effective // batch))
        batch = -(-effective // accumulation)  # same effective batch, not up to twice it
        changes = {**extra, "batch_size": batch, "gradient_accumulation_steps": accumulation}
        add(
            f"{label}batch size {batch} with gradient accumulation {accumulation} "
            f"(effective batch {batch * accumulation})",
            changes,
            replace(base, batch_size=batch, gradient_accumulation_steps=accumulation),
        )
        return True

    smaller_batch(setup, "", {})
    gc = replace(setup, gradient_checkpointing=True)
    if not setup.gradient_checkpointing and (
        estimate_memory(arch, gc).peak < estimate_memory(arch, setup).peak
    ):
        add(
            "turn on gradient checkpointing (about 20-30% slower)",
            {"gradient_checkpointing": True},
            gc,
        )
        smaller_batch(gc, "gradient checkpointing and ", {"gradient_checkpointing": True})
    if setup.device == "cuda" and setup.precision == "fp32":
        add(
            "train in bf16/fp16 mixed precision",
            {"use_mixed_precision": True},
            replace(setup, precision="bf16"),
        )
    if not setup.lora and lora_targets:
        lora = replace(setup, lora=True, lora_targets=lora_targets)
        add(
            "use LoRA adaptation: the base weights stay frozen",
            {"training_type": "lora_adaptation"},
            lora,
        )
        if estimate_memory(arch, lora).peak > budget_bytes:
            smaller_batch(lora, "LoRA, ", {"training_type": "lora_adaptation"})
    _four_bit(arch, setup, budget_bytes, lora_targets, add, smaller_batch)
    if gpu_count > 1 and setup.strategy != "fsdp":
        # The fewest GPUs that fit: each process more costs communication.
        for count in range(2, gpu_count + 1):
            sharded = replace(setup, num_gpus=count, strategy="fsdp")
            if estimate_memory(arch, sharded).peak <= budget_bytes or count == gpu_count:
                break
        add(
            f"shard the model over {count} GPUs with FSDP (num_processes {count}, "
            "distributed_strategy fsdp)",
            {"num_processes": count, "distributed_strategy": "fsdp"},
            sharded,
        )
    out.sort(key=lambda r: (not r.fits, 0))
    return out


def _four_bit(
    arch: Architecture,
    setup: TrainingSetup,
    budget_bytes: float,
    lora_targets: tuple[str, ...],
    add: Any,
    smaller_batch: Any,
) -> None:
    """QLoRA, when a LoRA run (the one asked for, or the LoRA alternative) still does
    not fit: the frozen base in 4 bits, then with a smaller micro-batch if needed."""
    if setup.quantized_4bit or setup.strategy == "fsdp":
        return
    changes: dict[str, Any]
    if setup.lora:
        base, changes = setup, {"load_in_4bit": True}
    elif lora_targets:
        base = replace(setup, lora=True, lora_targets=lora_targets)
        changes = {"training_type": "lora_adaptation", "load_in_4bit": True}
    else:
        return
    if estimate_memory(arch, base).peak <= budget_bytes:
        return
    qlora = replace(base, quantized_4bit=True)
    if estimate_memory(arch, qlora).peak >= estimate_memory(arch, base).peak:
        return  # nothing to quantize (no linear layer inside the blocks)
    add("use QLoRA: the frozen base held in 4 bits (load_in_4bit)", changes, qlora)
    if estimate_memory(arch, qlora).peak > budget_bytes:
        smaller_batch(qlora, "QLoRA, ", changes)
