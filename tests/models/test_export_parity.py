"""GGUF export: a trained job's model as one GGUF file, read back by transformers' own
GGUF loader (written independently of flextrain) and compared with the trained model.

One tiny LoRA causal LM, trained on the bundled instructions (so it saves a chat
template), is exported at f16 and q8_0; each supported architecture is written from a
tiny random model; the parity check is shown to fail on a file with a wrong weight
layout; bad requests leave nothing behind.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gguf
import pytest
from safetensors import SafetensorError
from typer.testing import CliRunner

from flextrain.cli.main import app
from flextrain.data.prepare import DEFAULT_CHAT_TEMPLATE
from flextrain.jobs.store import TrainingJob
from flextrain.models import gguf_file
from flextrain.models.export_gguf import export_as
from flextrain.models.gguf_file import GGUFConversionError, supported_architecture, write_gguf
from flextrain.models.gguf_llama_cpp import llama_cpp_available
from flextrain.models.gguf_parity import check_gguf
from flextrain.models.trained import OutputExistsError
from flextrain.service import TrainingService
from flextrain.settings import Settings
from tests.models.after_helpers import (
    ARCHITECTURES,
    SENTENCEPIECE_KINDS,
    tiny_random_lm,
    train_tiny_helper,
)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, models_cache: Path) -> Iterator[Any]:
    home = tmp_path_factory.mktemp("gguf") / "home"
    svc = TrainingService(Settings(home=home, models_cache=models_cache))
    yield svc
    svc.engine.dispose()


@pytest.fixture(scope="module")
def lora_lm(service: TrainingService) -> TrainingJob:
    return train_tiny_helper(service)


def test_a_lora_job_exports_gguf_files_that_answer_as_it_does(
    service: TrainingService, lora_lm: TrainingJob, tmp_path: Path
) -> None:
    for quant, file_type in (("f16", gguf.LlamaFileType.MOSTLY_F16), ("q8_0", 7)):
        out = tmp_path / quant
        result = export_as(service, lora_lm.job_id, out, format="gguf", quant=quant)
        name = f"tiny-helper-{quant}.gguf"
        assert (result.format, result.quant, result.weights) == ("gguf", quant, "merged")
        # With the flextrain[gguf] extra installed (after `make test-export`), llama.cpp's
        # own report is written too.
        in_llama_cpp = ["parity-llama-cpp.json"] if llama_cpp_available() else []
        assert result.files == ["README.md", "flextrain.json", *in_llama_cpp, "parity.json", name]
        parity = result.parity
        assert parity is not None
        assert parity.passed, parity.problems
        assert parity.tokenizer_match
        assert parity.chat_template_match
        assert parity.greedy_match
        assert parity.top1_agreement >= 0.95
        assert parity.conversion_diff is not None
        assert parity.conversion_diff < 1e-3
        assert json.loads((out / "parity.json").read_text())["passed"] is True

        reader = gguf.GGUFReader(str(out / name))
        assert reader.fields["general.architecture"].contents() == "llama"
        assert reader.fields["general.file_type"].contents() == int(file_type)
        # The template training rendered the instructions with (the base had none).
        assert reader.fields["tokenizer.chat_template"].contents() == DEFAULT_CHAT_TEMPLATE
        card = (out / "README.md").read_text()
        assert "library_name: gguf" in card
        assert f"llama-cli -m {name}" in card
        assert "top-1 agreement" in card
    f16 = (tmp_path / "f16" / "tiny-helper-f16.gguf").stat().st_size
    q8 = (tmp_path / "q8_0" / "tiny-helper-q8_0.gguf").stat().st_size
    assert q8 < 0.7 * f16


def test_the_cli_exports_and_reports_parity(
    service: TrainingService,
    lora_lm: TrainingJob,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLEXTRAIN_HOME", str(service.settings.home))
    monkeypatch.setenv("FLEXTRAIN_MODELS_CACHE", str(service.settings.models_cache))
    monkeypatch.setenv("COLUMNS", "300")
    runner = CliRunner()
    out = tmp_path / "cli"
    args = ["models", "export", lora_lm.job_id, str(out), "--format", "gguf", "--quant", "f16"]
    done = runner.invoke(app, args)
    text = " ".join(done.output.split())
    assert done.exit_code == 0, text
    assert "Parity (transformers, f16, " in text
    assert "tokenizer and chat template match." in text
    refused = runner.invoke(
        app, ["models", "export", lora_lm.job_id, str(tmp_path / "x"), "--format", "onnx"]
    )
    assert refused.exit_code == 2
    assert "--format: 'onnx' is not vllm, gguf or ollama. Fix:" in refused.output
    refused = runner.invoke(
        app, ["models", "export", lora_lm.job_id, str(tmp_path / "y"), "--quant", "q8_0"]
    )
    assert refused.exit_code == 2
    assert "quant 'q8_0' is for --format gguf" in " ".join(refused.output.split())


@pytest.mark.parametrize("kind", ARCHITECTURES + SENTENCEPIECE_KINDS)
def test_each_supported_architecture_converts_exactly(
    service: TrainingService, kind: str, tmp_path: Path
) -> None:
    base = service.models.resolve("flextrain/tiny-llama").path
    folder = tiny_random_lm(kind, base, tmp_path / kind)
    written = write_gguf(folder, tmp_path / "out" / f"{kind}.gguf", "f16", name="tiny")
    assert written.tensor_types["F32"] > 0  # norms (and Qwen2's biases) stay float32
    report = check_gguf(written.path, folder, "f16")
    assert report.passed, report.problems
    assert report.conversion_diff is not None
    assert report.conversion_diff < 1e-3
    assert report.tokenizer_match
    # transformers' reader gaps, said aloud
    assert bool(report.notes) == (kind in ("qwen3", "gemma2", "gemma2-spm"))


def test_the_check_fails_a_file_with_a_wrong_weight_layout(
    service: TrainingService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the rotary row reordering llama.cpp needs, transformers' loader (which
    undoes it) reads scrambled query and key weights: the check must say so."""
    folder = tiny_random_lm(
        "llama", service.models.resolve("flextrain/tiny-llama").path, tmp_path / "m"
    )
    monkeypatch.setitem(gguf_file._ARCHES, "LlamaForCausalLM", gguf_file._Arch("LLAMA", False))
    written = write_gguf(folder, tmp_path / "bad.gguf", "f16", name="bad")
    report = check_gguf(written.path, folder, "f16")
    assert not report.passed
    assert any("weight-layout bug, not rounding" in p for p in report.problems), report.problems
    assert report.conversion_diff is not None
    assert report.conversion_diff > 0.01


def test_what_cannot_be_exported_says_why_and_leaves_nothing(
    service: TrainingService, lora_lm: TrainingJob, tmp_path: Path
) -> None:
    with pytest.raises(
        GGUFConversionError,
        match=r"architecture GPT2LMHeadModel cannot be converted to GGUF here\. Supported: "
        r"Gemma2ForCausalLM, LlamaForCausalLM, MistralForCausalLM, Phi3ForCausalLM, "
        r"Qwen2ForCausalLM, Qwen3ForCausalLM\. Fix:",
    ):
        supported_architecture({"architectures": ["GPT2LMHeadModel"]})
    a_file = tmp_path / "taken"
    a_file.write_text("not a folder")
    with pytest.raises(OutputExistsError, match="is a file"):
        export_as(service, lora_lm.job_id, a_file, format="gguf")
    assert a_file.read_text() == "not a folder"
    if importlib.util.find_spec("llama_cpp") is None:  # the `gguf` extra is not installed
        target = tmp_path / "q4"
        with pytest.raises(
            GGUFConversionError,
            match=r"q4_k_m is written by llama.cpp's quantiser, which is not installed\. "
            r"Fix: pip install 'flextrain\[gguf\]'",
        ):
            export_as(service, lora_lm.job_id, target, format="gguf", quant="q4_k_m")
        assert not target.exists()
    # Weights cut short: the writer fails, and neither the file nor its partial stays.
    folder = Path(
        shutil.copytree(service.models.resolve("flextrain/tiny-llama").path, tmp_path / "cut")
    )
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    out = tmp_path / "cut-out"
    with pytest.raises(SafetensorError):
        write_gguf(folder, out / "cut.gguf", "q8_0", name="cut")
    assert list(out.iterdir()) == []


def test_a_tokenizer_llama_cpp_cannot_cut_alike_is_refused_and_leaves_nothing(
    service: TrainingService, tmp_path: Path
) -> None:
    folder = tiny_random_lm(
        "llama-spm", service.models.resolve("flextrain/tiny-llama").path, tmp_path / "m"
    )
    spec = json.loads((folder / "tokenizer.json").read_text())
    # A normalizer llama.cpp would not repeat (Unicode NFKC before the space marks).
    spec["normalizer"] = {"type": "Sequence", "normalizers": [{"type": "NFKC"}]}
    (folder / "tokenizer.json").write_text(json.dumps(spec))
    out = tmp_path / "out"
    with pytest.raises(GGUFConversionError, match=r"normalizes text in a way llama.cpp does not"):
        write_gguf(folder, out / "m.gguf", "f16", name="m")
    assert list(out.iterdir()) == []
    # WordPiece (a BERT tokenizer) is not BPE at all.
    bert = service.models.resolve("flextrain/tiny-bert").path
    shutil.copy(bert / "tokenizer.json", folder / "tokenizer.json")
    with pytest.raises(GGUFConversionError, match=r"this one is WordPiece\. Fix: export as"):
        write_gguf(folder, out / "m.gguf", "f16", name="m")
    assert list(out.iterdir()) == []


def test_a_safetensors_export_is_complete_and_answers_as_the_job(
    service: TrainingService, lora_lm: TrainingJob, tmp_path: Path
) -> None:
    merged = export_as(service, lora_lm.job_id, tmp_path / "merged")
    adapter = export_as(service, lora_lm.job_id, tmp_path / "adapter", adapter_only=True)
    for result in (merged, adapter):
        report = result.parity
        assert report is not None
        assert report.passed, report.problems
        assert (report.quant, report.tokenizer_match, report.chat_template_match) == (
            "safetensors",
            True,
            True,
        )
        assert report.relative_diff < 1e-3  # a merge in float32: float noise only
        assert "parity.json" in result.files
    assert "generation_config.json" in merged.files
    assert "adapter_model.safetensors" in adapter.files


def test_verify_finds_what_an_export_lost_or_changed(
    service: TrainingService, lora_lm: TrainingJob, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from safetensors.torch import load_file, save_file

    gguf_out = tmp_path / "gguf"
    export_as(service, lora_lm.job_id, gguf_out, format="gguf", quant="q8_0")
    again = service.verify_export(gguf_out / "tiny-helper-q8_0.gguf")
    assert (again.passed, again.quant) == (True, "q8_0")

    folder = tmp_path / "folder"
    export_as(service, lora_lm.job_id, folder)
    (folder / "generation_config.json").unlink()
    lost = service.verify_export(folder)
    assert not lost.passed
    assert lost.problems == ["the folder lacks generation_config.json"]

    export_as(service, lora_lm.job_id, folder, force=True)
    weights = load_file(str(folder / "model.safetensors"))
    name = next(k for k in weights if k.endswith("layers.0.self_attn.v_proj.weight"))
    weights[name] = weights[name] * 5  # an export gone wrong: the model answers otherwise
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    changed = service.verify_export(folder)
    assert not changed.passed
    assert any("of the logits' spread, over 0.01" in p for p in changed.problems), changed.problems

    monkeypatch.setenv("FLEXTRAIN_HOME", str(service.settings.home))
    monkeypatch.setenv("FLEXTRAIN_MODELS_CACHE", str(service.settings.models_cache))
    monkeypatch.setenv("COLUMNS", "300")
    done = CliRunner().invoke(app, ["models", "verify", str(folder)])
    text = " ".join(done.output.split())
    assert done.exit_code == 1, text
    assert f"Parity of {folder} (transformers, safetensors): FAILED" in text
    assert "problem: max logit difference" in text
    done = CliRunner().invoke(app, ["models", "verify", str(tmp_path / "nothing")])
    assert done.exit_code == 2
    assert "is no export (not a folder or a .gguf file). Fix:" in " ".join(done.output.split())


def test_an_ollama_export_has_the_gguf_and_a_modelfile_with_the_template(
    service: TrainingService, lora_lm: TrainingJob, tmp_path: Path
) -> None:
    out = tmp_path / "ollama"
    result = export_as(service, lora_lm.job_id, out, format="ollama")
    assert result.format == "ollama"
    assert result.parity is not None
    assert result.parity.passed, result.parity.problems
    assert "Modelfile" in result.files
    text = (out / "Modelfile").read_text()
    assert text.startswith('FROM ./tiny-helper-q8_0.gguf\nTEMPLATE """{{ range .Messages }}')
    assert 'PARAMETER stop "</s>"' in text
    assert "ollama create tiny-helper -f Modelfile" in (out / "README.md").read_text()
