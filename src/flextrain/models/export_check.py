"""Check an export against the job that trained it: complete for its runtime, and
answering as the trained model does.

A safetensors folder (the `vllm` format) must hold what `vllm serve` and
transformers load from the folder alone: config, weights, tokenizer, the chat
template the model was trained with, and for a language model its generation
config; an adapter folder the adapter's config and weights. It is then loaded
from that folder alone and compared with the trained model (base + adapter for a
LoRA job) on the fixed prompts: a merge or copy that went wrong shows here.

`verify_export` finds the job from the export's flextrain.json, so any export can
be checked again later (`flextrain models verify EXPORT`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flextrain.models.gguf_llama_cpp import check_in_llama_cpp, llama_cpp_available
from flextrain.models.gguf_parity import (
    THRESHOLDS,
    ParityReport,
    check_gguf,
    compare,
    judged,
    not_compared,
    prompt_ids,
)
from flextrain.models.trained import (
    META_FILE,
    AfterTrainingError,
    CompletedJobs,
    TrainedModel,
    auto_class,
    load_base_weights,
    load_tokenizer,
    load_trained,
    quiet_transformers,
    trained_model,
)

PARITY_FILE = "parity.json"
LLAMA_CPP_PARITY_FILE = "parity-llama-cpp.json"


class ParityError(AfterTrainingError):
    """The export does not answer as the trained model does (or lacks files)."""

    code = "export_parity"
    field = "format"


def refuse_unless_passed(report: ParityReport, job_id: str, what: str) -> None:
    """Raise ParityError, with the numbers, for a report that did not pass: an export
    that answers differently is worse than none, so nothing is written."""
    if not report.passed:
        raise ParityError(
            f"The {what} export of job {job_id} does not answer as the trained model: "
            f"{'; '.join(report.problems)}. Nothing was written. Fix: report it (with the "
            "numbers above); --no-verify writes it unchecked."
        )


# general.file_type of a GGUF file -> the quant flextrain names it by.
_GGUF_FILE_TYPES = {1: "f16", 7: "q8_0", 15: "q4_k_m"}


def missing_files(folder: Path, *, objective: str, adapter: bool, chat: bool) -> list[str]:
    """What the folder lacks for transformers and vLLM to load it on its own."""
    names = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
    wanted: list[tuple[str, tuple[str, ...]]] = [
        (
            "the tokenizer (tokenizer.json or tokenizer.model)",
            ("tokenizer.json", "tokenizer.model"),
        ),
        ("tokenizer_config.json", ("tokenizer_config.json",)),
    ]
    if adapter:
        wanted += [
            ("adapter_config.json", ("adapter_config.json",)),
            ("adapter_model.safetensors", ("adapter_model.safetensors",)),
        ]
    else:
        wanted += [
            ("config.json", ("config.json",)),
            (
                "safetensors weights (model.safetensors or its index)",
                ("model.safetensors", "model.safetensors.index.json"),
            ),
        ]
        if objective == "causal_lm":
            wanted.append(("generation_config.json", ("generation_config.json",)))
    missing = [label for label, options in wanted if not names.intersection(options)]
    if chat and not _has_template(folder, names):
        missing.append("the chat template the model was trained with (chat_template.jinja)")
    return missing


def _has_template(folder: Path, names: set[str]) -> bool:
    if "chat_template.jinja" in names:
        return True
    try:
        config = json.loads((folder / "tokenizer_config.json").read_text())
    except (OSError, ValueError):
        return False
    return bool(config.get("chat_template"))


def verify_folder(model: TrainedModel, folder: Path) -> ParityReport:
    """The safetensors export in `folder`, complete and loaded on its own, against the
    trained model."""
    from transformers import AutoTokenizer

    tokenizer = load_tokenizer(model)
    adapter = (folder / "adapter_config.json").is_file()
    chat = bool(getattr(tokenizer, "chat_template", None))
    missing = missing_files(folder, objective=model.objective, adapter=adapter, chat=chat)
    if missing:  # loading would fail, or load something else than was trained
        problems = [f"the folder lacks {m}" for m in missing]
        return not_compared("transformers", str(folder), "safetensors", problems)
    reference = load_trained(model, tokenizer)
    texts, ids, templated = prompt_ids(tokenizer)
    limits = THRESHOLDS["safetensors"]
    with quiet_transformers():
        if adapter:
            from peft import PeftModel

            candidate = PeftModel.from_pretrained(load_base_weights(model, tokenizer), str(folder))
        else:
            import torch

            candidate = auto_class(model.objective).from_pretrained(
                str(folder), dtype=torch.float32, use_safetensors=True
            )
        exported_tokenizer = AutoTokenizer.from_pretrained(str(folder))
    candidate.eval()
    tokenizer_match = all(
        exported_tokenizer(t, add_special_tokens=not templated)["input_ids"] == i
        for t, i in zip(texts, ids, strict=True)
    )
    template_match = (exported_tokenizer.chat_template or None) == (tokenizer.chat_template or None)
    measured = compare(reference, candidate, ids, greedy=model.objective == "causal_lm")
    report = ParityReport(
        runtime="transformers",
        file=str(folder),
        quant="safetensors",
        **measured.model_dump(),
        tokenizer_match=tokenizer_match,
        chat_template_match=template_match,
        thresholds=limits,
        passed=True,
    )
    return judged(report)


def verify_export(
    service: CompletedJobs, path: str | Path, *, job_id: str | None = None
) -> ParityReport:
    """Check an export made earlier: a GGUF file (or a folder holding one) or a
    safetensors folder, against the job its flextrain.json names (which must be
    `job_id`, when given)."""
    expected = job_id
    target = Path(path).expanduser().resolve()
    ggufs = [target] if target.suffix == ".gguf" else sorted(target.glob("*.gguf"))
    folder = target.parent if target.suffix == ".gguf" else target
    if not folder.is_dir() or (target.suffix == ".gguf" and not target.is_file()):
        raise AfterTrainingError(
            f"{target} is no export (not a folder or a .gguf file). Fix: give the folder "
            "`flextrain models export` wrote, or the .gguf file in it."
        )
    try:
        lineage = json.loads((folder / META_FILE).read_text())
        named = str(lineage["job_id"])
    except (OSError, ValueError, KeyError):
        raise AfterTrainingError(
            f"{folder} has no {META_FILE} naming the job that trained it, so there is nothing "
            "to compare with. Fix: verify a folder flextrain exported."
        ) from None
    if expected is not None and expected != named:
        raise AfterTrainingError(
            f"{folder} was exported from job {named}, not {expected}. Fix: verify it "
            f"through job {named}."
        )
    model = trained_model(service, named, "verify")
    if len(ggufs) > 1:
        raise AfterTrainingError(
            f"{folder} holds several GGUF files ({', '.join(p.name for p in ggufs)}). Fix: name "
            "the one to verify."
        )
    if not ggufs:
        return verify_folder(model, folder)
    return _verify_gguf(model, ggufs[0])


def _verify_gguf(model: TrainedModel, file: Path) -> ParityReport:
    import gguf

    kind = int(gguf.GGUFReader(str(file)).fields["general.file_type"].contents())
    quant = _GGUF_FILE_TYPES.get(kind)
    if quant is None:
        raise AfterTrainingError(
            f"{file.name} has GGUF file type {kind}, which flextrain does not write. Fix: "
            "verify a file flextrain exported (f16, q8_0 or q4_k_m)."
        )
    tokenizer = load_tokenizer(model)

    def reference() -> tuple[Any, Any]:
        loaded = load_trained(model, tokenizer)
        if model.is_adapter:
            loaded = loaded.merge_and_unload()  # the file holds the merged weights
        return loaded, tokenizer

    report = check_gguf(file, reference(), quant)  # type: ignore[arg-type]
    if report.passed and llama_cpp_available():
        # The runtime itself, too (each check rounds its reference: a fresh one each).
        in_llama_cpp = check_in_llama_cpp(file, reference(), quant)  # type: ignore[arg-type]
        if not in_llama_cpp.passed:
            return in_llama_cpp
        notes = [*report.notes, "llama.cpp agrees too (runtime check passed)"]
        report = report.model_copy(update={"notes": notes})
    return report
