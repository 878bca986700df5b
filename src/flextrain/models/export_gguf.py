"""`export --format gguf`: a completed job's model as one GGUF file, checked to answer
as the trained model does.

A LoRA job is merged into its base first (llama.cpp runs one set of weights). The
folder written holds the GGUF file, a README.md model card (lineage, config,
metrics, how to run it), flextrain.json and parity.json, the parity check's
report (and parity-llama-cpp.json: the same check run in llama.cpp, when the
`flextrain[gguf]` extra is installed). The check runs by default; when it fails,
nothing is written and the error gives the numbers, since a file that answers
differently is worse than none.
`verify=False` skips it (the card then says it was not checked).
"""

from __future__ import annotations

import ctypes
import re
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from flextrain.models.export import (
    ExportFormat,
    ExportResult,
    _card_config,
    _dataset_name,
    _listing,
    _refuse_own_folder,
    _write_lineage,
    _write_merged,
    dataset_content_hash,
    export,
    flextrain_version,
    model_card,
    staged,
)
from flextrain.models.export_check import (
    LLAMA_CPP_PARITY_FILE,
    PARITY_FILE,
    refuse_unless_passed,
)
from flextrain.models.gguf_file import (
    GGUF_QUANTS,
    GGUFConversionError,
    GGUFQuant,
    supported_architecture,
    write_gguf,
)
from flextrain.models.gguf_llama_cpp import check_in_llama_cpp, llama_cpp_available
from flextrain.models.gguf_parity import ParityReport, check_gguf, load_reference
from flextrain.models.ollama import MODELFILE, modelfile, turn_pieces
from flextrain.models.trained import (
    AfterTrainingError,
    CompletedJobs,
    TrainedModel,
    load_tokenizer,
    trained_model,
)


def export_gguf(
    service: CompletedJobs,
    job_id: str,
    out_dir: str | Path,
    *,
    quant: GGUFQuant = "q8_0",
    force: bool = False,
    full_config: bool = False,
    verify: bool = True,
    ollama: bool = False,
) -> ExportResult:
    """Write job `job_id`'s model to `out_dir` as `<run name>-<quant>.gguf`; see the
    module docstring. `ollama`: with a Modelfile (flextrain.models.ollama) beside it."""
    if quant not in GGUF_QUANTS:
        raise GGUFConversionError(
            f"quant '{quant}' is not one of {', '.join(GGUF_QUANTS)}. Fix: pick one of them."
        )
    model = trained_model(service, job_id, "export")
    _check_exportable(model)
    tokenizer = load_tokenizer(model)
    # Derived (or refused) before any writing: a template Ollama cannot say stops here.
    pieces = turn_pieces(tokenizer) if ollama and tokenizer.chat_template else None
    quantizer = llama_cpp_quantizer() if quant == "q4_k_m" else None
    target = Path(out_dir)
    _refuse_own_folder(model, target)
    dataset_hash, hash_note = dataset_content_hash(service, model)
    weights = "merged" if model.is_adapter else "full"
    name = _file_stem(model)
    report: ParityReport | None = None
    in_llama_cpp: ParityReport | None = None
    with staged(target, replace=force) as folder:
        source = model.folder
        if model.is_adapter:
            source = folder / ".merged"
            _write_merged(model, source)
        written = write_gguf(
            source, folder / f"{name}-{quant}.gguf", quant, name=name, quantizer=quantizer
        )
        if verify:
            report = check_gguf(written.path, source, quant)
            refuse_unless_passed(report, job_id, f"GGUF ({quant})")
            (folder / PARITY_FILE).write_text(report.model_dump_json(indent=2))
            if llama_cpp_available():
                in_llama_cpp = check_in_llama_cpp(written.path, load_reference(source), quant)
                refuse_unless_passed(in_llama_cpp, job_id, f"GGUF ({quant}) in llama.cpp")
                (folder / LLAMA_CPP_PARITY_FILE).write_text(in_llama_cpp.model_dump_json(indent=2))
        if ollama:
            (folder / MODELFILE).write_text(
                modelfile(written.path.name, pieces, tokenizer, source), encoding="utf-8"
            )
        if model.is_adapter:
            shutil.rmtree(source)
        _write_lineage(service, model, folder, weights=weights)
        card = model_card(
            model,
            weights=weights,
            dataset_hash=dataset_hash,
            hash_note=hash_note,
            config=_card_config(model, full_config),
            version=flextrain_version(),
            created=datetime.now(UTC),
            usage=("bash", _usage(written.path.name, report, ollama=ollama, name=name)),
            library="gguf",
        )
        (folder / "README.md").write_text(card, encoding="utf-8")
    files, size = _listing(target)
    return ExportResult(
        job_id=job_id,
        path=str(target.resolve()),
        weights=weights,
        format="ollama" if ollama else "gguf",
        quant=quant,
        file=str(target.resolve() / written.path.name),
        parity=report,
        llama_cpp=in_llama_cpp,
        dataset_id=_dataset_name(model),
        dataset_hash=dataset_hash,
        files=files,
        size_bytes=size,
    )


def export_as(
    service: CompletedJobs,
    job_id: str,
    out_dir: str | Path,
    *,
    format: ExportFormat = "vllm",
    quant: str | None = None,
    verify: bool = True,
    adapter_only: bool = False,
    force: bool = False,
    full_config: bool = False,
) -> ExportResult:
    """Export in `format`: the safetensors folder (`export`) or a GGUF file in `quant`
    (q8_0 unless given), refusing the options that belong to the other one."""
    if format in ("gguf", "ollama"):
        if adapter_only:
            raise AfterTrainingError(
                "adapter_only: a GGUF file holds the merged model. Fix: drop --adapter-only, "
                "or export the adapter alone with --format vllm."
            )
        return export_gguf(
            service,
            job_id,
            out_dir,
            quant=quant or "q8_0",  # type: ignore[arg-type]
            force=force,
            full_config=full_config,
            verify=verify,
            ollama=format == "ollama",
        )
    if quant is not None:
        raise AfterTrainingError(
            f"quant '{quant}' is for --format gguf; a {format} folder keeps the trained "
            "weights' precision. Fix: drop --quant, or add --format gguf."
        )
    return export(
        service,
        job_id,
        out_dir,
        adapter_only=adapter_only,
        force=force,
        full_config=full_config,
        verify=verify,
    )


def _check_exportable(model: TrainedModel) -> None:
    """Refuse before any merging: a model that is no language model, or an architecture
    the writer does not know."""
    if model.objective != "causal_lm":
        raise GGUFConversionError(
            f"format gguf: job {model.job.job_id} trained a {model.objective} model; GGUF "
            "runtimes (llama.cpp, Ollama) run text-generation models. Fix: export it as a "
            "safetensors folder (--format vllm)."
        )
    import json

    config_folder = model.base_path if model.is_adapter else model.folder
    supported_architecture(json.loads((config_folder / "config.json").read_text()))


def _file_stem(model: TrainedModel) -> str:
    """The run's name (or the job id) as a file name."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", model.job.run_name or "").strip("-.")
    return stem[:80] or model.job.job_id


def _usage(file: str, report: ParityReport | None, *, ollama: bool, name: str) -> list[str]:
    checked = (
        f"# Checked against the trained model: top-1 agreement {report.top1_agreement:.3f}, "
        f"max logit difference {report.max_abs_diff:.3g} (parity.json)."
        if report is not None
        else "# Not checked against the trained model (exported with --no-verify)."
    )
    served = (
        ["# Ollama", f"ollama create {name.lower()} -f Modelfile", f"ollama run {name.lower()}"]
        if ollama
        else []
    )
    return [
        checked,
        *served,
        "# llama.cpp",
        f'llama-cli -m {file} -p "Hello"',
        "# transformers (needs the gguf package)",
        f"python -c 'from transformers import AutoModelForCausalLM; "
        f'AutoModelForCausalLM.from_pretrained(".", gguf_file="{file}")\'',
    ]


def llama_cpp_quantizer() -> Callable[[Path, Path], None] | None:
    """llama.cpp's quantiser (q4_k_m) from llama-cpp-python, when the `gguf` extra is
    installed; None otherwise."""
    try:
        import llama_cpp
    except ImportError:
        return None

    def quantize(source: Path, destination: Path) -> None:
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M
        status = llama_cpp.llama_model_quantize(
            str(source).encode(), str(destination).encode(), ctypes.byref(params)
        )
        if status != 0:
            raise GGUFConversionError(
                f"llama.cpp could not quantise the model to q4_k_m (status {status}). Fix: "
                "export q8_0 or f16."
            )

    return quantize
