"""QLoRA's 4-bit base: which weights are quantized, and the one config that loads them.

Training and everything after it (merge, export, try, evaluate) must quantize the base
the same way: the adapter learned to correct those exact 4-bit weights. So both build
their BitsAndBytesConfig here.

Only the linear layers inside the model's repeated blocks (a name with a numbered
step, `model.layers.3.mlp.up_proj`) go to 4 bits. Everything outside them stays at
full precision: embeddings, the LM head, a classifier, a pooler. That is where the
weights are (the blocks hold nearly all of them), and it keeps every module a task
creates fresh trainable in full: a new head or pooler must learn, and a 4-bit weight
cannot (peft's modules_to_save cannot copy one either).
"""

from __future__ import annotations

import logging
from typing import Any

from flextrain.estimate.quant import KEEP_OUTSIDE_BLOCKS


def bnb_4bit_config(
    quant_type: str, double_quant: bool, compute_dtype: Any, keep: str = KEEP_OUTSIDE_BLOCKS
) -> Any:
    """transformers' BitsAndBytesConfig for a QLoRA base (bitsandbytes must be
    installed; the rules check that before a job is accepted)."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quant_type,
        bnb_4bit_use_double_quant=double_quant,
        bnb_4bit_compute_dtype=compute_dtype,
        llm_int8_skip_modules=[keep],
    )


def quiet_bitsandbytes_kernel_fetch() -> None:
    """Keep two lines out of every log: importing peft imports bitsandbytes (when
    installed), which on CPUs with AVX512-BF16 tries to fetch a CPU inference kernel
    from the Hugging Face hub and, offline, warns twice that it could not. That kernel
    serves only bitsandbytes' packed inference path, which flextrain turns off for
    training (flextrain.train.model) and never reaches after it (a QLoRA base is
    unpacked to float32 on load), so the failure changes nothing. Errors still show."""
    for name in ("bitsandbytes.backends.cpu.ops", "kernels"):
        logging.getLogger(name).setLevel(logging.ERROR)
