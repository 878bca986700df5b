"""A tokenised sample of a dataset's lengths: what the time estimate and the batching
choice of the check before training read.

The check has no tokenised data yet (the worker prepares it), so it tokenises up to
SAMPLE_ROWS rows with the model's tokenizer: each row's text, and separately the part
the loss is on (an instruction's output, a completion, the assistant's turns), since
which share of positions is predicted decides whether logits are computed only there.
Without a tokenizer, about 1.3 tokens per English word.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flextrain.data.registry import DatasetInfo, read_rows
from flextrain.models.heavy import load_transformers

SAMPLE_ROWS = 1000


@dataclass(frozen=True)
class LengthSample:
    lengths: list[int]  # tokens per row, untruncated
    predicted: list[int] | None  # tokens the loss is on per row; None: all of them


def sample_lengths(data: DatasetInfo, model_path: Path | None) -> LengthSample:
    rows = read_rows(data.path, data.format)[:SAMPLE_ROWS]
    texts = [" ".join(str(v) for v in r.values() if isinstance(v, str)) for r in rows]
    answers = [_answer(r, data.shape) for r in rows]
    has_answers = all(a is not None for a in answers) and bool(answers)
    tokenize = _tokenizer(model_path)
    lengths = tokenize(texts)
    predicted = tokenize([a or "" for a in answers]) if has_answers else None
    return LengthSample(lengths, predicted)


def _answer(row: dict[str, Any], shape: str | None) -> str | None:
    """The text the loss is on, for shapes whose prompt is masked; else None."""
    if shape == "instruction":
        return str(row.get("output") or "")
    if shape == "completion":
        return str(row.get("completion") or "")
    if shape == "chat":
        turns = row.get("messages") or []
        return "\n".join(str(m.get("content") or "") for m in turns if m.get("role") == "assistant")
    return None


def _tokenizer(model_path: Path | None) -> Any:
    if model_path is not None and (model_path / "tokenizer_config.json").exists():
        try:
            load_transformers()
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(model_path)
            return lambda texts: [len(ids) for ids in tokenizer(texts)["input_ids"]]
        except Exception:  # an unreadable tokenizer: fall back to the word count
            pass
    return lambda texts: [int(len(t.split()) * 1.3) + 2 for t in texts]
