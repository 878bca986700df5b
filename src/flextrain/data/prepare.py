"""Turn canonical records into model inputs: rendered, tokenised, masked and cached.

Rendering. Chat and instruction data are rendered with the tokenizer's chat
template, so a fine-tuned chat model sees the format it will be prompted with.
An instruction record is the two-turn conversation user = instruction (plus
"\\n\\n" and the input when it is not empty), assistant = output. A tokenizer
without a template gets `DEFAULT_CHAT_TEMPLATE`, which renders

    <|system|>
    {system content}
    <|user|>
    {user content}
    <|assistant|>
    {assistant content}{eos}

that is, every turn is "<|role|>\\n" and its content; a non-assistant turn
ends with "\\n", an assistant turn with the eos token (with "\\n" when the
tokenizer has none), which is what teaches the model to stop. The template is
written so that rendering a conversation with `add_generation_prompt=True`
ends with "<|assistant|>\\n", and it is saved with the trained model when the
model had no template of its own (see `train/save.py`). Completion records are
the prompt followed by the completion, as they are, with no template: they are
raw text continuations. Text records are their text.

Masking. An example is a list of pieces, each trainable or not (`segments`):
with a template, the prefix of the conversation up to each assistant turn is
rendered with `add_generation_prompt=True` and the differences between
successive renderings are the pieces, so every assistant turn (with its end
token) is trained and everything else is not, whatever the template's format.
Pieces are tokenised one by one without special tokens and concatenated (one BOS
first when the tokenizer adds one), so a label boundary is exactly a piece
boundary; the prompt is tokenised as one string, as it is at inference.

Caching. Tokenising is keyed (`cache_key`) by the dataset version (a content
hash), the tokenizer (its name and a fingerprint of its vocabulary, rules and
template), the max length and the options; a second job with the same key loads
the saved Arrow files instead of tokenising again. An entry is written to a
temporary folder and renamed into place, so a half-written entry is never read.

transformers and datasets are imported inside the functions: this module is
part of `data/` and must stay importable without them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flextrain.data.shapes import Shape
from flextrain.errors import InvalidInputError

if TYPE_CHECKING:
    from datasets import Dataset

IGNORE_INDEX = -100  # the label that torch's cross-entropy (and so every HF model) skips
# Bump when the tokenised form changes, so older cache entries are not reused.
PREPARED_FORMAT = 1
TEMPLATED_SHAPES: frozenset[str] = frozenset({"chat", "instruction"})

DEFAULT_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|' + message['role'] + '|>\\n' + message['content'] -}}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{- eos_token if eos_token else '\\n' -}}"
    "{%- else -%}"
    "{{- '\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|assistant|>\\n' -}}{%- endif -%}"
)

Pieces = list[tuple[str, bool]]


class TemplateError(InvalidInputError, ValueError):
    """The chat template cannot be split into prompt and assistant pieces."""

    code = "chat_template"


def instruction_messages(record: Mapping[str, Any]) -> list[dict[str, str]]:
    """An instruction record as the conversation it stands for."""
    prompt = str(record.get("instruction") or "")
    extra = record.get("input")
    if extra:
        prompt = f"{prompt}\n\n{extra}"
    return [
        {"role": "user", "content": prompt},
        {"role": "assistant", "content": str(record.get("output") or "")},
    ]


def segments(record: Mapping[str, Any], shape: Shape | str, tokenizer: Any) -> Pieces:
    """The example as text pieces, each marked trainable (True) or not."""
    if shape == "text":
        return [(str(record.get("text") or ""), True)]
    if shape == "completion":
        prompt, completion = record.get("prompt"), record.get("completion")
        return [(str(prompt or ""), False), (str(completion or ""), True)]
    if shape == "instruction":
        return _chat_pieces(instruction_messages(record), tokenizer)
    if shape == "chat":
        messages = [
            {"role": str(m["role"]), "content": str(m["content"] or "")}
            for m in record.get("messages") or []
        ]
        return _chat_pieces(messages, tokenizer)
    raise ValueError(f"{shape!r} data is not prepared here (classification has its own path).")


def _chat_pieces(messages: list[dict[str, str]], tokenizer: Any) -> Pieces:
    # None: the tokenizer's own template (a string, or a dict of named ones).
    template = None if getattr(tokenizer, "chat_template", None) else DEFAULT_CHAT_TEMPLATE

    def render(turns: list[dict[str, str]], generation_prompt: bool) -> str:
        if not turns:
            return ""
        text: str = tokenizer.apply_chat_template(
            turns,
            chat_template=template,
            add_generation_prompt=generation_prompt,
            tokenize=False,
        )
        return text

    pieces: Pieces = []
    done = ""  # the rendering of every turn so far
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = render(messages[:index], True)
        full = render(messages[: index + 1], False)
        if not prompt.startswith(done) or not full.startswith(prompt):
            raise TemplateError(
                "The tokenizer's chat template does not render a conversation as the start of "
                "its continuation (it rewrites earlier turns), so the assistant turns cannot be "
                "told apart from the prompt. Fix: use a model whose template renders turns "
                "incrementally, or give the tokenizer such a chat_template."
            )
        pieces += [(prompt[len(done) :], False), (full[len(prompt) :], True)]
        done = full
    rest = render(messages, False)
    if not rest.startswith(done):
        raise TemplateError("The tokenizer's chat template rewrites earlier turns.")
    pieces.append((rest[len(done) :], False))
    return [(text, trained) for text, trained in pieces if text]


def bos_prefix(tokenizer: Any) -> list[int]:
    """The BOS id when the tokenizer puts one before the text, else nothing."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return []
    with_special = tokenizer("x")["input_ids"]
    without = tokenizer("x", add_special_tokens=False)["input_ids"]
    adds = bool(with_special) and with_special[0] == bos and (not without or without[0] != bos)
    return [bos] if adds else []


def _encode(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    if not texts:
        return []
    encoded: list[list[int]] = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    return encoded


def _assemble(
    pieces: Pieces,
    piece_ids: Sequence[list[int]],
    shape: Shape | str,
    tokenizer: Any,
    max_length: int,
    *,
    prefix: list[int],
    completion_only: bool,
    add_eos: bool,
) -> dict[str, list[int]]:
    ids: list[int] = []
    trained: list[bool] = []
    bos_token: str = getattr(tokenizer, "bos_token", None) or ""
    # A template that writes the BOS itself (Llama 3's does) must not get a second one.
    template_has_bos = bool(pieces and bos_token) and pieces[0][0].startswith(bos_token)
    if prefix and not template_has_bos:
        ids += prefix
        trained += [False] * len(prefix)
    for (_, train), tokens in zip(pieces, piece_ids, strict=True):
        ids += tokens
        trained += [train] * len(tokens)
    eos = getattr(tokenizer, "eos_token_id", None)
    # Templates end turns themselves; raw text and completions need the stop token.
    ends = bool(ids) and ids[-1] == eos
    if add_eos and eos is not None and shape not in TEMPLATED_SHAPES and not ends:
        ids.append(eos)
        trained.append(True)
    ids, trained = ids[:max_length], trained[:max_length]
    if completion_only:
        labels = [i if t else IGNORE_INDEX for i, t in zip(ids, trained, strict=True)]
    else:
        labels = list(ids)
    if labels:
        # Nothing predicts the first token; with a label there, the Trainer would count it
        # among the tokens a batch's loss is averaged over (and packed rows would not).
        labels[0] = IGNORE_INDEX
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}


def tokenize_example(
    record: Mapping[str, Any],
    shape: Shape | str,
    tokenizer: Any,
    max_length: int,
    *,
    completion_only: bool = True,
    add_eos: bool = True,
) -> dict[str, list[int]]:
    """input_ids, attention_mask and labels of one record, cut to max_length.

    Labels are -100 on every token that is not trained when `completion_only`
    (the prompt, the user and system turns, the template's markers), and a
    copy of input_ids otherwise. `add_eos` appends the eos token to text and
    completion examples (templated ones end their turns themselves).
    """
    pieces = segments(record, shape, tokenizer)
    return _assemble(
        pieces,
        _encode(tokenizer, [text for text, _ in pieces]),
        shape,
        tokenizer,
        max_length,
        prefix=bos_prefix(tokenizer),
        completion_only=completion_only,
        add_eos=add_eos,
    )


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """SHA-256 of what decides how text becomes ids: vocabulary, rules, specials, template."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        rules = backend.to_str()  # vocab, merges, normalizer, pre-tokenizer, post-processor
    else:
        rules = json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False)
    parts = {
        "class": type(tokenizer).__name__,
        "rules": hashlib.sha256(rules.encode("utf-8")).hexdigest(),
        "specials": {
            name: getattr(tokenizer, name, None)
            for name in ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id")
        },
        "bos_prefix": bos_prefix(tokenizer),
        "chat_template": getattr(tokenizer, "chat_template", None),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def cache_key(version: str, tokenizer: Any, max_length: int, options: Mapping[str, Any]) -> str:
    """The name of a tokenised dataset in the cache: equal inputs, equal name."""
    payload = {
        "format": PREPARED_FORMAT,
        "version": version,
        "tokenizer": str(getattr(tokenizer, "name_or_path", "")),
        "tokenizer_fingerprint": tokenizer_fingerprint(tokenizer),
        "max_length": max_length,
        "options": dict(options),
    }
    encoded = json.dumps(payload, sort_keys=True, default=str).encode("utf-8")
    return hashlib.sha256(encoded).hexdigest()


def tokenize_records(
    records: Iterable[Mapping[str, Any]],
    shape: Shape | str,
    tokenizer: Any,
    max_length: int,
    *,
    completion_only: bool,
    add_eos: bool = True,
    chunk: int = 1000,
) -> dict[str, list[list[int]]]:
    """Every record tokenised (pieces encoded in batches, which is much faster than
    one call each), leaving out examples with no token to learn from: nothing
    trained within max_length, or nothing at all."""
    prefix = bos_prefix(tokenizer)
    columns: dict[str, list[list[int]]] = {"input_ids": [], "attention_mask": [], "labels": []}
    batch: list[Pieces] = []

    def flush() -> None:
        texts = [text for pieces in batch for text, _ in pieces]
        encoded = iter(_encode(tokenizer, texts))
        for pieces in batch:
            piece_ids = [next(encoded) for _ in pieces]
            example = _assemble(
                pieces,
                piece_ids,
                shape,
                tokenizer,
                max_length,
                prefix=prefix,
                completion_only=completion_only,
                add_eos=add_eos,
            )
            if any(label != IGNORE_INDEX for label in example["labels"][1:]):
                for name, values in example.items():
                    columns[name].append(values)
        batch.clear()

    for record in records:
        batch.append(segments(record, shape, tokenizer))
        if len(batch) >= chunk:
            flush()
    flush()
    return columns


# Rows per tokenising process: below this a process costs more to start than it saves.
ROWS_PER_PROCESS = 10_000


def tokenize_processes(rows: int, cores: int | None = None) -> int:
    """How many processes tokenise `rows` records: one per ROWS_PER_PROCESS rows, at most
    one per core (and 8); the tokenizer's own batching already uses one core well."""
    cores = cores or os.cpu_count() or 1
    return max(1, min(cores, 8, rows // ROWS_PER_PROCESS))


def _tokenize_in_processes(
    rows: list[Mapping[str, Any]],
    shape: Shape | str,
    tokenizer: Any,
    max_length: int,
    completion_only: bool,
    processes: int,
) -> dict[str, list[list[int]]]:
    """`tokenize_records` over contiguous shards in `processes` processes, joined in order:
    the same columns as one process makes."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from functools import partial

    size = -(-len(rows) // processes)
    shards = [rows[i : i + size] for i in range(0, len(rows), size)]
    work = partial(
        tokenize_records,
        shape=shape,
        tokenizer=tokenizer,
        max_length=max_length,
        completion_only=completion_only,
    )
    # fork: the children inherit the loaded tokenizer instead of importing transformers.
    context = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
    with ProcessPoolExecutor(max_workers=processes, mp_context=context) as pool:
        parts = list(pool.map(work, shards))
    columns: dict[str, list[list[int]]] = {name: [] for name in parts[0]}
    for part in parts:
        for name, values in part.items():
            columns[name].extend(values)
    return columns


def prepare_split(
    records: Iterable[Mapping[str, Any]],
    shape: Shape | str,
    tokenizer: Any,
    max_length: int,
    *,
    cache_dir: Path | None,
    key: str | None,
    completion_only: bool,
    processes: int | None = None,
) -> tuple[Dataset, bool]:
    """The tokenised dataset, and whether it came from the cache.

    Without a cache_dir or a key (data that is not a registered version has no
    stable name) the records are tokenised and nothing is stored.
    """
    from datasets import Dataset, load_from_disk

    target = cache_dir / key if cache_dir is not None and key is not None else None
    if target is not None and target.is_dir():
        return load_from_disk(str(target)), True
    rows = list(records)
    workers = tokenize_processes(len(rows)) if processes is None else processes
    columns = (
        _tokenize_in_processes(rows, shape, tokenizer, max_length, completion_only, workers)
        if workers > 1
        else tokenize_records(rows, shape, tokenizer, max_length, completion_only=completion_only)
    )
    if not columns["input_ids"]:
        raise ValueError(
            f"No example has a token to train on within max_length={max_length} (prompts "
            "longer than max_length leave nothing of the answer). Fix: raise max_length, "
            "shorten the prompts, or set completion_only_loss to false."
        )
    dataset = Dataset.from_dict(columns)
    if target is not None:
        _store(dataset, target)
    return dataset, False


def _store(dataset: Dataset, target: Path) -> None:
    """Save next to `target` and rename into place: an entry is complete or absent."""
    import datasets

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=target.parent))
    bars_were_off = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()  # a progress bar per save is noise in the job's log
    try:
        dataset.save_to_disk(str(staging))
        try:
            os.replace(staging, target)
        except OSError:  # another job stored the same entry first; it is identical
            if not target.is_dir():
                raise
    finally:
        if not bars_were_off:
            datasets.enable_progress_bars()
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
