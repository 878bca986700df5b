"""Load, render, split and tokenize a dataset for one objective."""

from __future__ import annotations

from typing import Any

from datasets import ClassLabel, Dataset, DatasetDict, load_dataset

from flextrain.jobs.spec import RunSpec

_LOADERS = {"jsonl": "json", "json": "json", "csv": "csv", "text": "text"}


def render_text(row: dict[str, Any], spec: RunSpec) -> str:
    """One example's text: its text column, or a prompt/response pair joined."""
    data = spec.data
    if data.shape == "instruction":
        parts = [row.get("instruction"), row.get("input"), row.get("output")]
        return "\n".join(str(p) for p in parts if p)
    if data.shape == "completion":
        return f"{row.get('prompt') or ''}{row.get('completion') or ''}"
    if data.shape == "chat":  # chat templates come with the data preparation work
        return "\n".join(f"{m['role']}: {m['content']}" for m in row.get("messages") or [])
    if data.text_column is not None:
        return str(row[data.text_column] or "")
    assert data.prompt_columns is not None
    prompt, response = data.prompt_columns
    return f"{row[prompt]}\n{row[response]}"


def load_splits(spec: RunSpec, tokenizer: Any) -> DatasetDict:
    """Train (and, when eval_split > 0, eval) splits, tokenized to max_length."""
    raw = load_dataset(_LOADERS[spec.data.format], data_files=spec.data.path, split="train")
    config = spec.config
    classify = spec.objective == "sequence_classification"

    def to_example(row: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"text": render_text(row, spec)}
        if classify:
            assert spec.data.label_column is not None
            out["labels"] = spec.data.labels.index(str(row[spec.data.label_column]))
        return out

    rows = [to_example(r) for r in raw if _usable(r, spec)]
    ds = Dataset.from_list(rows)
    if classify:
        ds = ds.cast_column("labels", ClassLabel(names=spec.data.labels))
    eval_rows = int(len(ds) * config.eval_split)
    if eval_rows >= 1 and len(ds) - eval_rows >= 1:
        splits = ds.train_test_split(
            test_size=eval_rows,
            seed=config.seed,
            stratify_by_column="labels" if classify and _stratifiable(ds, eval_rows) else None,
        )
        splits = DatasetDict(train=splits["train"], eval=splits["test"])
    else:
        splits = DatasetDict(train=ds)

    add_eos = spec.objective == "causal_lm" and tokenizer.eos_token is not None

    def tokenize(batch: dict[str, list[Any]]) -> dict[str, Any]:
        texts = batch["text"]
        if add_eos:
            texts = [t + tokenizer.eos_token for t in texts]
        return tokenizer(texts, truncation=True, max_length=config.max_length)

    return splits.map(tokenize, batched=True, remove_columns=["text"])


def _usable(row: dict[str, Any], spec: RunSpec) -> bool:
    if spec.objective == "sequence_classification":
        value = row.get(spec.data.label_column or "")
        if value is None or str(value) not in spec.data.labels:
            return False
    return bool(render_text(row, spec).strip())


def _stratifiable(ds: Dataset, eval_rows: int) -> bool:
    counts: dict[int, int] = {}
    for label in ds["labels"]:
        counts[label] = counts.get(label, 0) + 1
    return eval_rows >= len(counts) and min(counts.values()) >= 2
