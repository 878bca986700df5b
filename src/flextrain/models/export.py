"""Merge a LoRA adapter into its base model; export a trained model as a clean folder.

`merge` folds the adapter's low-rank update into the base weights
(`merge_and_unload`) and saves a plain transformers model: it loads and runs
without peft, at the base model's speed. `export` writes what someone else
needs to use the model and nothing else: the weights (merged, unless the
adapter alone is asked for), the tokenizer, and a README.md model card saying
where it came from (base model, data version and content hash, config,
metrics, flextrain version). Trainer leftovers (`training_args.bin`, a pickle)
stay behind.

Either is written to a temporary sibling folder and renamed into place at the
end, so a failure (disk full, interrupted) never leaves half a model where a
model is expected; a folder that already holds something is replaced only
when asked (`force`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field

from flextrain.data.registry import DatasetFormatError, DatasetNotFoundError
from flextrain.models.gguf_parity import ParityReport
from flextrain.models.trained import (
    META_FILE,
    AfterTrainingError,
    CompletedJobs,
    OutputExistsError,
    TrainedModel,
    load_tokenizer,
    load_trained,
    quiet_transformers,
    trained_model,
)

PIPELINE_TAGS = {
    "causal_lm": "text-generation",
    "sequence_classification": "text-classification",
    "masked_lm": "fill-mask",
}
# Never exported: the Trainer's pickled arguments, pickled weights, files we rewrite.
_LEFT_BEHIND = {"training_args.bin", META_FILE, "README.md"}
_PICKLES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
# vllm: the safetensors folder (transformers and vLLM load it); gguf: one GGUF file
# (llama.cpp); ollama: the GGUF file and a Modelfile for `ollama create`.
ExportFormat = Literal["vllm", "gguf", "ollama"]
EXPORT_FORMATS: tuple[ExportFormat, ...] = ("vllm", "gguf", "ollama")


class MergeResult(BaseModel):
    job_id: str
    path: str = Field(description="Folder of the merged model (safetensors, tokenizer).")
    base_model: str
    files: list[str]
    size_bytes: int


class ExportResult(BaseModel):
    job_id: str
    path: str
    weights: Literal["merged", "adapter", "full"] = Field(
        description="merged: LoRA folded into the base; adapter: the peft adapter alone "
        "(load it on the base model); full: the job's own full weights."
    )
    format: ExportFormat = Field("vllm", description="What the folder is laid out for.")
    quant: str | None = Field(None, description="The GGUF file's weight type (gguf only).")
    file: str | None = Field(None, description="The GGUF file (gguf only).")
    parity: ParityReport | None = Field(
        None, description="How the exported file answers against the trained model."
    )
    llama_cpp: ParityReport | None = Field(
        None,
        description="gguf, ollama: the same check run in llama.cpp itself (when the "
        "flextrain[gguf] extra is installed).",
    )
    dataset_id: str
    dataset_hash: str | None = Field(description="SHA-256 of the data the job trained on.")
    files: list[str]
    size_bytes: int


def flextrain_version() -> str:
    return package_version("flextrain")


# -- merge ------------------------------------------------------------------------------
def merge(
    service: CompletedJobs,
    job_id: str,
    out_dir: str | Path | None = None,
    *,
    force: bool = False,
) -> MergeResult:
    """Merge a lora_adaptation job's adapter into its base and save it (safetensors).

    Without `out_dir` the merged model goes to the job's folder (jobs/ID/merged) and
    a previous merge there is replaced; a given `out_dir` that is not empty is
    refused unless `force`.
    """
    model = trained_model(service, job_id, "merge")
    if not model.is_adapter:
        raise AfterTrainingError(
            f"Job {job_id} is {model.job.training_type.value}: its model folder already holds "
            "full weights, there is no adapter to merge. Fix: use `flextrain models export "
            f"{job_id} OUT_DIR` to copy it out, or merge a lora_adaptation job."
        )
    target = Path(out_dir) if out_dir else service.environment(job_id).root / "merged"
    _refuse_own_folder(model, target)
    with staged(target, replace=force or out_dir is None) as folder:
        _write_merged(model, folder)
        _write_lineage(service, model, folder, weights="merged")
    files, size = _listing(target)
    return MergeResult(
        job_id=job_id,
        path=str(target.resolve()),
        base_model=model.base_model,
        files=files,
        size_bytes=size,
    )


def _write_merged(model: TrainedModel, folder: Path) -> None:
    tokenizer = load_tokenizer(model)
    merged = load_trained(model, tokenizer).merge_and_unload()
    with quiet_transformers():
        merged.save_pretrained(str(folder))  # transformers 5 writes safetensors only
    tokenizer.save_pretrained(str(folder))


# -- export -----------------------------------------------------------------------------
def export(
    service: CompletedJobs,
    job_id: str,
    out_dir: str | Path,
    *,
    adapter_only: bool = False,
    force: bool = False,
    full_config: bool = False,
    verify: bool = True,
) -> ExportResult:
    """Write the job's model to `out_dir` with a model card; see the module docstring.

    `full_config` puts every config field in the card, not only those that differ
    from the defaults. `verify` loads the written folder on its own and compares it
    with the trained model (flextrain.models.export_check); a folder that fails is
    not written. (A GGUF file: flextrain.models.export_gguf.)
    """
    model = trained_model(service, job_id, "export")
    if adapter_only and not model.is_adapter:
        raise AfterTrainingError(
            f"adapter_only: job {job_id} is {model.job.training_type.value} and has no "
            "adapter; its full weights are exported. Fix: drop --adapter-only."
        )
    weights: Literal["merged", "adapter", "full"] = (
        "full" if not model.is_adapter else "adapter" if adapter_only else "merged"
    )
    target = Path(out_dir)
    _refuse_own_folder(model, target)
    dataset_hash, hash_note = dataset_content_hash(service, model)
    with staged(target, replace=force) as folder:
        if weights == "merged":
            _write_merged(model, folder)
        else:
            _copy_clean(model.folder, folder)
        _write_lineage(service, model, folder, weights=weights)
        card = model_card(
            model,
            weights=weights,
            dataset_hash=dataset_hash,
            hash_note=hash_note,
            config=_card_config(model, full_config),
            version=flextrain_version(),
            created=datetime.now(UTC),
        )
        (folder / "README.md").write_text(card, encoding="utf-8")
        report = None
        if verify:
            from flextrain.models.export_check import (
                PARITY_FILE,
                refuse_unless_passed,
                verify_folder,
            )

            report = verify_folder(model, folder)
            refuse_unless_passed(report, job_id, "safetensors")
            (folder / PARITY_FILE).write_text(report.model_dump_json(indent=2))
    files, size = _listing(target)
    return ExportResult(
        job_id=job_id,
        path=str(target.resolve()),
        weights=weights,
        parity=report,
        dataset_id=_dataset_name(model),
        dataset_hash=dataset_hash,
        files=files,
        size_bytes=size,
    )


def _refuse_own_folder(model: TrainedModel, target: Path) -> None:
    """Replacing the job's model folder, or a folder holding it, would destroy the very
    model being written (with force, the whole job)."""
    folder = model.folder.resolve()
    target = target.expanduser().resolve()
    if target == folder or target in folder.parents or folder in target.parents:
        raise AfterTrainingError(
            f"{target} is or holds job {model.job.job_id}'s own model folder {folder}; writing "
            "there would replace the model being read. Fix: choose a folder elsewhere."
        )


def _copy_clean(source: Path, folder: Path) -> None:
    """The model folder's files a user needs: no Trainer pickle, no pickled weights."""
    for path in sorted(source.iterdir()):
        if path.is_file() and path.name not in _LEFT_BEHIND and path.suffix not in _PICKLES:
            shutil.copy2(path, folder / path.name)


def _dataset_name(model: TrainedModel) -> str:
    dataset_id = model.job.dataset_id
    if model.job.dataset_version:  # a pinned `name@version` is shown as its name
        return dataset_id.rpartition("@")[0] or dataset_id
    return dataset_id


def dataset_content_hash(service: CompletedJobs, model: TrainedModel) -> tuple[str | None, str]:
    """The SHA-256 of the data the job trained on, and how it was obtained.

    A registered version is named by the hash of its canonical content. A file read
    as it is (a bundled demo, a path) has no version; the hash of its bytes now is
    the best there is, and the card says so.
    """
    if model.job.dataset_version:
        return model.job.dataset_version, "content SHA-256 of the registered version"
    try:
        path = service.get_dataset(model.job.dataset_id).path
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    except (DatasetNotFoundError, DatasetFormatError, OSError):
        return None, "unknown: the data is no longer readable"
    return digest.hexdigest(), (
        "SHA-256 of the file's bytes at export time (the data was not a registered version, "
        "so it may have changed since training)"
    )


def _write_lineage(
    service: CompletedJobs, model: TrainedModel, folder: Path, *, weights: str
) -> None:
    """flextrain.json of the written model: what it is and where it came from."""
    job = model.job
    lineage = {
        "job_id": job.job_id,
        "training_type": job.training_type.value,
        "objective": model.objective,
        "base_model": model.base_model,
        "base_model_path": str(model.base_path),
        "adapter": weights == "adapter",
        "merged": weights == "merged",
        "labels": model.labels,
        "dataset_id": job.dataset_id,
        "dataset_version": job.dataset_version,
        "metrics": {k: v for k, v in job.metrics.items() if isinstance(v, int | float)},
        "config": job.typed_config().model_dump(mode="json"),
        "flextrain_version": flextrain_version(),
        "created_at": datetime.now(UTC).isoformat(),
    }
    (folder / META_FILE).write_text(json.dumps(lineage, indent=2))


# -- the model card ---------------------------------------------------------------------
def _card_config(model: TrainedModel, full: bool) -> dict[str, Any]:
    """The job's config: every field, or those set away from their defaults."""
    config = model.job.typed_config()
    return config.model_dump(mode="json", exclude_defaults=not full)


def model_card(
    model: TrainedModel,
    *,
    weights: str,
    dataset_hash: str | None,
    hash_note: str,
    config: dict[str, Any],
    version: str,
    created: datetime,
    usage: tuple[str, list[str]] | None = None,
    library: str | None = None,
) -> str:
    """README.md: Hugging Face front matter, then lineage, config, metrics, usage.

    `usage` (a code block's language and lines) replaces the transformers snippet, and
    `library` the front matter's library_name, for files other runtimes load (GGUF)."""
    job = model.job
    dataset = _dataset_name(model)
    ttype = job.training_type.value
    front: dict[str, Any] = {
        "base_model": model.base_model,
        "library_name": library or ("peft" if weights == "adapter" else "transformers"),
        "pipeline_tag": PIPELINE_TAGS[model.objective],
        "tags": ["flextrain", ttype, *(["lora"] if model.is_adapter else [])],
        "datasets": [dataset],
    }
    metrics = {k: v for k, v in sorted(job.metrics.items()) if isinstance(v, int | float)}
    what = {
        "merged": "LoRA adapter merged into the base weights (loads without peft)",
        "adapter": "the LoRA adapter only; load it on the base model with peft",
        "full": "the trained model's full weights",
    }[weights]
    lines = [
        "---",
        yaml.safe_dump(front, sort_keys=False).rstrip(),
        "---",
        "",
        f"# {job.run_name or job.job_id}",
        "",
        f"Trained with flextrain {version} (job `{job.job_id}`), exported "
        f"{created:%Y-%m-%d %H:%M} UTC.",
        "",
        f"- **Base model:** `{model.base_model}`",
        f"- **Training type:** {ttype} ({model.objective})",
        f"- **Weights:** {what}",
        f"- **Dataset:** `{dataset}`"
        + (f", version `{job.dataset_version[:12]}`" if job.dataset_version else ""),
        f"- **Dataset hash:** `{dataset_hash or 'unknown'}` ({hash_note})",
    ]
    if model.labels:
        lines.append(f"- **Labels:** {', '.join(model.labels)}")
    lines += [
        f"- **flextrain version:** {version}",
        "",
        "## Training config",
        "",
        "```yaml",
        yaml.safe_dump(config, sort_keys=True).rstrip(),
        "```",
        "",
        "## Final metrics",
        "",
    ]
    if metrics:
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.6g} |" for k, v in metrics.items()]
    else:
        lines.append("None recorded.")
    language, code = usage or ("python", _usage(model, weights))
    lines += ["", "## Use", "", f"```{language}", *code, "```", ""]
    return "\n".join(lines)


def _usage(model: TrainedModel, weights: str) -> list[str]:
    auto = {
        "causal_lm": "AutoModelForCausalLM",
        "masked_lm": "AutoModelForMaskedLM",
        "sequence_classification": "AutoModelForSequenceClassification",
    }[model.objective]
    if weights == "adapter" and model.quantization:
        # QLoRA: the adapter corrects the 4-bit weights it trained on; load them so.
        quant = model.quantization
        return [
            "import torch",
            "from peft import PeftModel",
            f"from transformers import {auto}, AutoTokenizer, BitsAndBytesConfig",
            "",
            "four_bit = BitsAndBytesConfig(",
            f'    load_in_4bit=True, bnb_4bit_quant_type="{quant["quant_type"]}",',
            f"    bnb_4bit_use_double_quant={quant['double_quant']},",
            f"    bnb_4bit_compute_dtype=torch.{quant['compute_dtype']},",
            f'    llm_int8_skip_modules=[r"{quant.get("kept", "")}"],',
            ")",
            f'base = {auto}.from_pretrained("{model.base_model}", quantization_config=four_bit)',
            'model = PeftModel.from_pretrained(base, "path/to/this/folder")',
            'tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")',
        ]
    if weights == "adapter":
        return [
            "from peft import PeftModel",
            f"from transformers import {auto}, AutoTokenizer",
            "",
            f'base = {auto}.from_pretrained("{model.base_model}")',
            'model = PeftModel.from_pretrained(base, "path/to/this/folder")',
            'tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")',
        ]
    return [
        f"from transformers import {auto}, AutoTokenizer",
        "",
        f'model = {auto}.from_pretrained("path/to/this/folder")',
        'tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")',
    ]


# -- writing a folder all at once -------------------------------------------------------
@contextmanager
def staged(target: Path, *, replace: bool) -> Iterator[Path]:
    """A temporary sibling of `target` to write into, renamed to `target` when the block
    ends without error (and removed when it does not). An existing non-empty `target`
    is refused unless `replace`; it is then swapped out only after the new folder is
    complete."""
    target = target.expanduser().resolve()
    if target.exists() and not target.is_dir():
        raise OutputExistsError(
            f"{target} is a file. Fix: name a folder (new or empty) to write the model to."
        )
    if target.is_dir() and any(target.iterdir()) and not replace:
        raise OutputExistsError(
            f"{target} is not empty; nothing was written. Fix: choose a new or empty folder, "
            "or pass --force (force: true) to replace what is there."
        )
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    except OSError as exc:
        raise _unwritable(target, exc) from None
    try:
        yield staging
        staging.chmod(0o755)  # mkdtemp makes it private; a model folder is for sharing
        if target.exists():
            old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(target, old)
            os.replace(staging, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, target)
    except OSError as exc:  # disk full, permissions, a folder that vanished
        raise _unwritable(target, exc) from None
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _unwritable(target: Path, exc: OSError) -> AfterTrainingError:
    return AfterTrainingError(
        f"Cannot write {target}: {exc.strerror or exc}; nothing was left there. Fix: choose a "
        "folder you can write to, on a disk with room for the model."
    )


def _listing(folder: Path) -> tuple[list[str], int]:
    files = sorted(p.name for p in folder.iterdir() if p.is_file())
    return files, sum((folder / name).stat().st_size for name in files)
