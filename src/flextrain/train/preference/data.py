"""A dataset as the rows TRL's preference and reward trainers read.

Every shape a method accepts (see flextrain.config.preference.ACCEPTED_SHAPES)
becomes that method's columns: pairs for DPO, ORPO and SimPO; marked answers for
KTO (a pair gives one desirable and one undesirable row); prompts for GRPO (with
the reference answer as `completion` where the data has one). The rows are
checked like a registered dataset's before anything trains, so a bad row fails
the job with its row and field, not a stack trace from inside TRL.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict

from flextrain.config.enums import TrainingType
from flextrain.data.checks import identical_pairs
from flextrain.data.errors import DatasetFormatError
from flextrain.data.manager import load_and_check
from flextrain.data.prepare import DEFAULT_CHAT_TEMPLATE
from flextrain.data.shapes import Shape, to_canonical
from flextrain.jobs.spec import DataSpec, RunSpec

Row = dict[str, Any]


def preference_splits(spec: RunSpec, tokenizer: Any) -> DatasetDict:
    """Train (and eval: eval_file, or a seeded eval_split share) as TRL rows."""
    ttype = spec.config.training_type
    train = to_method_rows(canonical_rows(spec.data, "dataset_id"), ttype)
    if spec.eval_data is not None:
        held = to_method_rows(canonical_rows(spec.eval_data, "eval_file"), ttype)
        splits = DatasetDict(train=_dataset(train, "dataset_id"), eval=_dataset(held, "eval_file"))
    else:
        ds = _dataset(train, "dataset_id")
        eval_rows = int(len(ds) * spec.config.eval_split)
        if eval_rows >= 1 and len(ds) - eval_rows >= 1:
            split = ds.train_test_split(test_size=eval_rows, seed=spec.config.seed)
            splits = DatasetDict(train=split["train"], eval=split["test"])
        else:
            splits = DatasetDict(train=ds)
    if ttype == TrainingType.GRPO:
        splits = DatasetDict(
            {
                name: _cut_prompts(split, tokenizer, spec.config.max_length)
                for name, split in splits.items()
            }
        )
    if ttype == TrainingType.KTO:
        # Read in order (see method_options), so shuffled here once, by seed; a pair's
        # two marked answers would otherwise sit side by side.
        splits["train"] = splits["train"].shuffle(seed=spec.config.seed)
    if is_conversational(splits["train"][0]) and not getattr(tokenizer, "chat_template", None):
        # TRL renders messages with the tokenizer's template; a base model has none, so
        # the one flextrain renders chat data with (saved beside the model afterwards).
        tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
    return splits


def _cut_prompts(split: Dataset, tokenizer: Any, max_length: int) -> Dataset:
    """GRPO's plain-text prompts cut to their last max_length tokens (the end of a prompt
    is what the answer follows): TRL samples after the whole prompt, and the memory
    estimate counts max_length prompt tokens plus the completion."""

    def cut(row: Row) -> Row:
        prompt = row["prompt"]
        if not isinstance(prompt, str):
            return row
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        if len(ids) <= max_length:
            return row
        return {**row, "prompt": tokenizer.decode(ids[-max_length:])}

    return split.map(cut)


def canonical_rows(data: DataSpec, field: str) -> list[Row]:
    """The rows of `data` in its shape's canonical fields, checked: any error row fails
    here with every problem listed (the checks a registered version passed at upload)."""
    if data.shape is None:
        raise DatasetFormatError(
            f"'{data.path}' has no preference columns. Fix: give rows with prompt/chosen/"
            "rejected, prompt/completion/label or prompt.",
            field=field,
        )
    shape: Shape = data.shape
    path = Path(data.path)
    raw, report, _, mapping = load_and_check(path, shape=shape)
    if report.errors:
        lines = "\n".join(f"  {line}" for line in report.issue_lines())
        raise DatasetFormatError(
            f"{field} '{path.name}' has {report.error_count} row error(s) ({shape} data):\n"
            f"{lines}\nFix: correct or remove these rows.",
            field=field,
        )
    same = identical_pairs(report)
    if same:
        print(
            f"[flextrain] warning: {same} pair(s) of {path.name} have chosen identical to "
            "rejected; they teach nothing.",
            flush=True,
        )
    return [{"shape": shape, **to_canonical(r, shape, mapping)} for r in raw]


def to_method_rows(rows: list[Row], ttype: TrainingType) -> list[Row]:
    """Canonical rows as the columns `ttype`'s TRL trainer reads."""
    out: list[Row] = []
    for row in rows:
        shape = row["shape"]
        if shape == "preference":
            prompt, chosen, rejected = _explicit_prompt(row)
            if ttype == TrainingType.KTO:
                out.append({"prompt": prompt, "completion": chosen, "label": True})
                out.append({"prompt": prompt, "completion": rejected, "label": False})
            elif ttype == TrainingType.GRPO:
                out.append({"prompt": prompt, "completion": chosen})
            else:
                out.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
        elif shape == "unpaired":
            out.append({k: row[k] for k in ("prompt", "completion", "label")})
        elif shape == "completion":
            out.append({"prompt": row["prompt"], "completion": row["completion"]})
        else:
            out.append({"prompt": row["prompt"]})
    return out


def is_conversational(row: Row) -> bool:
    return isinstance(row.get("prompt"), list)


def _explicit_prompt(row: Row) -> tuple[Any, Any, Any]:
    """(prompt, chosen, rejected) with the prompt taken out of two conversations that
    share their start when the data has none (an implicit prompt)."""
    chosen, rejected = row["chosen"], row["rejected"]
    if row.get("prompt") is not None:
        prompt = row["prompt"]
        if isinstance(chosen, list) and not isinstance(prompt, list):
            prompt = [{"role": "user", "content": prompt}]
        if isinstance(prompt, list) and isinstance(chosen, str):
            chosen = [{"role": "assistant", "content": chosen}]
            rejected = [{"role": "assistant", "content": rejected}]
        return prompt, chosen, rejected
    shared = 0
    while shared < min(len(chosen), len(rejected)) - 1 and chosen[shared] == rejected[shared]:
        shared += 1
    return chosen[:shared], chosen[shared:], rejected[shared:]


def _dataset(rows: list[Row], field: str) -> Dataset:
    """Rows as a Dataset; a set that mixes plain-text and conversational rows cannot be
    one table (and would be rendered two ways), so it is refused by name."""
    kinds = {is_conversational(r) for r in rows}
    if len(kinds) > 1:
        raise DatasetFormatError(
            f"{field} mixes plain-text prompts with conversational (message list) ones. "
            "Fix: use one form throughout.",
            field=field,
        )
    if not rows:
        raise DatasetFormatError(f"{field} has no rows. Fix: give some.", field=field)
    return Dataset.from_list(rows)
