"""What a 4-bit (QLoRA) base holds, in bytes: which weights are quantized and what
each costs. Pure: the estimator and the model loader share these facts.

bitsandbytes stores a 4-bit weight as two codes a byte, in blocks of 64 with one
absmax scale each. A scale is a float32 (4 bytes per 64 weights, 0.5 bits a weight);
with double quantization the scales are themselves stored in 8 bits, in blocks of 256
with a float32 scale of their own: 1/64 + 4/(64*256) bytes a weight, about 0.127 bits
(QLoRA paper, Dettmers et al. 2023, section 3).

Only the linear layers inside the model's repeated blocks (a name with a numbered
step, `model.layers.3.mlp.up_proj`) go to 4 bits; see flextrain.models.quantize.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

BLOCK_SIZE = 64
SECOND_BLOCK_SIZE = 256
CODE_BYTES = 0.5
# transformers' skip patterns match a module name from its start (or as a suffix):
# this one matches every name with no numbered step, i.e. outside the blocks.
KEEP_OUTSIDE_BLOCKS = r"(?!(?:.*\.)?\d+\.).+"
_IN_BLOCK = re.compile(r"(?:.*\.)?\d+\..+")


def quantized_in_4bit(module_name: str) -> bool:
    """Whether a linear layer of this name is held in 4 bits by a QLoRA run."""
    return bool(_IN_BLOCK.fullmatch(module_name))


def quantized_weights(linear_layers: Iterable[tuple[str, int, int]]) -> list[int]:
    """The size (d_in x d_out) of every linear layer a QLoRA run holds in 4 bits."""
    return [d_in * d_out for name, d_in, d_out in linear_layers if quantized_in_4bit(name)]


def bytes_per_4bit_weight(double_quant: bool) -> float:
    """Stored bytes of one quantized weight: its code and its share of the scales."""
    if double_quant:
        return CODE_BYTES + 1 / BLOCK_SIZE + 4 / (BLOCK_SIZE * SECOND_BLOCK_SIZE)
    return CODE_BYTES + 4 / BLOCK_SIZE
