"""Prove a GGUF file answers as the model it came from: tokens, template, logits.

An export that loads but answers differently (a lost chat template, wrong special
tokens, a bad weight layout) is the failure users of other tools report most, so
every GGUF export is checked before it is handed over. Here the file is read back
by transformers' own GGUF loader, a reader written independently of flextrain's
writer, and compared with the trained model on fixed prompts rendered with the
chat template:

- the tokenizer rebuilt from the file gives the same token ids, and the same
  template;
- next-token logits at every position: the largest difference (relative to the
  spread of the reference logits) and how often the top token agrees;
- the conversion alone: the reference model with the file's rounding applied to
  its weights (f16, q8_0) must give the file's logits to float precision. This
  tells a layout bug (large) from quantisation noise (small, and expected);
- greedy text: a few tokens from the first prompt.

Thresholds per type are in THRESHOLDS; a check below one fails the export.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from flextrain.models.gguf_file import GGUFQuant, encode

PARITY_PROMPTS = (
    "What is the capital of France?",
    "Write one sentence about the sea.",
    "List three colours, separated by commas.",
    "Explain in a few words why the sky is blue.",
    "Translate 'good morning' into Spanish.",
)
GREEDY_TOKENS = 8
# top1: least share of positions whose top token agrees; relative_diff: largest logit
# difference over the reference logits' standard deviation; conversion: the same, against
# the reference with the file's rounding applied (float noise only).
THRESHOLDS: dict[str, dict[str, float]] = {
    "f16": {"top1": 0.98, "relative_diff": 0.05, "conversion": 1e-3},
    "q8_0": {"top1": 0.95, "conversion": 1e-3},
    "q4_k_m": {"top1": 0.80},
    # A safetensors folder keeps the trained weights: only float noise (a merge) is allowed.
    "safetensors": {"top1": 0.99, "relative_diff": 0.01},
}


class ParityReport(BaseModel):
    """How closely an exported file answers like the trained model."""

    runtime: Literal["transformers", "llama.cpp"] = Field(description="What ran the file.")
    file: str
    quant: str
    prompts: int
    positions: int = Field(description="Token positions compared (all prompts).")
    logit_std: float = Field(description="Spread of the trained model's logits.")
    max_abs_diff: float = Field(description="Largest next-token logit difference.")
    relative_diff: float = Field(description="max_abs_diff / logit_std.")
    top1_agreement: float = Field(description="Share of positions with the same top token.")
    conversion_diff: float | None = Field(
        None,
        description="Largest relative difference against the trained model with the file's "
        "rounding applied: the conversion's own error (f16, q8_0).",
    )
    tokenizer_match: bool = Field(description="The file's tokenizer gives the same ids.")
    chat_template_match: bool
    greedy_match: bool | None = Field(None, description="Same greedy continuation.")
    thresholds: dict[str, float]
    passed: bool
    problems: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list, description="How the check was made.")


def prompt_texts(tokenizer: Any) -> list[str]:
    """The fixed prompts as the model sees them: through its chat template when it has
    one (as a user turn, ready for the answer), else as they are."""
    if not getattr(tokenizer, "chat_template", None):
        return list(PARITY_PROMPTS)
    return [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False
        )
        for p in PARITY_PROMPTS
    ]


def _ids(tokenizer: Any, text: str, templated: bool) -> list[int]:
    # A rendered template carries its own special tokens; plain text gets the usual ones.
    ids: list[int] = tokenizer(text, add_special_tokens=not templated)["input_ids"]
    return ids


def load_reference(folder: Path) -> tuple[Any, Any]:
    """The causal LM in `folder` (float32, eval) and its tokenizer: what a file written
    from that folder is compared with."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from flextrain.models.trained import quiet_transformers

    with quiet_transformers():
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(str(folder))


def check_gguf(path: Path, reference: Path | tuple[Any, Any], quant: GGUFQuant) -> ParityReport:
    """Read `path` with transformers' GGUF loader and compare it with the trained model:
    the folder the file was written from, or a (model, tokenizer) pair already loaded
    (plain weights, no adapter: the conversion check rounds its parameters in place)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from flextrain.models.trained import quiet_transformers

    model, tokenizer = load_reference(reference) if isinstance(reference, Path) else reference
    texts, ids, templated = prompt_ids(tokenizer)
    notes: list[str] = []
    # The file alone in a folder: a tokenizer.json beside it would be read instead.
    with tempfile.TemporaryDirectory(prefix="flextrain-parity-") as alone:
        (Path(alone) / path.name).symlink_to(path.resolve())
        with quiet_transformers():
            file_tokenizer = AutoTokenizer.from_pretrained(alone, gguf_file=path.name)
            config = None
            gap = reader_gap(model.config)
            if gap is not None:
                config = model.config
                notes.append(
                    f"transformers' GGUF reader has {gap}; the weights were read with the "
                    "trained model's config (llama.cpp reads them from the file)"
                )
            loaded = AutoModelForCausalLM.from_pretrained(
                alone, gguf_file=path.name, dtype=torch.float32, config=config
            ).eval()
    tokenizer_match = all(
        _ids(file_tokenizer, t, templated) == i for t, i in zip(texts, ids, strict=True)
    )
    chat_template_match = (file_tokenizer.chat_template or None) == (
        tokenizer.chat_template or None
    )
    measured = compare(model, loaded, ids, greedy=True)
    conversion = None
    if quant in ("f16", "q8_0"):
        round_like_file(model, quant)
        conversion = compare(model, loaded, ids).relative_diff
    limits = THRESHOLDS[quant]
    report = ParityReport(
        runtime="transformers",
        file=str(path),
        quant=quant,
        **measured.model_dump(),
        conversion_diff=conversion,
        tokenizer_match=tokenizer_match,
        chat_template_match=chat_template_match,
        thresholds=limits,
        passed=True,
        notes=notes,
    )
    return judged(report)


class Comparison(BaseModel):
    """Logits of two models on the same token ids."""

    prompts: int
    positions: int
    logit_std: float
    max_abs_diff: float
    relative_diff: float
    top1_agreement: float
    greedy_match: bool | None = None


def prompt_ids(tokenizer: Any) -> tuple[list[str], list[list[int]], bool]:
    """The fixed prompts' texts (through the chat template when there is one), their ids,
    and whether the template was used."""
    templated = bool(getattr(tokenizer, "chat_template", None))
    texts = prompt_texts(tokenizer)
    return texts, [_ids(tokenizer, t, templated) for t in texts], templated


def compare(
    reference: Any, candidate: Any, ids: list[list[int]], *, greedy: bool = False
) -> Comparison:
    """Largest logit difference (absolute, and over the reference's spread) and top-1
    agreement at every position; for a classifier, one position per text. `greedy`:
    whether a few greedily generated tokens agree too."""
    want = logits_of(reference, ids)
    got = logits_of(candidate, ids)
    same_text = greedy_ids(reference, ids[0]) == greedy_ids(candidate, ids[0]) if greedy else None
    return measure(want, got, greedy_match=same_text)


def logits_of(model: Any, ids: list[list[int]]) -> list[Any]:
    """The model's scores for each prompt, one row per position (float32 tensors)."""
    import torch

    with torch.no_grad():
        return [_rows(model(torch.tensor([i])).logits) for i in ids]


def measure(want: list[Any], got: list[Any], *, greedy_match: bool | None = None) -> Comparison:
    """Compare two lists of per-prompt score rows (reference first)."""
    import torch

    std = float(torch.cat(want).std()) or 1.0
    diff = max(float((g - w).abs().max()) for g, w in zip(got, want, strict=True))
    agree = sum(int((g.argmax(-1) == w.argmax(-1)).sum()) for g, w in zip(got, want, strict=True))
    positions = sum(len(w) for w in want)
    return Comparison(
        prompts=len(want),
        positions=positions,
        logit_std=std,
        max_abs_diff=diff,
        relative_diff=diff / std,
        top1_agreement=agree / positions,
        greedy_match=greedy_match,
    )


def _rows(logits: Any) -> Any:
    """One row of scores per position (a classifier has one position)."""
    return logits[0].reshape(-1, logits.shape[-1]).float()


def reader_gap(config: Any) -> str | None:
    """What transformers 5's GGUF reader cannot read back for this model (llama.cpp
    reads it from the file), or None: the weights are then read into the trained
    model's config."""
    if config.model_type == "qwen3":
        head_dim = getattr(config, "head_dim", None)
        if head_dim is not None and head_dim != config.hidden_size // config.num_attention_heads:
            return "no head size for qwen3"  # its config map reads no attention.key_length
    if config.model_type == "gemma2":
        return "no query scaling or soft caps for gemma2"
    return None


def not_compared(
    runtime: Literal["transformers", "llama.cpp"],
    file: str,
    quant: str,
    problems: list[str],
) -> ParityReport:
    """The failed report of an export that could not be compared at all (files missing,
    or a runtime that would not load it)."""
    return ParityReport(
        runtime=runtime,
        file=file,
        quant=quant,
        prompts=0,
        positions=0,
        logit_std=0.0,
        max_abs_diff=0.0,
        relative_diff=0.0,
        top1_agreement=0.0,
        tokenizer_match=False,
        chat_template_match=False,
        thresholds=THRESHOLDS[quant],
        passed=False,
        problems=problems,
    )


def judged(report: ParityReport) -> ParityReport:
    """The report with its verdict: passed, or the problems against its own thresholds."""
    problems = problems_of(report, report.thresholds)
    return report.model_copy(update={"passed": not problems, "problems": problems})


def problems_of(report: ParityReport, limits: dict[str, float]) -> list[str]:
    problems = []
    if not report.tokenizer_match:
        problems.append("the file's tokenizer gives other token ids than the trained model's")
    if not report.chat_template_match:
        problems.append("the file's chat template differs from the trained model's")
    if report.top1_agreement < limits["top1"]:
        problems.append(f"top-1 agreement {report.top1_agreement:.3f} is below {limits['top1']}")
    if "relative_diff" in limits and report.relative_diff > limits["relative_diff"]:
        problems.append(
            f"max logit difference {report.max_abs_diff:.4g} is {report.relative_diff:.3g} of "
            f"the logits' spread, over {limits['relative_diff']}"
        )
    conversion = report.conversion_diff
    if conversion is not None and conversion > limits.get("conversion", float("inf")):
        problems.append(
            f"the conversion itself is off by {conversion:.3g} of the logits' spread (over "
            f"{limits['conversion']}): a weight-layout bug, not rounding"
        )
    if report.quant in ("f16", "safetensors") and report.greedy_match is False:
        problems.append(f"greedy text differs at {report.quant}")
    return problems


def greedy_ids(model: Any, ids: list[int]) -> list[int]:
    import torch

    out = model.generate(
        torch.tensor([ids]), max_new_tokens=GREEDY_TOKENS, do_sample=False, pad_token_id=0
    )
    return [int(t) for t in out[0, len(ids) :]]


def round_like_file(model: Any, quant: str) -> None:
    """Give `model` the weights the file holds: each tensor through the same encoding,
    decoded back (rows of a block type quantise along the input dimension, which the
    rotary row reordering does not mix, so this is done in transformers' layout)."""
    import gguf
    import numpy as np
    import torch

    with torch.no_grad():
        for param in model.parameters():
            array = param.detach().float().numpy()
            data, kind = encode(gguf, array, quant)
            if kind == gguf.GGMLQuantizationType.Q8_0:
                back = gguf.quants.dequantize(data, kind)
            else:
                back = data.astype(np.float32)
            param.copy_(torch.from_numpy(np.ascontiguousarray(back).reshape(array.shape)))
