"""Try a trained model on a few texts, or evaluate it on a dataset, beside its base model.

Both answer "what did training buy?": every result has a trained and a base
column, computed on the same inputs. For a LoRA job the base is the same model
with the adapter switched off; otherwise the base model is loaded after the
trained one is released (one model in memory at a time).

Evaluation tokenises exactly as training did, through the worker's own data
path (`train.data.load_splits`) on the job's run spec: the same max_length,
chat template, label masking (loss only on answers when completion_only_loss)
and label ids. Its loss is the mean over every predicted token of the whole
evaluated set (a token-weighted mean, so it does not depend on the batch size;
the Trainer's eval_loss averages per-batch means instead, so the two can differ
slightly), perplexity its exp. Classifiers report accuracy and macro F1 with the
same function the worker logs them with.

The work runs in the calling process on the CPU: seconds for small models and a
few thousand rows; `limit` bounds it (the REST API caps it at 10,000 rows).
"""

from __future__ import annotations

import contextlib
import json
import math
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from flextrain.config.enums import PAIRED_TYPES
from flextrain.data.prepare import DEFAULT_CHAT_TEMPLATE, IGNORE_INDEX, TEMPLATED_SHAPES
from flextrain.data.registry import DatasetInfo, read_rows
from flextrain.models.trained import (
    AfterTrainingError,
    CompletedJobs,
    TrainedModel,
    base_notes,
    load_tokenizer,
    on_trained_and_base,
    trained_model,
)

Split = Literal["all", "heldout"]
TOP_TOKENS = 5  # predictions shown per masked position
# How a title names each kind of job.
_KINDS = {
    "causal_lm": "causal LM",
    "masked_lm": "masked LM",
    "sequence_classification": "classifier",
}


def comparison_title(job_id: str, objective: str, base_model: str, what: str) -> str:
    """The one wording of every trained-beside-base title (try and evaluate, every kind
    of job, every front end): 'Trained (job ID, KIND) beside base (MODEL): WHAT'."""
    kind = _KINDS.get(objective, objective)
    return f"Trained (job {job_id}, {kind}) beside base ({base_model}): {what}"


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


class ModelAnswer(BaseModel):
    """One model's answer to one input."""

    generation: str | None = Field(None, description="Causal LM: the greedy continuation.")
    label: str | None = Field(
        None, description="Classifier: the predicted label; masked LM: the top token."
    )
    scores: dict[str, float] | None = Field(
        None, description="Classifier: softmax per label; masked LM: the top tokens."
    )


class TryRow(BaseModel):
    input: str
    prompt: str = Field(description="What the models were given (the chat template applied).")
    trained: ModelAnswer
    base: ModelAnswer


class TryResult(BaseModel):
    job_id: str
    objective: str
    base_model: str
    title: str = Field(
        description="What the rows compare, worded alike for every kind of job and by "
        "evaluate: 'Trained (job ID, KIND) beside base (MODEL): ...'."
    )
    templated: bool = Field(description="Whether the input was wrapped in the chat template.")
    rows: list[TryRow]
    notes: list[str] = Field(default_factory=list)


class EvaluationResult(BaseModel):
    job_id: str
    objective: str
    base_model: str
    title: str = Field(
        description="What was compared on which rows, worded as try's title: 'Trained (job "
        "ID, KIND) beside base (MODEL): DATASET, split SPLIT, N rows'."
    )
    dataset_id: str
    dataset_version: str | None
    split: Split = Field(
        description="The rows evaluated: 'heldout', those the job held out (eval_split or "
        "eval_file) and never trained on; 'all', the dataset's first rows. The default is "
        "heldout when the job held rows out of the data evaluated, else all (with a note)."
    )
    rows: int = Field(description="Examples evaluated (after the limit and unusable rows).")
    tokens: int | None = Field(None, description="Language models: predicted tokens counted.")
    trained: dict[str, float]
    base: dict[str, float]
    notes: list[str] = Field(default_factory=list)
    seconds: float


# -- try --------------------------------------------------------------------------------
def try_model(
    service: CompletedJobs,
    job_id: str,
    texts: list[str],
    *,
    max_new_tokens: int = 32,
    chat: bool | None = None,
) -> TryResult:
    """Each text through the trained and the base model.

    Causal LMs continue the text greedily (`max_new_tokens`), wrapped in the chat
    template when the job trained on chat or instruction data (or as `chat` says);
    classifiers give the label and the softmax score of every label; masked LMs
    the top tokens for the first mask token in each text.
    """
    if not texts or not all(t.strip() for t in texts):
        raise AfterTrainingError("texts: give at least one text, none of them empty.")
    if max_new_tokens < 1:
        raise AfterTrainingError(
            f"max_new_tokens: {max_new_tokens} is below 1. Fix: use 1 or more."
        )
    model = trained_model(service, job_id, "try")
    tokenizer = load_tokenizer(model)
    max_length = model.spec.config.max_length
    templated = False
    prompts = list(texts)
    if model.objective == "causal_lm":
        templated = chat if chat is not None else model.spec.data.shape in TEMPLATED_SHAPES
        prompts = [_prompt(tokenizer, text, templated) for text in texts]
        ids = [_prompt_ids(tokenizer, prompt, max_length) for prompt in prompts]

        def run(m: Any) -> list[ModelAnswer]:
            return [_generate(m, tokenizer, i, max_new_tokens) for i in ids]

    elif model.objective == "sequence_classification":

        def run(m: Any) -> list[ModelAnswer]:
            return _classify(m, tokenizer, texts, model.labels, max_length)

    else:
        mask = tokenizer.mask_token
        if not mask or not all(mask in text for text in texts):
            raise AfterTrainingError(
                f"texts: job {job_id} is a masked language model; it predicts the token at "
                f"{mask}. Fix: put {mask} in each text, e.g. 'The weather was {mask} today.'"
            )

        def run(m: Any) -> list[ModelAnswer]:
            return [_fill_mask(m, tokenizer, text, max_length) for text in texts]

    trained, base = on_trained_and_base(model, tokenizer, run)
    rows = [
        TryRow(input=text, prompt=prompt, trained=t, base=b)
        for text, prompt, t, b in zip(texts, prompts, trained, base, strict=True)
    ]
    notes = base_notes(model)
    if templated:
        notes.append(
            "Inputs were given as a user turn of the chat template the job trained with; the "
            "base model never saw that format (pass chat=False / --no-chat for raw text)."
        )
    return TryResult(
        job_id=job_id,
        objective=model.objective,
        base_model=model.base_model,
        title=comparison_title(
            job_id, model.objective, model.base_model, _count(len(rows), "input")
        ),
        templated=templated,
        rows=rows,
        notes=notes,
    )


def _prompt(tokenizer: Any, text: str, templated: bool) -> str:
    if not templated:
        return text
    template = None if getattr(tokenizer, "chat_template", None) else DEFAULT_CHAT_TEMPLATE
    rendered: str = tokenizer.apply_chat_template(
        [{"role": "user", "content": text}],
        chat_template=template,
        add_generation_prompt=True,
        tokenize=False,
    )
    return rendered


def _prompt_ids(tokenizer: Any, prompt: str, max_length: int) -> list[int]:
    """As training tokenised a prompt: one BOS (unless the template wrote it), then the
    text without special tokens; the end kept when it is longer than max_length."""
    from flextrain.data.prepare import bos_prefix

    bos = getattr(tokenizer, "bos_token", None) or ""
    prefix = [] if bos and prompt.startswith(bos) else bos_prefix(tokenizer)
    ids: list[int] = prefix + tokenizer(prompt, add_special_tokens=False)["input_ids"]
    return ids[-max_length:]


def _generate(model: Any, tokenizer: Any, ids: list[int], max_new_tokens: int) -> ModelAnswer:
    import torch

    input_ids = torch.tensor([ids])
    out = model.generate(
        input_ids=input_ids,
        attention_mask=torch.ones_like(input_ids),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id,
    )
    text: str = tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True)
    return ModelAnswer(generation=text)


def _classify(
    model: Any, tokenizer: Any, texts: list[str], labels: list[str], max_length: int
) -> list[ModelAnswer]:
    batch = tokenizer(
        texts, truncation=True, max_length=max_length, padding=True, return_tensors="pt"
    )
    probs = model(**batch).logits.float().softmax(dim=-1)
    answers = []
    for row in probs.tolist():
        scores = {label: round(p, 6) for label, p in zip(labels, row, strict=True)}
        answers.append(ModelAnswer(label=max(scores, key=scores.__getitem__), scores=scores))
    return answers


def _fill_mask(model: Any, tokenizer: Any, text: str, max_length: int) -> ModelAnswer:
    batch = tokenizer(text, truncation=True, max_length=max_length, return_tensors="pt")
    positions = (batch["input_ids"][0] == tokenizer.mask_token_id).nonzero()
    if len(positions) == 0:  # the mask was cut off by max_length
        return ModelAnswer()
    probs = model(**batch).logits[0, int(positions[0])].float().softmax(dim=-1)
    top = probs.topk(TOP_TOKENS)
    scores = {
        tokenizer.decode([int(i)]).strip(): round(float(p), 6)
        for p, i in zip(top.values, top.indices, strict=True)
    }
    return ModelAnswer(label=next(iter(scores)), scores=scores)


# -- evaluate ---------------------------------------------------------------------------
def evaluate(
    service: CompletedJobs,
    job_id: str,
    dataset_id: str | None = None,
    *,
    split: Split | None = None,
    limit: int | None = 1000,
    batch_size: int = 16,
) -> EvaluationResult:
    """Metrics of the trained and the base model on a dataset.

    `dataset_id` defaults to the version the job trained on. `split` "heldout"
    takes the rows the job held out for evaluation (eval_split of its own data,
    split with its seed, or its eval_file), of which the first `limit`; "all" the
    dataset's first `limit` rows, training rows included. None (the default) is
    heldout when the job held rows out and the dataset is its own, else all; a job
    that held nothing out is scored on all rows with a note saying so. None as the
    limit means no limit. The split used, and why, is in the result.
    """
    if limit is not None and limit < 1:
        raise AfterTrainingError(f"limit: {limit} is below 1. Fix: use 1 or more, or no limit.")
    if batch_size < 1:
        raise AfterTrainingError(f"batch_size: {batch_size} is below 1. Fix: use 1 or more.")
    started = time.monotonic()
    model = trained_model(service, job_id, "evaluate")
    own = dataset_id is None
    info = service.get_dataset(dataset_id or model.spec.config.dataset_id)
    if not own:  # named again, by its version or (unversioned) by its file
        version = model.spec.data.version
        own = info.version == version if version else str(info.path) == model.spec.data.path
    name = dataset_id or model.spec.config.dataset_id
    _check_shape(model, info, name)
    if split == "heldout" and not own:
        raise AfterTrainingError(
            f"split heldout: '{name}' is not the data job {job_id} trained on, so it has no "
            "held-out rows. Fix: use split all, or leave the dataset out."
        )
    chosen: Split = split or ("heldout" if own and _held_out_rows(model) else "all")
    if model.spec.config.training_type in PAIRED_TYPES:
        return _evaluate_pairs(model, info, name, chosen, own, limit, batch_size, started)
    tokenizer = load_tokenizer(model)
    tokenizer.padding_side = "right"  # positions count from the first token, as in training
    with tempfile.TemporaryDirectory(prefix="flextrain-eval-") as scratch:
        picked = _tokenized(
            model, info, name, chosen, limit, tokenizer, Path(scratch), required=bool(split)
        )
        if picked is None:  # the default found no held-out rows after all: all rows
            chosen = "all"
            picked = _tokenized(model, info, name, chosen, limit, tokenizer, Path(scratch))
        assert picked is not None
        data, available = picked
        if len(data) == 0:
            raise AfterTrainingError(
                f"Dataset '{name}' has no rows job {job_id} can be evaluated on. Fix: use a "
                "dataset with text (and, for a classifier, the job's labels)."
            )
        collator = _collator(model, tokenizer)
        seed = model.spec.config.seed

        def run(m: Any) -> dict[str, float]:
            return _metrics(m, model.objective, _batches(data, collator, batch_size, seed))

        trained, base = on_trained_and_base(model, tokenizer, run)
    tokens = trained.pop("tokens", None)
    base.pop("tokens", None)
    notes = _split_notes(model, name, chosen, own, len(data), available)
    notes += base_notes(model)
    if model.objective == "masked_lm":
        notes.append(
            f"Masked LM: 15% of tokens masked at random (seed {seed}), the same positions for "
            "both models."
        )
    version = f"@{info.version[:12]}" if info.version else ""
    counted = f", {_count(int(tokens), 'token')}" if tokens is not None else ""
    what = f"{info.dataset_id}{version}, split {chosen}, {_count(len(data), 'row')}{counted}"
    return EvaluationResult(
        job_id=job_id,
        objective=model.objective,
        base_model=model.base_model,
        title=comparison_title(job_id, model.objective, model.base_model, what),
        dataset_id=info.dataset_id,
        dataset_version=info.version,
        split=chosen,
        rows=len(data),
        tokens=int(tokens) if tokens is not None else None,
        trained=trained,
        base=base,
        notes=notes,
        seconds=round(time.monotonic() - started, 3),
    )


def _evaluate_pairs(
    model: TrainedModel,
    info: DatasetInfo,
    name: str,
    split: Split,
    own: bool,
    limit: int | None,
    batch_size: int,
    started: float,
) -> EvaluationResult:
    """A preference-trained policy and its base on pairs: held-out preference accuracy
    (the chosen answer's log-prob per token above the rejected one's) and the mean
    margin, on the same split the job held out (its own split code, seed and share)."""
    from flextrain.jobs.spec import DataSpec
    from flextrain.train.preference.data import preference_splits
    from flextrain.train.preference.evaluate import preference_accuracy

    if info.shape != "preference":
        raise AfterTrainingError(
            f"Dataset '{name}' holds {info.shape or 'plain text'} data, and job "
            f"{model.job.job_id} learnt from preference pairs. Fix: evaluate on pairs "
            "(prompt, chosen, rejected)."
        )
    tokenizer = load_tokenizer(model)
    spec = model.spec
    if not own:
        spec = spec.model_copy(update={"data": DataSpec.from_info(info), "eval_data": None})
    if split == "all":
        spec = spec.model_copy(
            update={"config": spec.config.model_copy(update={"eval_split": 0.0}), "eval_data": None}
        )
    with _quiet():
        splits = preference_splits(spec, tokenizer)
    if split == "heldout" and "eval" not in splits:
        raise AfterTrainingError(
            f"split heldout: job {model.job.job_id} held out no pairs. Fix: use split all."
        )
    held = splits["eval" if split == "heldout" else "train"]
    available = len(held)
    count = min(limit, available) if limit is not None else available
    rows = [{k: held[i][k] for k in ("prompt", "chosen", "rejected")} for i in range(count)]
    max_length = spec.config.max_length

    def run(m: Any) -> dict[str, float]:
        return preference_accuracy(m, tokenizer, rows, max_length, batch_size)

    trained, base = on_trained_and_base(model, tokenizer, run)
    notes = _split_notes(model, name, split, own, len(rows), available) + base_notes(model)
    notes.append(
        "preference_accuracy: the share of pairs whose chosen answer has the higher mean "
        "log-probability per token; logp_margin: the mean difference."
    )
    version = f"@{info.version[:12]}" if info.version else ""
    what = f"{info.dataset_id}{version}, split {split}, {_count(len(rows), 'pair')}"
    return EvaluationResult(
        job_id=model.job.job_id,
        objective=model.objective,
        base_model=model.base_model,
        title=comparison_title(model.job.job_id, model.objective, model.base_model, what),
        dataset_id=info.dataset_id,
        dataset_version=info.version,
        split=split,
        rows=len(rows),
        trained=trained,
        base=base,
        notes=notes,
        seconds=round(time.monotonic() - started, 3),
    )


def _held_out_rows(model: TrainedModel) -> bool:
    """Whether the job held rows out: as its metrics recorded (eval_rows), else as its
    config asked (an eval_file, or a share of its data, which a dataset too small for
    the share leaves empty: `_tokenized` finds that out)."""
    for metrics in (model.job.metrics, model.meta.get("metrics")):
        recorded = metrics.get("eval_rows") if isinstance(metrics, dict) else None
        if isinstance(recorded, int | float):
            return recorded > 0
    return model.spec.eval_data is not None or model.spec.config.eval_split > 0


def _split_notes(
    model: TrainedModel, name: str, split: Split, own: bool, rows: int, available: int
) -> list[str]:
    """Which rows were scored, and whether the job trained on them."""
    job_id, config = model.job.job_id, model.spec.config
    scored = f"{rows:,} of the {available:,} rows" if rows < available else f"all {rows:,} rows"
    if split == "heldout":
        if model.spec.eval_data is not None:
            return [
                f"split heldout: {scored} of the job's eval_file ({model.spec.eval_data.path}) "
                f"were scored; job {job_id} never trained on them."
            ]
        return [
            f"split heldout: {scored} job {job_id} held out of '{name}' (eval_split "
            f"{config.eval_split:g}, seed {config.seed}) were scored; it never trained on them."
        ]
    if not own:  # other data: the job trained on none of it (as far as flextrain knows)
        return []
    if _held_out_rows(model):
        return [
            f"split all: {scored} of '{name}' were scored, including rows job {job_id} "
            "trained on. Fix: use split heldout to score only the rows it never saw."
        ]
    return [
        f"split all: job {job_id} held out no rows (eval_split {config.eval_split:g}, no "
        f"eval_file), so {scored} of '{name}' were scored, rows it trained on: the scores show "
        "how well it fits its training data, not how it does on new data. Fix: evaluate on "
        "other data (a dataset), or train with eval_split above 0 or an eval_file."
    ]


def _check_shape(model: TrainedModel, info: DatasetInfo, name: str) -> None:
    """A classifier needs rows labelled with the labels it learnt; language models read
    any text, as in training."""
    if model.objective != "sequence_classification":
        return
    known = ", ".join(model.labels)
    if info.label_column is None:
        raise AfterTrainingError(
            f"Dataset '{name}' has no labels ({info.shape or 'unlabelled'} data), but job "
            f"{model.job.job_id} is a classifier of {known}. Fix: evaluate on a labelled "
            "(classification) dataset with those labels."
        )
    unknown = sorted(set(info.labels) - set(model.labels))
    if unknown:
        raise AfterTrainingError(
            f"Dataset '{name}' has labels job {model.job.job_id} never learnt: "
            f"{', '.join(unknown)} (it knows {known}). Fix: evaluate on data with those labels "
            "only."
        )


def _tokenized(
    model: TrainedModel,
    info: DatasetInfo,
    name: str,
    split: Split,
    limit: int | None,
    tokenizer: Any,
    scratch: Path,
    *,
    required: bool = True,
) -> tuple[Any, int] | None:
    """The rows to evaluate, tokenised by the worker's own data path on the job's spec,
    and how many the split held before the limit. None when the job held no rows out
    and `required` is False (the caller then takes all rows)."""
    from flextrain.train.data import load_splits

    spec = model.spec.model_copy(update={"temp_dir": str(scratch / "tmp")})
    total = 0
    if split == "all":
        rows = read_rows(info.path, info.format)
        total = len(rows)
        rows = rows[:limit] if limit is not None else rows
        subset = scratch / "rows.jsonl"
        subset.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        from flextrain.jobs.spec import DataSpec

        data = DataSpec.from_info(info).model_copy(
            update={"path": str(subset), "format": "jsonl", "version": None}
        )
        if model.objective == "sequence_classification":
            data = data.model_copy(update={"labels": model.labels})  # the trained label ids
        spec = spec.model_copy(
            update={
                "data": data,
                "eval_data": None,
                "cache_dir": None,
                "temp_dir": str(scratch),  # parsed copies go away with the scratch folder
                "config": spec.config.model_copy(update={"eval_split": 0.0}),
            }
        )
    try:
        with _quiet():
            splits = load_splits(spec, tokenizer)
    except ValueError as exc:  # no usable example, a template that cannot be split
        raise AfterTrainingError(
            f"Dataset '{name}' cannot be evaluated by job {model.job.job_id}: {exc}"
        ) from None
    if split == "all":
        return splits["train"], total
    if "eval" not in splits:
        if not required:
            return None
        raise AfterTrainingError(
            f"split heldout: job {model.job.job_id} held out no rows (eval_split "
            f"{model.spec.config.eval_split:g}, no eval_file). Fix: use split all (its "
            "training rows), or evaluate on other data."
        )
    held = splits["eval"]
    return (held.select(range(min(limit, len(held)))) if limit is not None else held), len(held)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The worker's data path shows progress bars for its log; here they would land in the
    middle of a table (or a --json answer). Its printed notes are the caller's to hide:
    swapping sys.stdout here would be process-wide, and in the API server two requests'
    swaps could interleave and leave stdout pointing at a dead buffer."""
    import datasets

    bars_were_off = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not bars_were_off:
            datasets.enable_progress_bars()


def _collator(model: TrainedModel, tokenizer: Any) -> Any:
    from transformers import (
        DataCollatorForLanguageModeling,
        DataCollatorForSeq2Seq,
        DataCollatorWithPadding,
    )

    if model.objective == "sequence_classification":
        return DataCollatorWithPadding(tokenizer)
    if model.objective == "causal_lm":
        return DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=IGNORE_INDEX)
    return DataCollatorForLanguageModeling(tokenizer, mlm=True, mlm_probability=0.15)


def _batches(data: Any, collator: Any, batch_size: int, seed: int) -> Iterator[dict[str, Any]]:
    import torch

    torch.manual_seed(seed)  # masked LM: the same masks for both models
    for start in range(0, len(data), batch_size):
        yield collator([data[i] for i in range(start, min(start + batch_size, len(data)))])


def _metrics(model: Any, objective: str, batches: Iterator[dict[str, Any]]) -> dict[str, float]:
    import torch
    import torch.nn.functional as F

    loss_sum, count = 0.0, 0
    all_logits: list[Any] = []
    gold: list[int] = []
    for batch in batches:
        labels = batch.pop("labels")
        logits = model(**batch).logits.float()
        if objective == "sequence_classification":
            loss_sum += float(F.cross_entropy(logits, labels, reduction="sum"))
            count += len(labels)
            all_logits.append(logits)
            gold += labels.tolist()
            continue
        if objective == "causal_lm":  # token t predicts token t + 1
            logits, labels = logits[:, :-1], labels[:, 1:]
        loss_sum += float(
            F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]),
                labels.reshape(-1),
                ignore_index=IGNORE_INDEX,
                reduction="sum",
            )
        )
        count += int((labels != IGNORE_INDEX).sum())
    loss = loss_sum / max(count, 1)
    if objective == "sequence_classification":
        import numpy as np
        from transformers import EvalPrediction

        from flextrain.train.metrics import classification_metrics

        scores = classification_metrics(
            EvalPrediction(predictions=torch.cat(all_logits).numpy(), label_ids=np.asarray(gold))
        )
        return {"loss": loss, **scores}
    # exp() overflows past ~709; a loss that high means "no model" anyway.
    return {"loss": loss, "perplexity": math.exp(min(loss, 700)), "tokens": float(count)}
