"""The seed's "supported training types by hardware", as a rule.

| Training type              | CPU only | Single GPU | Multi-GPU |
|----------------------------|----------|------------|-----------|
| Fine-tuning (small models) | yes      | yes        | yes       |
| LoRA adaptation            | yes      | yes        | yes       |
| Fine-tuning (large models) | warning  | yes        | yes       |
| Full training              | no       | warning    | yes       |

The table speaks of model size without numbers; the ones here are where the time, not
the memory (the memory rule judges that), stops being reasonable: a step of a model
past a billion parameters takes minutes on CPU cores, and a model trained from scratch
needs billions of tokens, which CPU cores get through only for a toy model. "Full
training" of a tiny model (the tests', the demo's) is a toy, and allowed everywhere.
"""

from __future__ import annotations

from collections.abc import Iterator

from flextrain.config.enums import TrainingType
from flextrain.config.issues import RuleContext, ValidationIssue
from flextrain.config.issues import err as _err
from flextrain.config.issues import warn as _warn

# Past this, a model is "large": fine-tuning all its weights on CPU is a warning, and
# training it from scratch on one GPU is too.
LARGE_MODEL_PARAMETERS = 1_000_000_000
# Past this, training from scratch on CPU only is refused.
CPU_SCRATCH_PARAMETERS = 50_000_000
# The types that update every weight of a pretrained model ("fine-tuning" in the table).
_FULL_WEIGHT_TUNING = frozenset(
    {
        TrainingType.FINE_TUNING,
        TrainingType.CONTINUED_PRETRAINING,
        TrainingType.TASK_SPECIFIC,
    }
)


def _millions(n: int) -> str:
    return f"{n / 1e9:.1f}B" if n >= 1e9 else f"{n / 1e6:.0f}M"


def hardware_rule(ctx: RuleContext) -> Iterator[ValidationIssue]:
    """Each cell of the table above that is not a plain yes, for this model and machine."""
    c, hw, model = ctx.config, ctx.hardware, ctx.model
    if hw is None or model is None or model.num_parameters is None:
        return
    params = model.num_parameters
    size = f"a {_millions(params)}-parameter model"
    gpus = hw.gpu_count
    weights_tuned = c.training_type in _FULL_WEIGHT_TUNING or (
        c.training_type.is_preference and not c.uses_lora
    )
    if weights_tuned and gpus == 0 and params > LARGE_MODEL_PARAMETERS:
        yield _warn(
            "training_type",
            f"{c.training_type.value} updates every weight of {size} on CPU only: each step "
            "takes minutes.",
            "use lora_adaptation (an adapter of a few million weights), or a GPU machine.",
        )
    if c.training_type != TrainingType.FULL_TRAINING:
        return
    if gpus == 0 and params > CPU_SCRATCH_PARAMETERS:
        message = (
            f"full_training trains {size} from random weights on CPU only; it needs "
            "billions of tokens, which CPU cores get through only for a toy model "
            f"(up to {_millions(CPU_SCRATCH_PARAMETERS)} parameters)."
        )
        fix = (
            "fine-tune a pretrained model instead (fine_tuning or lora_adaptation), train "
            "a smaller config, or run on a GPU machine"
        )
        if c.ignore_memory_estimate:
            yield _warn("training_type", message + " Started anyway.", fix + ".")
        else:
            yield _err(
                "training_type",
                message,
                fix + "; ignore_memory_estimate: true starts it anyway.",
            )
    elif gpus >= 1 and c.world_size < 2 and params > LARGE_MODEL_PARAMETERS:
        yield _warn(
            "training_type",
            f"full_training trains {size} from random weights on one GPU: expect weeks.",
            "use several GPUs (num_processes, with fsdp for a model this size).",
        )
