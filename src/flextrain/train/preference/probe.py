"""The probe's preference and reward steps: the method's own TRL trainer, a few steps on
synthetic rows of the requested length (see flextrain.train.probe_worker).

Pairs are a prompt of half the length and two answers of the other half (each
sequence as long as max_length allows); marked answers the same with a label;
GRPO's prompts leave room for the sampled completion, whose length the method's
options fix. The trainer is built by the training code (build_trainer), so the
probe holds the same reference model (or none) as the run would.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from datasets import Dataset, DatasetDict
from transformers import TrainerCallback

from flextrain.config.enums import TrainingType
from flextrain.config.preference import RewardSpec
from flextrain.jobs.spec import RunSpec
from flextrain.train.preference.run import build_trainer, method_options, trl_classes


def synthetic_text(tokenizer: Any, tokens: int, generator: torch.Generator) -> str:
    """Text of about `tokens` tokens of this tokenizer (random ids, decoded, then cut
    by re-encoding: decoding and encoding again need not give the same count)."""
    vocab = len(tokenizer)
    ids = torch.randint(5, vocab, (tokens * 2,), generator=generator).tolist()
    text = tokenizer.decode(ids, skip_special_tokens=True)
    again = tokenizer(text, add_special_tokens=False)["input_ids"][: max(tokens, 1)]
    return str(tokenizer.decode(again))


def synthetic_rows(
    ttype: TrainingType, tokenizer: Any, rows: int, length: int, completion: int, seed: int
) -> list[dict[str, Any]]:
    generator = torch.Generator().manual_seed(seed)
    if ttype == TrainingType.GRPO:
        return [
            {"prompt": synthetic_text(tokenizer, max(length - completion, 1), generator)}
            for _ in range(rows)
        ]
    half = max(length // 2, 1)
    out: list[dict[str, Any]] = []
    for i in range(rows):
        prompt = synthetic_text(tokenizer, half, generator)
        answers = [synthetic_text(tokenizer, length - half, generator) for _ in range(2)]
        if ttype == TrainingType.KTO:
            out.append({"prompt": prompt, "completion": answers[0], "label": i % 2 == 0})
        else:
            out.append({"prompt": prompt, "chosen": answers[0], "rejected": answers[1]})
    return out


def preference_points(
    spec: RunSpec,
    model: Any,
    tokenizer: Any,
    points: list[tuple[int, int]],
    steps: int,
    callbacks: list[TrainerCallback],
    step_times: list[float],
) -> Iterator[dict[str, Any]]:
    """Train `steps` steps at each (batch, length) point; yield each point's step times
    (the caller adds the memory it measured)."""
    ttype = spec.config.training_type
    _, config_cls = trl_classes(ttype)
    completion = spec.config.preference.max_completion_length
    for batch, length in sorted(points, key=lambda p: p[0] * p[1]):
        cfg = spec.config.model_copy(update={"max_length": length})
        if ttype == TrainingType.GRPO:
            # A reward with spread within each group (the sampled lengths differ), so
            # the step computes advantages and a loss as a real run's would.
            target = RewardSpec(name="length", target_length=4 * completion)
            cfg.preference = cfg.preference.model_copy(update={"rewards": [target]})
        rows = batch * steps
        if ttype == TrainingType.GRPO:
            rows = max(batch * steps // spec.config.preference.num_generations, 1)
        data = Dataset.from_list(synthetic_rows(ttype, tokenizer, rows, length, completion, 0))
        options = method_options(cfg)
        args = config_cls(
            output_dir="/tmp/flextrain-probe",
            per_device_train_batch_size=batch,
            max_steps=steps,
            learning_rate=1e-6,
            optim=cfg.optim,
            bf16=spec.precision == "bf16",
            fp16=spec.precision == "fp16",
            gradient_checkpointing=cfg.gradient_checkpointing,
            save_strategy="no",
            logging_strategy="no",
            report_to="none",
            disable_tqdm=True,
            use_cpu=not torch.cuda.is_available(),
            dataloader_pin_memory=False,
            **options,
        )
        probe_spec = spec.model_copy(update={"config": cfg})
        trainer = build_trainer(
            probe_spec, model, args, DatasetDict(train=data), tokenizer, list(callbacks)
        )
        step_times.clear()
        trainer.train()
        yield {
            "event": "point",
            "batch_size": batch,
            "seq_len": length,
            "step_times": step_times[:],
        }
        del trainer
