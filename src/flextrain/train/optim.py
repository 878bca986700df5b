"""Optimizers an expert config can ask for: freezing, parameter groups, any optimizer by name.

The functions take plain arguments; mapping an expert config onto them happens elsewhere.
A parameter is named by its full name in `model.named_parameters()` (for a peft model,
e.g. `base_model.model.model.layers.0.self_attn.q_proj.lora_B.default.weight`) and
patterns are shell-style (`fnmatch`, case-sensitive): `*lora_B*`, `*.layers.0.*`.

Layer-wise lr decay follows the BEiT/ELECTRA convention: with L blocks numbered
0..L-1 and decay d, block i gets `lr * d ** (L - i)`, the embeddings `lr * d ** (L + 1)`
and everything after the last block (final norm, head) `lr`. So the top block trains at
`lr * d`, and each step down multiplies by d once more.
"""

from __future__ import annotations

import fnmatch
import inspect
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = [
    "ParamGroupRule",
    "block_index",
    "build_optimizer",
    "describe_groups",
    "freeze",
    "param_groups",
    "valid_optimizer_names",
]

# Blocks of the usual stacks: Llama/Mistral/Qwen `layers.N.`, BERT `layer.N.`,
# GPT-2 `h.N.`, ViT-style `blocks.N.`.
_BLOCK = re.compile(r"(?:^|\.)(?:layers|layer|h|blocks)\.(\d+)\.")
# Embedding tables: `embed_tokens`, `embeddings.*`, `wte`/`wpe` (GPT-2), `shared` (T5).
_EMBEDDING = re.compile(r"embed|(?:^|\.)(?:wte|wpe|shared)(?:\.|$)")
# The Trainer's own no-decay name patterns (Trainer.get_decay_parameter_names).
_NO_DECAY_NAMES = re.compile(r"bias|layernorm|rmsnorm|(?:^|\.)norm(?:$|\.)|_norm(?:$|\.)")
# Not usable with the Trainer: LBFGS needs a closure in step(), SparseAdam sparse grads.
_UNUSABLE = {"LBFGS", "SparseAdam"}
_EXTRA_OPTIMIZERS = ("Adafactor", "AdamW8bit")
_HINT_NAMES = 6


@dataclass(frozen=True)
class ParamGroupRule:
    """Learning rate and weight decay for the parameters whose full name matches `pattern`.

    `lr` sets the learning rate outright; `lr_scale` multiplies the lr the parameter would
    otherwise get (the base lr, after layer-wise decay). A rule's `weight_decay` applies
    even to norms and biases: an explicit rule wins over the no-decay default.
    """

    pattern: str
    lr: float | None = None
    lr_scale: float | None = None
    weight_decay: float | None = None

    def __post_init__(self) -> None:
        if not self.pattern:
            raise ValueError("ParamGroupRule: pattern is empty")
        if self.lr is not None and self.lr_scale is not None:
            raise ValueError(f"ParamGroupRule {self.pattern!r}: give lr or lr_scale, not both")
        if self.lr is not None and self.lr < 0:
            raise ValueError(f"ParamGroupRule {self.pattern!r}: lr must be >= 0, got {self.lr}")
        if self.lr_scale is not None and self.lr_scale < 0:
            raise ValueError(
                f"ParamGroupRule {self.pattern!r}: lr_scale must be >= 0, got {self.lr_scale}"
            )
        if self.weight_decay is not None and self.weight_decay < 0:
            raise ValueError(
                f"ParamGroupRule {self.pattern!r}: weight_decay must be >= 0, "
                f"got {self.weight_decay}"
            )

    def matches(self, name: str) -> bool:
        return fnmatch.fnmatchcase(name, self.pattern)


def _name_hint(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_HINT_NAMES])
    more = f", ... ({len(names)} in all)" if len(names) > _HINT_NAMES else ""
    return f"parameter names look like: {shown}{more}"


def freeze(model: nn.Module, patterns: Sequence[str]) -> list[str]:
    """Set requires_grad=False on every parameter whose full name matches a pattern.

    Returns the names that match (in model order). Raises one ValueError naming every
    pattern that matches nothing, with a few parameter names as a hint.
    """
    named = list(model.named_parameters())
    unmatched = [p for p in patterns if not any(fnmatch.fnmatchcase(n, p) for n, _ in named)]
    if unmatched:
        listed = ", ".join(repr(p) for p in unmatched)
        raise ValueError(
            f"freeze: pattern(s) {listed} match no parameter; {_name_hint([n for n, _ in named])}"
        )
    frozen = []
    for name, param in named:
        if any(fnmatch.fnmatchcase(name, p) for p in patterns):
            param.requires_grad_(False)
            frozen.append(name)
    return frozen


def block_index(name: str) -> int | None:
    """The block number in a parameter name (`model.layers.3.mlp...` -> 3), or None."""
    found = _BLOCK.search(name)
    return int(found.group(1)) if found else None


def _layer_scales(names: Iterable[str], decay: float) -> dict[str, float]:
    """lr multiplier per parameter name under layer-wise decay (see the module docstring)."""
    names = list(names)
    indices = [block_index(n) for n in names]
    present = [i for i in indices if i is not None]
    if not present:
        raise ValueError(
            "layerwise_lr_decay: found no numbered blocks (layers.N., layer.N., h.N., "
            f"blocks.N.) in the parameter names; {_name_hint(names)}"
        )
    blocks = max(present) + 1
    scales = {}
    for name, index in zip(names, indices, strict=True):
        if index is not None:
            scales[name] = decay ** (blocks - index)
        elif _EMBEDDING.search(name):
            scales[name] = decay ** (blocks + 1)
        else:
            scales[name] = 1.0
    return scales


def _no_decay(name: str, param: torch.Tensor) -> bool:
    return param.ndim <= 1 or _NO_DECAY_NAMES.search(name) is not None


def param_groups(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float,
    rules: Sequence[ParamGroupRule] = (),
    no_decay_on_norms_and_biases: bool = True,
    layerwise_lr_decay: float | None = None,
) -> list[dict[str, Any]]:
    """Optimizer parameter groups for the trainable parameters of `model`.

    Each parameter's lr and weight decay come from the first rule that matches its name,
    else from the defaults: `lr` (times the layer-wise factor when `layerwise_lr_decay`
    is set) and `weight_decay` (0 for 1-D parameters and the Trainer's bias/norm names
    when `no_decay_on_norms_and_biases`). Parameters with the same (lr, weight_decay)
    share one group; each group also carries `names`, the full parameter names.
    A rule that matches no trainable parameter is an error (most likely a typo).
    """
    if layerwise_lr_decay is not None and not 0 < layerwise_lr_decay <= 1:
        raise ValueError(f"layerwise_lr_decay must be in (0, 1], got {layerwise_lr_decay}")
    all_names = [n for n, _ in model.named_parameters()]
    # Blocks are counted over all parameters, so freezing the lower layers keeps L.
    scales = _layer_scales(all_names, layerwise_lr_decay) if layerwise_lr_decay else {}
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not trainable:
        raise ValueError("param_groups: the model has no trainable parameters")
    unused = [r.pattern for r in rules if not any(r.matches(n) for n, _ in trainable)]
    if unused:
        listed = ", ".join(repr(p) for p in unused)
        raise ValueError(
            f"param_groups: rule pattern(s) {listed} match no trainable parameter; "
            f"{_name_hint([n for n, _ in trainable])}"
        )

    groups: dict[tuple[float, float], dict[str, Any]] = {}
    for name, param in trainable:
        param_lr = lr * scales.get(name, 1.0)
        decay = 0.0 if no_decay_on_norms_and_biases and _no_decay(name, param) else weight_decay
        rule = next((r for r in rules if r.matches(name)), None)
        if rule is not None:
            if rule.lr is not None:
                param_lr = rule.lr
            elif rule.lr_scale is not None:
                param_lr *= rule.lr_scale
            if rule.weight_decay is not None:
                decay = rule.weight_decay
        group = groups.setdefault(
            (param_lr, decay), {"params": [], "lr": param_lr, "weight_decay": decay, "names": []}
        )
        group["params"].append(param)
        group["names"].append(name)
    return list(groups.values())


def valid_optimizer_names() -> list[str]:
    """Every name `build_optimizer` accepts."""
    names = [
        name
        for name in dir(torch.optim)
        if name != "Optimizer"
        and name not in _UNUSABLE
        and isinstance(getattr(torch.optim, name), type)
        and issubclass(getattr(torch.optim, name), torch.optim.Optimizer)
    ]
    return sorted(names) + list(_EXTRA_OPTIMIZERS)


def _optimizer_class(name: str) -> type[torch.optim.Optimizer]:
    if name == "Adafactor":
        from transformers.optimization import Adafactor

        return Adafactor
    if name == "AdamW8bit":
        try:
            from bitsandbytes.optim import AdamW8bit  # type: ignore[import-not-found,unused-ignore]
        except ImportError as exc:
            raise ValueError(
                f"optimizer 'AdamW8bit' needs bitsandbytes, which is not importable here "
                f"({exc}); install it with `pip install bitsandbytes` (CUDA GPUs)"
            ) from exc
        return AdamW8bit
    found = getattr(torch.optim, name, None) if not name.startswith("_") else None
    if (
        name in _UNUSABLE
        or name == "Optimizer"
        or not isinstance(found, type)
        or not issubclass(found, torch.optim.Optimizer)
    ):
        why = " (it cannot be driven by the Trainer)" if name in _UNUSABLE else ""
        raise ValueError(
            f"unknown optimizer {name!r}{why}; valid names: {', '.join(valid_optimizer_names())}"
        )
    return found


def _unknown_keywords(cls: type, kwargs: dict[str, Any]) -> list[str]:
    """Keywords the constructor does not take (none known when it takes **kwargs)."""
    try:
        parameters = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return []
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return []
    return [k for k in kwargs if k not in parameters]


def build_optimizer(
    model: nn.Module,
    *,
    name: str,
    lr: float,
    weight_decay: float,
    kwargs: dict[str, Any] | None = None,
    rules: Sequence[ParamGroupRule] = (),
    no_decay_on_norms_and_biases: bool = True,
    layerwise_lr_decay: float | None = None,
) -> torch.optim.Optimizer:
    """An optimizer over `param_groups(model, ...)`, for `Trainer(optimizers=(opt, None))`.

    `name` is a `torch.optim` class name (AdamW, SGD, RMSprop, ...), `Adafactor`
    (transformers; given `relative_step=False, scale_parameter=False` unless `kwargs`
    says otherwise, so that it follows `lr` and the Trainer's schedule) or `AdamW8bit`
    (bitsandbytes). `kwargs` go to the constructor (e.g. `momentum`, `nesterov`,
    `betas`); lr and weight decay are set per group and cannot be given there.
    """
    cls = _optimizer_class(name)
    options = dict(kwargs or {})
    clashes = [k for k in ("params", "lr", "weight_decay") if k in options]
    if clashes:
        raise ValueError(
            f"optimizer {name}: {', '.join(clashes)} cannot be set in kwargs; "
            "lr and weight_decay are arguments of their own"
        )
    constructor_lr: float | None = lr
    if name == "Adafactor":
        options.setdefault("relative_step", False)
        options.setdefault("scale_parameter", False)
        if options["relative_step"]:
            # Adafactor then computes its own step size and refuses a manual lr.
            constructor_lr = None
    unknown = _unknown_keywords(cls, options)
    if unknown:
        raise ValueError(
            f"optimizer {name} takes no keyword argument(s) {', '.join(map(repr, unknown))}"
        )
    groups = param_groups(
        model,
        lr=lr,
        weight_decay=weight_decay,
        rules=rules,
        no_decay_on_norms_and_biases=no_decay_on_norms_and_biases,
        layerwise_lr_decay=layerwise_lr_decay,
    )
    try:
        return cls(groups, lr=constructor_lr, weight_decay=weight_decay, **options)  # type: ignore[call-arg]
    except TypeError as exc:
        raise ValueError(f"optimizer {name}: bad keyword arguments {options}: {exc}") from exc
    except ValueError as exc:
        raise ValueError(f"optimizer {name}: {exc}") from exc


def describe_groups(optimizer: torch.optim.Optimizer, first: int = 3) -> list[dict[str, Any]]:
    """One plain row per parameter group, for logs and the job's metrics."""
    rows = []
    for group in optimizer.param_groups:
        names = list(group.get("names", []))
        rows.append(
            {
                "lr": float(group["lr"]) if group.get("lr") is not None else None,
                "weight_decay": float(group.get("weight_decay", 0.0)),
                "tensors": len(group["params"]),
                "parameters": sum(p.numel() for p in group["params"]),
                "names": names[:first],
            }
        )
    return rows
