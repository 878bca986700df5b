"""Load, render, split and tokenize a dataset for one objective.

Causal language modelling goes through `flextrain.data.prepare`: chat and
instruction data rendered with the chat template, loss only on the answers
(unless `completion_only_loss` is off), and the tokenised data cached by
dataset version so a second job does not tokenise again. Classification and
masked language modelling render each row to one text and tokenise it here.
Either way the eval split is a seeded share of the data, or `eval_file`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from datasets import ClassLabel, Dataset, DatasetDict, load_dataset

from flextrain.data.prepare import cache_key, prepare_split, tokenize_processes
from flextrain.data.registry import read_rows
from flextrain.jobs.spec import DataSpec, RunSpec

_LOADERS = {"jsonl": "json", "json": "json", "csv": "csv", "text": "text"}


def render_text(row: dict[str, Any], data: DataSpec) -> str:
    """One example's text: its text column, or a prompt/response pair joined."""
    if data.shape == "instruction":
        parts = [row.get("instruction"), row.get("input"), row.get("output")]
        return "\n".join(str(p) for p in parts if p)
    if data.shape == "completion":
        return f"{row.get('prompt') or ''}{row.get('completion') or ''}"
    if data.shape == "chat":
        return "\n".join(f"{m['role']}: {m['content']}" for m in row.get("messages") or [])
    if data.text_column is not None:
        return str(row[data.text_column] or "")
    assert data.prompt_columns is not None
    prompt, response = data.prompt_columns
    return f"{row[prompt]}\n{row[response]}"


def load_splits(spec: RunSpec, tokenizer: Any) -> DatasetDict:
    """Train (and eval, from eval_file or when eval_split > 0) splits, tokenized."""
    if spec.objective == "causal_lm":
        return _prepared_splits(spec, tokenizer)
    return _rendered_splits(spec, tokenizer)


# -- causal LM: prepared, masked and cached ----------------------------------------------
def _prepared_splits(spec: RunSpec, tokenizer: Any) -> DatasetDict:
    train = _prepare(spec.data, spec, tokenizer, "tokenized data")
    if spec.eval_data is not None:
        if _prepared_shape(spec.eval_data) != _prepared_shape(spec.data):
            raise ValueError(
                f"eval_file holds {_prepared_shape(spec.eval_data)} data but the training data "
                f"is {_prepared_shape(spec.data)}. Fix: give an eval_file of the same shape."
            )
        return DatasetDict(
            train=train, eval=_prepare(spec.eval_data, spec, tokenizer, "tokenized eval data")
        )
    eval_rows = int(len(train) * spec.config.eval_split)
    if eval_rows < 1 or len(train) - eval_rows < 1:
        return DatasetDict(train=train)
    splits = train.train_test_split(
        test_size=eval_rows, seed=spec.config.seed, **_index_files(train, Path(spec.temp_dir))
    )
    return DatasetDict(train=splits["train"], eval=splits["test"])


def _index_files(dataset: Dataset, scratch: Path) -> dict[str, Any]:
    """Where a split writes its index mapping: beside a dataset loaded from the cache
    would change the cache, so into the job's scratch folder (always rewritten), one
    per rank of a multi-process run (a rank must not rewrite a file another has mapped)."""
    if not dataset.cache_files:
        return {"keep_in_memory": True}
    scratch = scratch / f"rank-{os.environ.get('RANK', '0')}"
    scratch.mkdir(parents=True, exist_ok=True)
    return {
        "train_indices_cache_file_name": str(scratch / "split-train-indices.arrow"),
        "test_indices_cache_file_name": str(scratch / "split-eval-indices.arrow"),
        "load_from_cache_file": False,
    }


def _prepare(data: DataSpec, spec: RunSpec, tokenizer: Any, what: str) -> Dataset:
    shape = _prepared_shape(data)
    completion_only = spec.config.completion_only_loss
    max_length = spec.config.max_length
    key = None
    if data.version is not None and spec.cache_dir is not None:
        options = {
            "shape": shape,
            "completion_only": completion_only,
            "add_eos": True,
            "first_label": "ignored",
        }
        key = cache_key(data.version, tokenizer, max_length, options)
    records = (_canonical(row, data) for row in _read(data))
    dataset, hit = prepare_split(
        records,
        shape,
        tokenizer,
        max_length,
        cache_dir=Path(spec.cache_dir) if spec.cache_dir else None,
        key=key,
        completion_only=completion_only,
    )
    if key is None:
        state = "not cached (not a registered dataset version)"
    elif hit:
        state = f"cache hit ({key[:12]})"
    else:
        state = f"cache miss, stored ({key})"
    print(f"[flextrain] {what}: {state}; {len(dataset)} examples", flush=True)
    return dataset


def _prepared_shape(data: DataSpec) -> str:
    """The shape the records are prepared as: labels play no part in language modelling,
    and a file read as it is has a text column or a prompt/response pair."""
    if data.shape == "classification" or (data.shape is None and data.text_column):
        return "text"
    return data.shape or "completion"


def _canonical(row: dict[str, Any], data: DataSpec) -> dict[str, Any]:
    if data.shape in ("text", "instruction", "chat", "completion"):
        return row
    if data.shape == "classification":
        return {"text": row.get("text")}
    if data.text_column is not None:
        return {"text": row.get(data.text_column)}
    assert data.prompt_columns is not None
    prompt, response = data.prompt_columns
    # The newline the unmasked rendering always put between them.
    return {"prompt": f"{row.get(prompt) or ''}\n", "completion": row.get(response)}


def _read(data: DataSpec) -> list[dict[str, Any]]:
    path = Path(data.path)
    if data.format == "jsonl":  # every registered version: canonical JSON lines
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return read_rows(path, data.format)


# -- classification and masked LM: one text per row -------------------------------------
def _rendered_splits(spec: RunSpec, tokenizer: Any) -> DatasetDict:
    config = spec.config
    classify = spec.objective == "sequence_classification"
    ds = _rendered(spec.data, spec)
    if spec.eval_data is not None:
        splits = DatasetDict(train=ds, eval=_rendered(spec.eval_data, spec))
    else:
        eval_rows = int(len(ds) * config.eval_split)
        if eval_rows >= 1 and len(ds) - eval_rows >= 1:
            split = ds.train_test_split(
                test_size=eval_rows,
                seed=config.seed,
                stratify_by_column="labels" if classify and _stratifiable(ds, eval_rows) else None,
            )
            splits = DatasetDict(train=split["train"], eval=split["test"])
        else:
            splits = DatasetDict(train=ds)

    add_eos = spec.objective == "causal_lm" and tokenizer.eos_token is not None

    def tokenize(batch: dict[str, list[Any]]) -> dict[str, Any]:
        texts = batch["text"]
        if add_eos:
            texts = [t + tokenizer.eos_token for t in texts]
        return tokenizer(texts, truncation=True, max_length=config.max_length)

    workers = tokenize_processes(max(len(split) for split in splits.values()))
    return splits.map(
        tokenize, batched=True, remove_columns=["text"], num_proc=workers if workers > 1 else None
    )


def _rendered(data: DataSpec, spec: RunSpec) -> Dataset:
    """Rows of `data` as {"text"} (and {"labels"}: ids of the training data's labels)."""
    # The parsed copy goes to the job's scratch folder, not ~/.cache: a server evaluating
    # many files would otherwise leave one copy per file behind, for ever.
    raw = load_dataset(
        _LOADERS[data.format],
        data_files=data.path,
        split="train",
        cache_dir=str(Path(spec.temp_dir) / "datasets"),
    )
    classify = spec.objective == "sequence_classification"
    labels = spec.data.labels
    if classify and data.label_column is None:
        raise ValueError(
            f"eval_file '{data.path}' has no label column. Fix: give an eval_file with the "
            "same labels as the training data."
        )

    def to_example(row: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"text": render_text(row, data)}
        if classify:
            assert data.label_column is not None
            out["labels"] = labels.index(str(row[data.label_column]))
        return out

    ds = Dataset.from_list([to_example(r) for r in raw if _usable(r, data, spec)])
    if classify:
        ds = ds.cast_column("labels", ClassLabel(names=labels))
    return ds


def _usable(row: dict[str, Any], data: DataSpec, spec: RunSpec) -> bool:
    if spec.objective == "sequence_classification":
        value = row.get(data.label_column or "")
        if value is None or str(value) not in spec.data.labels:
            return False
    return bool(render_text(row, data).strip())


def _stratifiable(ds: Dataset, eval_rows: int) -> bool:
    counts: dict[int, int] = {}
    for label in ds["labels"]:
        counts[label] = counts.get(label, 0) + 1
    return eval_rows >= len(counts) and min(counts.values()) >= 2
