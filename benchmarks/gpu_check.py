"""GPU checks, run by hand on a lent GPU machine (CI never has one).

Checks: NVML detection (no CUDA in the parent), bf16 chosen automatically,
explicit fp16, and for a ~95M-parameter Llama built from a config: peak GPU
memory against flextrain's rough estimate and real tokens/s, for full
fine-tuning, full with gradient checkpointing, LoRA and QLoRA; and flextrain's
default batching against a Trainer with group_by_length on demo/instructions
(training time, bf16). Writes one JSON file.

    python benchmarks/gpu_check.py OUT_DIR
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
import traceback
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("FLEXTRAIN_HOME", "/tmp/flextrain-gpu")

from flextrain.config.enums import TrainingType
from flextrain.config.schemas import AdvancedTrainingConfig
from flextrain.data.bundled import bundled_path
from flextrain.estimate.memory import TrainingSetup, estimate_memory
from flextrain.models.inspect import choose_lora_targets
from flextrain.service import TrainingService

RESULTS: dict[str, Any] = {}


def record(name: str, fn: Any) -> None:
    started = time.time()
    try:
        RESULTS[name] = {"ok": True, **fn()}
    except Exception as exc:
        RESULTS[name] = {
            "ok": False,
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc()[-3000:],
        }
    RESULTS[name]["seconds"] = round(time.time() - started, 1)
    print(name, json.dumps(RESULTS[name], default=str)[:1500], flush=True)


def long_text_file(path: Path, rows: int = 320, seed: int = 0) -> Path:
    lines = bundled_path("text.txt").read_text().splitlines()
    rng = random.Random(seed)
    with path.open("w") as fh:
        for _ in range(rows):
            fh.write(" ".join(rng.sample(lines, 20)) + "\n")  # ~400 tokens, cut to max_length
    return path


def build_bench_llama(service: TrainingService, folder: Path) -> Path:
    from transformers import AutoTokenizer

    from flextrain.models.builtin import save_random_llama

    tokenizer = AutoTokenizer.from_pretrained(service.models.resolve("flextrain/tiny-llama").path)
    small = os.environ.get("GPU_CHECK_SMALL") == "1"  # dry run on a CPU
    return save_random_llama(
        folder,
        tokenizer,
        hidden=128 if small else 1024,
        intermediate=256 if small else 2816,
        layers=2 if small else 8,
        heads=16,
        kv_heads=8,
        max_positions=1024,
        tie_embeddings=False,
    )


def run(service: TrainingService, cfg: AdvancedTrainingConfig) -> dict[str, Any]:
    job = service.create_job(cfg)
    service.start_job(job.job_id)
    job = service.wait(job.job_id, timeout=400)
    spec = json.loads((service.settings.jobs_dir / job.job_id / "job.json").read_text())
    history = [m["loss"] for m in service.store.metric_history(job.job_id) if "loss" in m]
    out = {
        "status": job.status.value,
        "error": job.error_message,
        "precision": spec["precision"],
        "first_loss": history[0] if history else None,
        "last_loss": history[-1] if history else None,
        **{
            k: job.metrics.get(k)
            for k in (
                "peak_gpu_allocated_gb",
                "peak_gpu_reserved_gb",
                "peak_rss_gb",
                "train_tokens_per_second",
                "train_runtime",
                "train_samples_per_second",
                "trainable_parameters",
                "total_parameters",
                "eval_loss",
                "initial_eval_loss",
                "batching",
                "sparse_logits",
            )
        },
    }
    if job.status.value != "completed":
        out["log_tail"] = service.read_log(job.job_id, 40)
    return out


def throughput(service: TrainingService, model: Path) -> dict[str, Any]:
    """Issue 26 on a GPU: flextrain's default batching (padding-free where flash-attention
    is installed, else length-grouped with logits only where predicted) against a plain
    Trainer with dynamic padding and group_by_length, bf16, demo/instructions."""
    import subprocess

    data = {"path": str(bundled_path("instructions.jsonl")), "shape": "instruction"}
    job = {
        "task": "causal",
        "model": str(model),
        "data": data,
        "batch": 16,
        "max_length": 256,
        "lr": 1e-4,
        "epochs": 1,
        "threads": 4,
        "out": "/tmp/gpu-trainer",
        "variant": "grouped",
        "cuda": True,
        "lora": None,
    }
    request, result = Path("/tmp/gpu-trainer.json"), Path("/tmp/gpu-trainer-result.json")
    request.write_text(json.dumps(job))
    here = Path(__file__).resolve().parent
    command = [sys.executable, str(here / "throughput.py"), "--child", "trainer"]
    subprocess.run([*command, str(request), str(result)], check=True, capture_output=True)
    trainer = json.loads(result.read_text())
    ours = run(
        service,
        AdvancedTrainingConfig(
            model_id=str(model),
            dataset_id="demo/instructions",
            training_type=TrainingType.FINE_TUNING,
            num_epochs=1,
            learning_rate=1e-4,
            batch_size=16,
            max_length=256,
            eval_split=0.0,
            save_steps=10**9,
            logging_steps=10,
            evaluate_before_training=False,
        ),
    )
    return {
        "trainer_grouped_seconds": trainer["train_runtime"],
        "flextrain": ours,
        "ratio": trainer["train_runtime"] / ours["train_runtime"],
    }


def main(out_dir: Path) -> None:
    service = TrainingService()
    hw = service.hardware()
    RESULTS["hardware"] = hw.model_dump()
    print("hardware", hw.model_dump_json(), flush=True)
    base = dict(dataset_id="demo/text", logging_steps=5, save_total_limit=1, eval_split=0.1)

    record(
        "tiny_auto_precision",
        lambda: run(
            service,
            AdvancedTrainingConfig(
                model_id="flextrain/tiny-llama",
                training_type=TrainingType.FINE_TUNING,
                num_epochs=2,
                learning_rate=3e-3,
                batch_size=16,
                max_length=64,
                **base,
            ),
        ),
    )
    record(
        "tiny_fp16",
        lambda: run(
            service,
            AdvancedTrainingConfig(
                model_id="flextrain/tiny-llama",
                training_type=TrainingType.FINE_TUNING,
                num_epochs=1,
                learning_rate=3e-3,
                batch_size=16,
                max_length=64,
                fp16=True,
                **base,
            ),
        ),
    )

    bench = build_bench_llama(service, Path("/tmp/bench-llama"))
    data = long_text_file(
        Path("/tmp/long.txt"), rows=40 if os.environ.get("GPU_CHECK_SMALL") == "1" else 320
    )
    info = service.inspect_model(str(bench))
    RESULTS["bench_model_parameters"] = info.num_parameters
    b, s = 16, 256
    # QLoRA beside 16-bit LoRA: peak memory against the estimate, tokens/s against LoRA's.
    for name, ttype, gc, lr, four_bit in (
        ("bench_full_bf16", TrainingType.FINE_TUNING, False, 1e-4, False),
        ("bench_full_bf16_checkpointing", TrainingType.FINE_TUNING, True, 1e-4, False),
        ("bench_lora_bf16", TrainingType.LORA_ADAPTATION, False, 1e-3, False),
        ("bench_qlora_bf16", TrainingType.LORA_ADAPTATION, False, 1e-3, True),
    ):
        cfg = AdvancedTrainingConfig(
            load_in_4bit=four_bit,
            model_id=str(bench),
            dataset_id=str(data),
            training_type=ttype,
            num_epochs=1,
            learning_rate=lr,
            batch_size=b,
            max_length=s,
            gradient_checkpointing=gc,
            logging_steps=5,
            save_total_limit=1,
            eval_split=0.1,
            evaluate_before_training=False,
        )

        def go(cfg: AdvancedTrainingConfig = cfg, ttype: TrainingType = ttype) -> dict[str, Any]:
            result = run(service, cfg)
            lora = ttype == TrainingType.LORA_ADAPTATION
            setup = TrainingSetup(
                objective="causal_lm",
                lora=lora,
                batch_size=b,
                seq_len=s,
                precision="bf16",
                gradient_checkpointing=cfg.gradient_checkpointing,
                device="cuda",
                lora_targets=tuple(choose_lora_targets(info.linear_module_names)) if lora else (),
                quantized_4bit=cfg.load_in_4bit,
            )
            result["estimate_gb"] = estimate_memory(info.architecture(), setup).peak / 2**30
            return result

        record(name, go)

    record("throughput_instructions", lambda: throughput(service, bench))

    import torch

    RESULTS["parent_cuda_initialized"] = bool(torch.cuda.is_initialized())
    RESULTS["parent_imported_torch"] = "torch" in sys.modules
    print("parent_cuda_initialized", RESULTS["parent_cuda_initialized"], flush=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "gpu_results.json").write_text(json.dumps(RESULTS, indent=2, default=str))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "."))
