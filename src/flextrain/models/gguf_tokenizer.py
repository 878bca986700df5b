"""A model's tokenizer written into its GGUF file, in the form llama.cpp reads.

Two kinds of tokenizer.json are written:

- **Byte-level BPE** (GPT-2, Llama 3, Qwen): llama.cpp's "gpt2" model. The tokens
  and merges as they are, and the name of the regex the text is split with before
  BPE (llama.cpp knows splits by name only).
- **SentencePiece-style BPE** (Llama 2, Mistral up to v0.3, Phi-3, Gemma: BPE with
  byte fallback, spaces written as "▁"): llama.cpp's "llama" model. llama.cpp does
  not read merges for it: it merges the adjacent pair whose joined text is the
  highest-scoring token. So every token gets a score that ranks it as the merges
  do: -(rank of the first merge that makes it). Single characters, the 256 byte
  tokens ("<0x41>") and special tokens are never made by a merge and score 0 (their
  score is never compared). The merges are written too, for readers that use them
  (transformers' GGUF loader). Whether a space is put in front of the text
  (`add_space_prefix`) is read from the tokenizer's Metaspace pre-tokenizer or
  Prepend normalizer.

Anything else (WordPiece, Unigram, a split llama.cpp has no name for, a normalizer
llama.cpp would not apply) is refused with what to do instead: a file whose
tokenizer cuts text differently would answer differently, however exact its weights.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from flextrain.models.trained import AfterTrainingError

# Canonical llama.cpp pre-tokenizer names, tried in this order when a tokenizer's split
# regex is looked up (transformers lists aliases too; these are the names llama.cpp uses).
_PRE_NAMES = ("llama-bpe", "qwen2", "tekken", "gpt-4o", "qwen35")
_BYTE_TOKEN = re.compile(r"<0x[0-9A-Fa-f]{2}>")
SPACE = "\u2581"  # SentencePiece's visible space
# A token no merge makes but longer than one character: reachable in llama.cpp only
# when nothing else is, as in the source tokenizer.
_UNMADE_SCORE = -1e9


class GGUFConversionError(AfterTrainingError):
    """The model (or its tokenizer) cannot be written as GGUF; the message says why."""

    code = "gguf_conversion"
    field = "format"


def write_tokenizer(gguf: Any, writer: Any, folder: Path, vocab_size: int) -> None:
    """The tokens, their types (and scores), merges, special tokens, whether BOS/EOS are
    added, and the chat template, from the fast tokenizer saved in `folder`."""
    try:
        spec = json.loads((folder / "tokenizer.json").read_text())
    except (OSError, ValueError):
        raise GGUFConversionError(
            f"format gguf: {folder} has no readable tokenizer.json. Fix: the model folder needs "
            "the fast tokenizer transformers saves with it."
        ) from None
    model = spec.get("model") or {}
    if model.get("type") != "BPE":
        raise GGUFConversionError(
            "format gguf: only BPE tokenizers (byte-level as in GPT-2, Llama 3 and Qwen, or "
            "SentencePiece-style with byte fallback as in Llama 2, Mistral, Phi-3 and Gemma) "
            f"are written to GGUF; this one is {model.get('type')}. Fix: export as a "
            "safetensors folder (--format vllm)."
        )
    if model.get("byte_fallback"):
        count = _sentencepiece(gguf, writer, spec, vocab_size)
    else:
        count = _byte_level(gguf, writer, spec, vocab_size)
    # Merges, special token ids, whether BOS/EOS are added (read from the post-processor,
    # not tokenizer_config.json, which transformers 5 leaves without add_bos_token), and
    # the chat template (chat_template.jinja).
    special = gguf.SpecialVocab(folder, load_merges=True, n_vocab=count)
    special.add_to_gguf(writer)
    if "bos" not in special.add_special_token or "eos" not in special.add_special_token:
        # The post-processor adds no special token, so the gguf package writes no flag,
        # and llama.cpp (and transformers' reader) then add BOS to a SentencePiece
        # vocabulary: say what the tokenizer really does.
        bos, eos = _adds_bos_eos(folder)
        if "bos" not in special.add_special_token:
            writer.add_add_bos_token(bos)
        if "eos" not in special.add_special_token:
            writer.add_add_eos_token(eos)


def _adds_bos_eos(folder: Path) -> tuple[bool, bool]:
    """Whether the saved tokenizer puts BOS before, and EOS after, an encoded text."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    ids = tokenizer("a")["input_ids"]
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    return bool(ids) and bos is not None and ids[0] == bos, bool(ids) and eos is not None and ids[
        -1
    ] == eos


def _byte_level(gguf: Any, writer: Any, spec: dict[str, Any], vocab_size: int) -> int:
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(_pre_tokenizer(spec.get("pre_tokenizer")))
    tokens, kinds = _tokens(gguf, spec, vocab_size)
    writer.add_token_list(tokens)
    writer.add_token_types(kinds)
    return len(tokens)


def _sentencepiece(gguf: Any, writer: Any, spec: dict[str, Any], vocab_size: int) -> int:
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_add_space_prefix(_space_prefix(spec))
    tokens, kinds = _tokens(gguf, spec, vocab_size)
    ranks: dict[str, int] = {}
    for rank, merge in enumerate(spec["model"].get("merges") or []):
        left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
        ranks.setdefault(left + right, rank)
    scores = [
        -float(ranks[t] + 1) if t in ranks else (0.0 if len(t) == 1 else _UNMADE_SCORE)
        for t in tokens
    ]
    byte = int(gguf.TokenType.BYTE)
    normal = int(gguf.TokenType.NORMAL)
    for i, token in enumerate(tokens):
        if kinds[i] == normal and _BYTE_TOKEN.fullmatch(token):
            kinds[i] = byte
            scores[i] = 0.0
    unk = spec["model"].get("unk_token")
    if unk in tokens:
        kinds[tokens.index(unk)] = int(gguf.TokenType.UNKNOWN)
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(kinds)
    return len(tokens)


def _tokens(gguf: Any, spec: dict[str, Any], vocab_size: int) -> tuple[list[str], list[int]]:
    """Every id's text and llama.cpp token type, to the model's embedding width."""
    vocab: dict[int, str] = {i: t for t, i in spec["model"]["vocab"].items()}
    added = {int(a["id"]): a for a in spec.get("added_tokens", [])}
    tokens: list[str] = []
    kinds: list[int] = []
    for i in range(max(vocab_size, max(vocab, default=-1) + 1, max(added, default=-1) + 1)):
        if i in added:
            tokens.append(added[i]["content"])
            kind = "CONTROL" if added[i].get("special") else "USER_DEFINED"
        elif i in vocab:
            tokens.append(vocab[i])
            kind = "NORMAL"
        else:  # the embedding is wider than the tokenizer: rows no text maps to
            tokens.append(f"[PAD{i}]")
            kind = "UNUSED"
        kinds.append(int(getattr(gguf.TokenType, kind)))
    return tokens, kinds


def _space_prefix(spec: dict[str, Any]) -> bool:
    """Whether the tokenizer puts "▁" before the text, as llama.cpp's add_space_prefix
    does; GGUFConversionError for normalization llama.cpp would not repeat."""
    pre = spec.get("pre_tokenizer") or {}
    norm = spec.get("normalizer") or {}
    steps = norm.get("normalizers") if norm.get("type") == "Sequence" else [norm]
    steps = [s for s in steps or [] if s]
    known = all(_prepends_space(s) or _spaces_to_marks(s) for s in steps)
    if not known:
        raise GGUFConversionError(
            "format gguf: the tokenizer normalizes text in a way llama.cpp does not "
            f"({json.dumps(norm)[:200]}). Fix: export as a safetensors folder (--format vllm)."
        )
    if any(_prepends_space(s) for s in steps):
        return True
    if pre.get("type") == "Metaspace":
        return pre.get("prepend_scheme", "always") != "never"
    return False


def _prepends_space(step: dict[str, Any]) -> bool:
    return step.get("type") == "Prepend" and step.get("prepend") == SPACE


def _spaces_to_marks(step: dict[str, Any]) -> bool:
    pattern = (step.get("pattern") or {}).get("String")
    return step.get("type") == "Replace" and pattern == " " and step.get("content") == SPACE


def _pre_tokenizer(pre: dict[str, Any] | None) -> str:
    """llama.cpp's name for how the tokenizer splits text before BPE; GGUFConversionError
    for a split it has no name for (llama.cpp would refuse the file)."""
    given: dict[str, Any] = pre or {}
    listed = given.get("pretokenizers") if given.get("type") == "Sequence" else [given]
    parts: list[dict[str, Any]] = [p for p in listed or [] if p]
    if len(parts) == 1 and parts[0].get("type") == "ByteLevel" and parts[0].get("use_regex", True):
        return "gpt-2"
    splits = [p for p in parts if p.get("type") == "Split"]
    if splits and any(p.get("type") == "ByteLevel" for p in parts):
        pattern = (splits[0].get("pattern") or {}).get("Regex")
        from transformers.integrations.gguf.gguf_tokenizer_mapping import (
            GGUF_PRE_TOKENIZER_SPLITS,
        )

        for known in _PRE_NAMES:
            if GGUF_PRE_TOKENIZER_SPLITS.get(known) == pattern:
                return known
    raise GGUFConversionError(
        "format gguf: the tokenizer splits text in a way llama.cpp has no name for "
        f"({json.dumps(pre)[:200]}). Fix: export as a safetensors folder (--format vllm)."
    )
