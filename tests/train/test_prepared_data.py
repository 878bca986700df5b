"""Fine-tuning on registered instruction data: templated, answer-only loss, cached tokens.

Two real jobs on one dataset version: the first tokenises and stores the
result, the second (with a separate eval file) loads it from the cache.
"""

from __future__ import annotations

import json
from pathlib import Path

from flextrain.config.enums import TrainingType
from flextrain.config.schemas import AdvancedTrainingConfig
from flextrain.data.prepare import DEFAULT_CHAT_TEMPLATE
from flextrain.service import TrainingService
from tests.train.helpers import NEGATIVE, POSITIVE, assert_reload_matches, logged_losses, run_job

OPPOSITES = dict(zip(POSITIVE, NEGATIVE, strict=True)) | dict(zip(NEGATIVE, POSITIVE, strict=True))


def write_opposites(path: Path, repeats: int) -> Path:
    """Instruction rows a tiny model learns within an epoch: the answer is one of 16 words."""
    rows = [
        {"instruction": f"opposite of {word}", "input": "", "output": answer}
        for _ in range(repeats)
        for word, answer in OPPOSITES.items()
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_instruction_jobs_train_on_answers_and_reuse_the_tokenized_cache(
    service: TrainingService, tmp_path: Path
) -> None:
    train = service.datasets.add(write_opposites(tmp_path / "opp.jsonl", 10), name="opposites")
    held_out = service.datasets.add(write_opposites(tmp_path / "eval.jsonl", 1), name="opp-eval")
    assert train.shape == held_out.shape == "instruction"
    base = AdvancedTrainingConfig(
        model_id="flextrain/tiny-llama",
        dataset_id="opposites",
        training_type=TrainingType.FINE_TUNING,
        num_epochs=1,
        max_length=32,
        batch_size=8,
        learning_rate=5e-3,
        logging_steps=2,
        num_threads=2,
        save_total_limit=1,
        gradient_checkpointing=False,
    )

    first = run_job(service, base)
    log = service.read_log(first.job_id, 400)
    assert "[flextrain] tokenized data: cache miss, stored" in log
    losses = logged_losses(service, first.job_id)
    assert len(losses) >= 5
    # Only the answer (one of 16 words, then eos) is scored: well below ln(1024) ~ 6.9 soon.
    assert sum(losses[-2:]) / 2 < sum(losses[:2]) / 2 - 1.0, losses
    assert first.metrics["eval_loss"] < first.metrics["initial_eval_loss"]
    assert first.metrics["eval_rows"] == 16
    assert first.metrics["train_rows"] == 144

    second = run_job(service, base.model_copy(update={"eval_file": "opp-eval"}))
    log = service.read_log(second.job_id, 400)
    assert "[flextrain] tokenized data: cache hit" in log
    assert "[flextrain] tokenized eval data: cache miss, stored" in log
    # The whole set trains; the eval file is the eval split.
    assert second.metrics["train_rows"] == 160
    assert second.metrics["eval_rows"] == 16
    cache = service.settings.home / "cache" / "tokenized"
    assert len([p for p in cache.iterdir() if not p.name.startswith(".")]) == 2

    model_dir = Path(second.model_path or "")
    assert_reload_matches(model_dir)
    from transformers import AutoTokenizer

    # The model learnt the default format, so it is saved with the model.
    assert AutoTokenizer.from_pretrained(model_dir).chat_template == DEFAULT_CHAT_TEMPLATE


def test_the_split_is_seeded_and_leaves_the_cache_as_it_was(
    service: TrainingService, tmp_path: Path
) -> None:
    from transformers import AutoTokenizer

    from flextrain.jobs.spec import DataSpec, RunSpec
    from flextrain.train.data import load_splits

    info = service.datasets.get(
        service.datasets.add(write_opposites(tmp_path / "opp.jsonl", 2), name="opp").ref
    )
    cache = tmp_path / "cache"
    spec = RunSpec(
        job_id="local",
        config=AdvancedTrainingConfig(
            model_id="flextrain/tiny-llama",
            dataset_id=info.dataset_id,
            training_type=TrainingType.FINE_TUNING,
            max_length=32,
            eval_split=0.25,
            seed=3,
        ),
        model_path=str(service.models.resolve("flextrain/tiny-llama").path),
        objective="causal_lm",
        precision="fp32",
        lora_target_modules=None,
        data=DataSpec.from_info(info),
        output_dir=str(tmp_path),
        checkpoint_dir=str(tmp_path),
        model_dir=str(tmp_path),
        temp_dir=str(tmp_path),
        num_threads=1,
        cache_dir=str(cache),
    )
    tokenizer = AutoTokenizer.from_pretrained(spec.model_path)
    stored = load_splits(spec, tokenizer)  # tokenises and stores
    files = sorted(p.relative_to(cache) for p in cache.rglob("*"))
    loaded = load_splits(spec, tokenizer)  # from the cache
    assert sorted(p.relative_to(cache) for p in cache.rglob("*")) == files
    assert len(stored["eval"]) == 8
    assert len(stored["train"]) == 24
    for split in ("train", "eval"):
        assert loaded[split].to_list() == stored[split].to_list()
    reseeded = load_splits(
        spec.model_copy(update={"config": spec.config.model_copy(update={"seed": 4})}), tokenizer
    )
    assert reseeded["eval"].to_list() != stored["eval"].to_list()
