"""GGUF exports run in llama.cpp itself (`make test-export`, with the flextrain[gguf]
extra): a tiny LoRA model trained on the bundled instructions, exported at f16, q8_0
and q4_k_m, must tokenise, score and continue text as the trained model does."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gguf
import pytest

from flextrain.jobs.store import TrainingJob
from flextrain.models.export_gguf import export_as
from flextrain.models.gguf_file import write_gguf
from flextrain.models.gguf_llama_cpp import check_in_llama_cpp
from flextrain.models.gguf_parity import load_reference
from flextrain.service import TrainingService
from flextrain.settings import Settings
from tests.models.after_helpers import (
    ARCHITECTURES,
    SENTENCEPIECE_KINDS,
    tiny_random_lm,
    train_tiny_helper,
)

pytestmark = pytest.mark.export
llama_cpp = pytest.importorskip("llama_cpp", reason="make test-export installs flextrain[gguf]")


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, models_cache: Path) -> Iterator[Any]:
    home = tmp_path_factory.mktemp("llama-cpp") / "home"
    svc = TrainingService(Settings(home=home, models_cache=models_cache))
    yield svc
    svc.engine.dispose()


@pytest.fixture(scope="module")
def lora_lm(service: TrainingService) -> TrainingJob:
    return train_tiny_helper(service)


@pytest.mark.parametrize(
    ("quant", "file_type", "least_top1"), [("f16", 1, 0.98), ("q8_0", 7, 0.95), ("q4_k_m", 15, 0.8)]
)
def test_llama_cpp_answers_as_the_trained_model(
    service: TrainingService,
    lora_lm: TrainingJob,
    tmp_path: Path,
    quant: str,
    file_type: int,
    least_top1: float,
) -> None:
    result = export_as(service, lora_lm.job_id, tmp_path / quant, format="gguf", quant=quant)
    report = result.llama_cpp
    assert report is not None
    assert report.runtime == "llama.cpp"
    assert report.passed, report.problems
    assert report.tokenizer_match
    assert report.chat_template_match
    assert report.top1_agreement >= least_top1
    if quant == "f16":
        assert report.relative_diff < 0.05
        assert report.greedy_match
    assert "parity-llama-cpp.json" in result.files
    reader = gguf.GGUFReader(str(result.file))
    assert reader.fields["general.file_type"].contents() == file_type


def test_a_chat_through_the_embedded_template_matches_transformers(
    service: TrainingService, lora_lm: TrainingJob, tmp_path: Path
) -> None:
    """llama-cpp-python renders the chat with the template the file carries; greedy text
    at f16 must be what the trained model (merged, in transformers) writes."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result = export_as(service, lora_lm.job_id, tmp_path / "chat", format="gguf", quant="f16")
    merged = service.merge_model(lora_lm.job_id, tmp_path / "merged")
    tokenizer = AutoTokenizer.from_pretrained(merged.path)
    model = AutoModelForCausalLM.from_pretrained(merged.path, dtype=torch.float32).eval()
    messages = [{"role": "user", "content": "Give one tip for writing clearly."}]
    # The end of sequence is barred on both sides: a tiny model may end at once, and
    # twelve tokens of text are a stronger comparison than two empty answers.
    eos = tokenizer.eos_token_id
    llm = llama_cpp.Llama(model_path=str(result.file), n_ctx=256, verbose=False, seed=0)
    try:
        answer = llm.create_chat_completion(
            messages, temperature=0.0, max_tokens=12, logit_bias={eos: -1e9}
        )
    finally:
        llm.close()
    text = answer["choices"][0]["message"]["content"]
    rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = tokenizer(rendered, add_special_tokens=True, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model.generate(
            ids, max_new_tokens=12, do_sample=False, pad_token_id=0, suppress_tokens=[eos]
        )
    expected = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
    assert len(expected.strip()) > 5
    assert text.strip() == expected.strip()


@pytest.mark.parametrize("kind", ARCHITECTURES + SENTENCEPIECE_KINDS)
def test_each_supported_architecture_runs_in_llama_cpp(
    service: TrainingService, kind: str, tmp_path: Path
) -> None:
    folder = tiny_random_lm(
        kind, service.models.resolve("flextrain/tiny-llama").path, tmp_path / kind
    )
    # A neutral name: llama.cpp reads family names (phi3, ...) in general.name as hints.
    written = write_gguf(folder, tmp_path / f"{kind}.gguf", "f16", name="tiny")
    report = check_in_llama_cpp(written.path, load_reference(folder), "f16")
    assert report.passed, report.problems
    assert report.tokenizer_match
    assert report.conversion_diff is not None
    assert report.conversion_diff < 0.05
    # The leading-space difference of Metaspace tokenizers is said in the report.
    assert bool(report.notes) == (kind in ("llama-spm", "mistral-spm"))


# Text where SentencePiece-style tokenizers are easiest to get wrong: spaces at the
# start, runs of spaces, characters missing from the vocabulary (byte fallback),
# newlines and tabs, digits.
TRICKY_TEXTS = (
    "Hello world",
    "  two leading spaces",
    "trailing space ",
    "double  space and   triple",
    "\u00e9 \u65e5\u672c \U0001f642 na\u00efve",
    "line one\nline two\ttab",
    "3.14159 and 42",
    "the weather was lovely today",
)


@pytest.mark.parametrize("kind", SENTENCEPIECE_KINDS)
def test_sentencepiece_tokenizers_cut_text_as_transformers_does(
    service: TrainingService, kind: str, tmp_path: Path
) -> None:
    from llama_cpp import Llama
    from transformers import AutoTokenizer

    folder = tiny_random_lm(
        kind, service.models.resolve("flextrain/tiny-llama").path, tmp_path / kind
    )
    written = write_gguf(folder, tmp_path / f"{kind}.gguf", "f16", name="tiny")
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    # transformers' Metaspace puts no "\u2581" before text that starts with a space;
    # llama.cpp, as SentencePiece itself, always does: that text gets one piece more.
    metaspace = type(tokenizer.backend_tokenizer.pre_tokenizer).__name__ == "Metaspace"
    llm = Llama(model_path=str(written.path), vocab_only=True, verbose=False)
    try:
        for text in TRICKY_TEXTS:
            as_read = " " + text if metaspace and text.startswith(" ") else text
            want = tokenizer(as_read)["input_ids"]
            got = llm.tokenize(text.encode(), add_bos=True, special=False)
            assert got == want, (text, tokenizer.convert_ids_to_tokens(want), got)
    finally:
        llm.close()
