"""Measure real training steps: `python -m flextrain.train.probe_worker REQUEST.json`.

Builds the model exactly as a training job would (same code), trains a few
optimizer steps with transformers Trainer on synthetic rows of exactly the
requested length (memory peaks at the longest sequence), and prints one JSON
object per (batch, length) point: peak resident memory, peak GPU memory and
step times. The peak is taken from training begin (the watermark is reset
there, see `_reset_peak_rss`); set-up's own peak is reported beside it.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from flextrain.hardware.usage import peak_rss_bytes
from flextrain.train.compat import checkpointing_arguments


class ProbeRequest(BaseModel):
    model_config = {"protected_namespaces": ()}

    model_path: str
    objective: str  # sequence_classification | causal_lm | masked_lm
    training_type: str
    labels: list[str] = ["negative", "positive"]
    precision: str = "fp32"
    gradient_checkpointing: bool = False
    optim: str = "adamw_torch"
    lora_r: int = 16
    lora_alpha: int = 32
    lora_target_modules: list[str] | None = None
    load_in_4bit: bool = False
    double_quant: bool = True
    points: list[tuple[int, int]]
    steps: int = 3
    num_threads: int = 1
    seed: int = 0
    preference: dict[str, Any] | None = None


def _rss_bytes() -> int:
    return peak_rss_bytes()


def _reset_peak_rss() -> bool:
    """Start the peak-RSS watermark afresh (Linux: clear_refs 5 resets VmHWM).

    Why: start-up can peak above training for reasons unrelated to the batch
    (imports and one-off allocations), which made a batch-1 point outweigh a
    batch-16 point and flattened the fitted slope (CI, 2026-11-29: 755 MB at batch 1, where a
    quiet run measures 526 MB). The watermark is reset when training begins
    so that a point measures training only.
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _current_rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def main(argv: list[str]) -> int:
    request = ProbeRequest.model_validate_json(Path(argv[0]).read_text())
    import torch
    from datasets import Dataset
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from flextrain.config.schemas import AdvancedTrainingConfig
    from flextrain.jobs.spec import DataSpec, RunSpec
    from flextrain.train.model import build_model, load_tokenizer
    from flextrain.train.pooled import first_position_only

    torch.set_num_threads(request.num_threads)
    baseline = _current_rss()
    config = AdvancedTrainingConfig(
        model_id=request.model_path,
        dataset_id="synthetic",
        training_type=request.training_type,
        lora_r=request.lora_r,
        lora_alpha=request.lora_alpha,
        lora_dropout=0.0,
        lora_target_modules=request.lora_target_modules,
        gradient_checkpointing=request.gradient_checkpointing,
        optim=request.optim,
        load_in_4bit=request.load_in_4bit,
        bnb_4bit_use_double_quant=request.double_quant,
        **({"preference": request.preference} if request.preference else {}),
    )
    spec = RunSpec(
        job_id="probe",
        config=config,
        model_path=request.model_path,
        objective=request.objective,
        precision=request.precision,
        lora_target_modules=request.lora_target_modules,
        data=DataSpec(
            path="", format="text", text_column="text", label_column="label", labels=request.labels
        ),
        output_dir="/tmp",
        checkpoint_dir="/tmp",
        model_dir="/tmp",
        temp_dir="/tmp",
        num_threads=request.num_threads,
    )
    tokenizer = load_tokenizer(spec)
    model, _ = build_model(spec, tokenizer)
    first_position_only(model)  # measured as the run will train it
    on_gpu = torch.cuda.is_available()
    if on_gpu and not request.load_in_4bit:  # a 4-bit model is placed as it loads
        model.to("cuda")
    model_loaded = _current_rss()
    print(
        json.dumps({"event": "loaded", "baseline_rss": baseline, "model_rss": model_loaded}),
        flush=True,
    )

    step_times: list[float] = []
    setup_peak: list[int] = []

    class Timer(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            # Everything before the first step (imports the Trainer pulls in,
            # optimizer construction) is set-up, not the batch's cost.
            setup_peak.append(_rss_bytes())
            _reset_peak_rss()

        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if on_gpu:
                torch.cuda.synchronize()
            self._t = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if on_gpu:
                torch.cuda.synchronize()
            step_times.append(time.perf_counter() - self._t)

    generator = torch.Generator().manual_seed(request.seed)
    vocab = len(tokenizer)
    if config.training_type.is_preference:
        from flextrain.train.preference.probe import preference_points

        for result in preference_points(
            spec, model, tokenizer, request.points, request.steps, [Timer()], step_times
        ):
            result.update(
                peak_rss=_rss_bytes(),
                setup_peak_rss=setup_peak[-1] if setup_peak else None,
                gpu_peak_allocated=torch.cuda.max_memory_allocated() if on_gpu else None,
                gpu_peak_reserved=torch.cuda.max_memory_reserved() if on_gpu else None,
            )
            print(json.dumps(result), flush=True)
            if on_gpu:
                torch.cuda.reset_peak_memory_stats()
        return 0
    for batch, length in sorted(request.points, key=lambda p: p[0] * p[1]):
        rows = batch * request.steps
        ids = torch.randint(5, vocab, (rows, length), generator=generator).tolist()
        data: dict[str, Any] = {"input_ids": ids, "attention_mask": [[1] * length] * rows}
        if request.objective == "sequence_classification":
            data["labels"] = [i % len(request.labels) for i in range(rows)]
        else:
            data["labels"] = ids
        args = TrainingArguments(
            output_dir="/tmp/flextrain-probe",
            per_device_train_batch_size=batch,
            max_steps=request.steps,
            learning_rate=1e-5,
            optim=request.optim,
            bf16=request.precision == "bf16",
            fp16=request.precision == "fp16",
            **checkpointing_arguments(request.gradient_checkpointing),
            save_strategy="no",
            logging_strategy="no",
            report_to="none",
            disable_tqdm=True,
            use_cpu=not on_gpu,
            dataloader_pin_memory=False,
        )
        step_times.clear()
        if on_gpu:
            torch.cuda.reset_peak_memory_stats()
        trainer = Trainer(
            model=model, args=args, train_dataset=Dataset.from_dict(data), callbacks=[Timer()]
        )
        trainer.train()
        result = {
            "event": "point",
            "batch_size": batch,
            "seq_len": length,
            "peak_rss": _rss_bytes(),
            "setup_peak_rss": setup_peak[-1] if setup_peak else None,
            "step_times": step_times[:],
            "gpu_peak_allocated": torch.cuda.max_memory_allocated() if on_gpu else None,
            "gpu_peak_reserved": torch.cuda.max_memory_reserved() if on_gpu else None,
        }
        print(json.dumps(result), flush=True)
        del trainer
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
