"""QLoRA's rules: when a base model may be held in 4 bits.

4-bit weights (bitsandbytes' NF4 or FP4 blocks) cannot take a gradient step: they are
frozen, and only an adapter beside them trains. So `load_in_4bit` belongs to runs
that train a LoRA adapter (the LoRA type, and the preference types with their
adapter on). FSDP and DeepSpeed shard parameters by flattening them, which 4-bit
storage does not survive without a matching storage dtype on every rank; DDP keeps a
whole 4-bit copy per process and works as with any LoRA run.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator

from flextrain.config.issues import RuleContext, ValidationIssue
from flextrain.config.issues import err as _err
from flextrain.config.issues import warn as _warn

# The 4-bit options that mean nothing unless load_in_4bit is on.
QUANT_OPTIONS = ("bnb_4bit_quant_type", "bnb_4bit_use_double_quant")
INSTALL_HINT = "pip install 'flextrain[qlora]' (bitsandbytes)"


def bitsandbytes_installed() -> bool:
    """Whether the package that holds and multiplies 4-bit weights can be imported."""
    return importlib.util.find_spec("bitsandbytes") is not None


def quantization_rule(ctx: RuleContext) -> Iterator[ValidationIssue]:
    c = ctx.config
    if not c.load_in_4bit:
        for name in QUANT_OPTIONS:
            if name in ctx.fields_set:
                yield _warn(name, "has no effect without load_in_4bit.", "set load_in_4bit=true.")
        return
    if not c.uses_lora:
        what = (
            "trains every weight (preference.use_lora is off)"
            if c.training_type.is_preference
            else "updates every weight"
        )
        yield _err(
            "load_in_4bit",
            f"{c.training_type.value} {what}, but 4-bit weights are frozen: they can only "
            "carry a LoRA adapter (QLoRA).",
            "use training_type=lora_adaptation (or a preference type with its adapter), "
            "or turn load_in_4bit off.",
        )
    if not bitsandbytes_installed():
        yield _err(
            "load_in_4bit",
            "needs the bitsandbytes package, which is not installed here.",
            f"{INSTALL_HINT}, or turn load_in_4bit off.",
        )
    if c.distributed and c.distributed_strategy in ("fsdp", "deepspeed"):
        yield _err(
            "distributed_strategy",
            f"{c.distributed_strategy} shards flattened parameters, which 4-bit weights do "
            "not support here.",
            "use distributed_strategy=ddp (each process keeps its own 4-bit copy), or turn "
            "load_in_4bit off.",
        )
