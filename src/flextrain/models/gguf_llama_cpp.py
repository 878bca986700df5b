"""The parity check run in llama.cpp itself, when the `flextrain[gguf]` extra is installed.

transformers' GGUF loader (flextrain.models.gguf_parity) proves the file holds the
right weights and tokenizer; llama.cpp proves the runtime people actually use reads
them so: its tokenizer on the rendered prompts, its logits on the trained model's
token ids, and its greedy continuation. Its own kernels round differently from
PyTorch (f16 and 8-bit activations in its matrix products), so the conversion check
allows a little more here than in transformers (THRESHOLDS_LLAMA_CPP); a layout bug
is still tens of times above it.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from flextrain.models.gguf_file import GGUFQuant
from flextrain.models.gguf_parity import (
    GREEDY_TOKENS,
    THRESHOLDS,
    ParityReport,
    greedy_ids,
    judged,
    logits_of,
    measure,
    not_compared,
    prompt_ids,
    round_like_file,
)

# Conversion error allowed in llama.cpp, over the logits' spread: its kernels' rounding.
_LLAMA_CPP_CONVERSION = {"f16": 0.05, "q8_0": 0.15}
GGML_F32 = 0  # ggml_type of float32, for llama.cpp's KV cache


def llama_cpp_available() -> bool:
    """Whether llama-cpp-python (the `gguf` extra) is installed."""
    return importlib.util.find_spec("llama_cpp") is not None


def check_in_llama_cpp(path: Path, reference: tuple[Any, Any], quant: GGUFQuant) -> ParityReport:
    """Run `path` in llama.cpp and compare it with the trained (model, tokenizer): plain
    weights, no adapter (the conversion check rounds its parameters in place)."""
    import numpy as np
    import torch
    from llama_cpp import Llama

    model, tokenizer = reference
    texts, ids, templated = prompt_ids(tokenizer)
    context = max(len(i) for i in ids) + GREEDY_TOKENS + 8
    try:
        llm = Llama(
            model_path=str(path),
            n_ctx=context,
            logits_all=True,
            verbose=False,
            n_threads=max(1, min(4, os.cpu_count() or 1)),
            seed=0,
            # A float32 KV cache: llama.cpp's default f16 cache rounds every key and
            # value, runtime noise (0.01-0.02 of the logits' spread on Gemma 2) that
            # would hide what the check is for, the file's own conversion error.
            type_k=GGML_F32,
            type_v=GGML_F32,
        )
    except ValueError as exc:  # llama.cpp's reason goes to its log, not the exception
        problem = f"llama.cpp could not load the file ({exc}); run it with llama-cli to see why"
        return not_compared("llama.cpp", str(path), quant, [problem])
    try:
        # A rendered template carries its special tokens; plain text gets BOS as the
        # tokenizer adds it (llama.cpp reads whether to from the file).
        file_ids = [llm.tokenize(t.encode(), add_bos=not templated, special=True) for t in texts]
        template = llm.metadata.get("tokenizer.chat_template") or None
        file_model = llm.metadata.get("tokenizer.ggml.model")
        got = []
        for i in ids:  # the trained model's ids: logits compared on the same input
            llm.reset()
            llm.eval(i)
            got.append(torch.from_numpy(np.array(llm.scores[: len(i)], dtype=np.float32)))
        llm.reset()
        llm.eval(ids[0])
        continued: list[int] = []
        ends = {llm.token_eos(), tokenizer.eos_token_id}
        for _ in range(GREEDY_TOKENS):
            token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            continued.append(token)
            if token in ends:  # as generate() stops at the end of the sequence
                break
            llm.eval([token])
    finally:
        llm.close()
    want = logits_of(model, ids)
    measured = measure(want, got, greedy_match=greedy_ids(model, ids[0]) == continued)
    conversion = None
    limits = dict(THRESHOLDS[quant])
    if quant in _LLAMA_CPP_CONVERSION:
        round_like_file(model, quant)
        conversion = measure(logits_of(model, ids), got).relative_diff
        limits["conversion"] = _LLAMA_CPP_CONVERSION[quant]
    report = ParityReport(
        runtime="llama.cpp",
        file=str(path),
        quant=quant,
        **measured.model_dump(),
        conversion_diff=conversion,
        tokenizer_match=file_ids == ids,
        chat_template_match=template == (tokenizer.chat_template or None),
        thresholds=limits,
        passed=True,
        notes=_tokenizer_notes(tokenizer, sentencepiece=file_model == "llama"),
    )
    return judged(report)


def _tokenizer_notes(tokenizer: Any, *, sentencepiece: bool) -> list[str]:
    """What the compared prompts cannot show: how llama.cpp cuts text that starts with
    a space under a SentencePiece vocabulary (tests/export/test_llama_cpp.py)."""
    pre = getattr(getattr(tokenizer, "backend_tokenizer", None), "pre_tokenizer", None)
    if not sentencepiece or type(pre).__name__ != "Metaspace":
        return []
    return [
        "llama.cpp puts a space before every text, as SentencePiece does; this tokenizer "
        "(transformers' Metaspace) does not when the text starts with a space, so such "
        "text gets one more space piece in llama.cpp (prompts rendered by a chat template "
        "do not start with a space)"
    ]
