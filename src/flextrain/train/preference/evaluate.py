"""Held-out preference accuracy: how often a model gives the chosen answer a higher
log-probability per token than the rejected one.

Per token, because a summed log-probability favours the shorter answer whatever the
model learnt (each token costs some), and pairs rarely have equal lengths: a random
model would then "prefer" short answers, not chance.

TRL's own `rewards/accuracies` compares the policy's rewards, which are measured
against the reference: before training every reward is 0 and the accuracy reads 0,
and a method without a reference (ORPO, SimPO) has different rewards again. This
measure is the same for every model and method, so "before" and "after" compare.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

Row = dict[str, Any]


def preference_accuracy(
    model: Any, tokenizer: Any, rows: Sequence[Row], max_length: int, batch_size: int = 16
) -> dict[str, float]:
    """{"preference_accuracy", "logp_margin"} of `model` on pairs `rows` (prompt, chosen,
    rejected as text or messages): the share of pairs whose chosen answer has the higher
    mean log-prob per token, and the mean difference of those per-token log-probs."""
    pairs = [
        (
            _encode(tokenizer, r["prompt"], r["chosen"]),
            _encode(tokenizer, r["prompt"], r["rejected"]),
        )
        for r in rows
    ]
    chosen = _logps(model, tokenizer, [p[0] for p in pairs], max_length, batch_size)
    rejected = _logps(model, tokenizer, [p[1] for p in pairs], max_length, batch_size)
    wins = [c > r for c, r in zip(chosen, rejected, strict=True)]
    margins = [c - r for c, r in zip(chosen, rejected, strict=True)]
    n = max(len(wins), 1)
    return {"preference_accuracy": sum(wins) / n, "logp_margin": sum(margins) / n}


def _encode(tokenizer: Any, prompt: Any, answer: Any) -> tuple[list[int], int]:
    """(token ids of prompt + answer, where the answer starts)."""
    if isinstance(prompt, list):
        prompt_text = tokenizer.apply_chat_template(
            prompt, tokenize=False, add_generation_prompt=True
        )
        full_text = tokenizer.apply_chat_template(prompt + answer, tokenize=False)
        answer_text = (
            full_text[len(prompt_text) :] if full_text.startswith(prompt_text) else full_text
        )
        prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
        answer_ids = tokenizer(answer_text, add_special_tokens=False)["input_ids"]
    else:
        prompt_ids = tokenizer(str(prompt))["input_ids"]
        answer_ids = tokenizer(str(answer), add_special_tokens=False)["input_ids"]
        if tokenizer.eos_token_id is not None:
            answer_ids = [*answer_ids, tokenizer.eos_token_id]
    return [*prompt_ids, *answer_ids], len(prompt_ids)


@torch.no_grad()
def _logps(
    model: Any,
    tokenizer: Any,
    encoded: list[tuple[list[int], int]],
    max_length: int,
    batch_size: int,
) -> list[float]:
    """Mean log-probability of each answer's tokens given its prompt."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out: list[float] = []
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    for start in range(0, len(encoded), batch_size):
        chunk = [
            (ids[:max_length], min(begin, max_length))
            for ids, begin in encoded[start : start + batch_size]
        ]
        width = max(len(ids) for ids, _ in chunk)
        input_ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        scored = torch.zeros((len(chunk), width), dtype=torch.bool)
        for i, (ids, begin) in enumerate(chunk):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            mask[i, : len(ids)] = 1
            scored[i, max(begin, 1) : len(ids)] = True
        logits = model(
            input_ids=input_ids.to(device), attention_mask=mask.to(device)
        ).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1)
        targets = input_ids[:, 1:].to(device)
        token_logp = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        token_logp = token_logp * scored[:, 1:].to(device)
        counts = scored[:, 1:].sum(-1).clamp(min=1).to(device)
        out.extend((token_logp.sum(-1) / counts).tolist())
    model.train(was_training)
    return out
