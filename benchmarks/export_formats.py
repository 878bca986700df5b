"""Export formats: time, size and parity of each export of two real trained jobs.

Trains (a) a LoRA adapter on the built-in tiny Llama with the bundled instructions
(a chat template is saved) and (b) all-MiniLM-L6-v2 fine-tuned as a sentiment
classifier, then exports (a) as a safetensors folder (merged, and the adapter
alone), GGUF f16 / q8_0 (and q4_k_m with the flextrain[gguf] extra) and Ollama, and
(b) as a safetensors folder (an encoder: GGUF runtimes do not run it). For each:
seconds to export (the parity check included), the folder's size, and what the
check measured, in transformers and (with the extra) in llama.cpp.

    python benchmarks/export_formats.py [--no-docs]

Appends a table to docs/benchmarks.md ("Export formats").
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.models.after_helpers import train_tiny_helper  # noqa: E402
from tests.train.helpers import run_job  # noqa: E402

from flextrain.config.enums import TrainingType  # noqa: E402
from flextrain.config.schemas import AdvancedTrainingConfig  # noqa: E402
from flextrain.models.gguf_llama_cpp import llama_cpp_available  # noqa: E402
from flextrain.service import TrainingService  # noqa: E402
from flextrain.settings import Settings  # noqa: E402


def _size(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.0f} KB"


def _row(name: str, seconds: float, result: object) -> str:
    parity = getattr(result, "parity", None)
    in_llama = getattr(result, "llama_cpp", None)

    def cells(p: object) -> str:
        if p is None:
            return "- | -"
        return f"{p.top1_agreement:.3f} | {p.relative_diff:.2g}"  # type: ignore[attr-defined]

    size = getattr(result, "size_bytes", 0)
    return f"| {name} | {seconds:.1f} | {_size(size)} | {cells(parity)} | {cells(in_llama)} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-docs", action="store_true", help="Print only.")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="export-bench-")) / "home"
    service = TrainingService(Settings(home=home))
    lora = train_tiny_helper(service)
    minilm = run_job(
        service,
        AdvancedTrainingConfig(
            model_id="flextrain/minilm-l6",
            dataset_id="demo/sentiment",
            training_type=TrainingType.TASK_SPECIFIC,
            max_steps=8,
            batch_size=16,
            learning_rate=5e-5,
            max_length=64,
            eval_split=0.2,
            evaluate_before_training=False,
            num_threads=2,
            gradient_checkpointing=False,
        ),
    )
    runs: list[tuple[str, str, dict[str, object]]] = [
        ("tiny Llama LoRA, safetensors (merged)", lora.job_id, {}),
        ("tiny Llama LoRA, safetensors (adapter)", lora.job_id, {"adapter_only": True}),
        ("tiny Llama LoRA, GGUF f16", lora.job_id, {"format": "gguf", "quant": "f16"}),
        ("tiny Llama LoRA, GGUF q8_0", lora.job_id, {"format": "gguf", "quant": "q8_0"}),
        ("tiny Llama LoRA, Ollama (q8_0)", lora.job_id, {"format": "ollama"}),
        ("all-MiniLM classifier, safetensors", minilm.job_id, {}),
    ]
    if llama_cpp_available():
        runs.insert(
            4, ("tiny Llama LoRA, GGUF q4_k_m", lora.job_id, {"format": "gguf", "quant": "q4_k_m"})
        )
    lines = [
        f"### {datetime.now(UTC):%Y-%m-%d} ({platform.node()}, {os.cpu_count()} cores, CPU)",
        "",
        "Seconds to export (merge, write and the parity check), the folder's size, and the "
        "check: top-1 agreement and max logit difference over the logits' spread, in "
        "transformers and in llama.cpp"
        + (" (installed)." if llama_cpp_available() else " (not installed here)."),
        "",
        "| export | seconds | size | top-1 (transformers) | diff / spread | top-1 (llama.cpp) "
        "| diff / spread |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for i, (name, job_id, options) in enumerate(runs):
        start = time.perf_counter()
        result = service.export_model(job_id, home / f"export-{i}", **options)  # type: ignore[arg-type]
        lines.append(_row(name, time.perf_counter() - start, result))
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_docs:
        path = ROOT / "docs" / "benchmarks.md"
        body = path.read_text()
        heading = "## Export formats (benchmarks/export_formats.py)"
        if heading not in body:
            body = body.rstrip("\n") + f"\n\n{heading}\n\n"
        path.write_text(body.rstrip("\n") + "\n\n" + text)
    service.engine.dispose()


if __name__ == "__main__":
    main()
