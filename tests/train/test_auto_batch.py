"""batch_size="auto": the largest micro-batch the estimate says fits, the effective batch
kept by gradient accumulation, and a back-off instead of a failure on out-of-memory."""

from __future__ import annotations

from dataclasses import replace

import pytest

from flextrain.config.enums import TrainingStatus, TrainingType
from flextrain.config.schemas import AdvancedTrainingConfig, ExpertTrainingConfig
from flextrain.config.validation import ConfigValidationError
from flextrain.estimate.memory import estimate_memory
from flextrain.estimate.plan import AUTO_BATCH_MARGIN
from flextrain.models.compatibility import training_setup
from flextrain.service import TrainingService
from flextrain.settings import Settings
from tests.conftest import cpu_hardware


def _config(**overrides: object) -> AdvancedTrainingConfig:
    values: dict[str, object] = {
        "model_id": "flextrain/tiny-llama",
        "dataset_id": "demo/text",
        "training_type": TrainingType.FINE_TUNING,
        "batch_size": "auto",
        "max_length": 48,
        "num_threads": 1,
        "eval_split": 0.0,
        "gradient_checkpointing": False,
        "logging_steps": 1,
    }
    values.update(overrides)
    return AdvancedTrainingConfig(**values)  # type: ignore[arg-type]


def _peak_gb(service: TrainingService, config: AdvancedTrainingConfig, batch: int) -> float:
    model = service.inspect_model(config.model_id)
    trial = config.model_copy(update={"batch_size": batch})
    setup = training_setup(model, trial, cpu_hardware(), "causal_lm")
    return estimate_memory(model.architecture(), replace(setup, batch_size=batch)).peak / 2**30


def test_auto_batch_fills_the_effective_batch_when_it_fits(service: TrainingService) -> None:
    config = _config(effective_batch_size=16)
    resolved, message = service.resolve_auto_batch(config, cpu_hardware(available_memory_gb=64))
    assert (resolved.batch_size, resolved.gradient_accumulation_steps) == (16, 1)
    assert message
    assert message.startswith("batch_size auto: 16 per step x 1 accumulation")


def test_auto_batch_uses_accumulation_when_less_fits(service: TrainingService) -> None:
    config = _config(effective_batch_size=16)
    # A budget between what 4 and 5 rows need (after the margin): 4 fit, 5 do not.
    between = (_peak_gb(service, config, 4) + _peak_gb(service, config, 5)) / 2
    hardware = cpu_hardware(available_memory_gb=between / (1 - AUTO_BATCH_MARGIN))
    resolved, message = service.resolve_auto_batch(config, hardware)
    assert (resolved.batch_size, resolved.gradient_accumulation_steps) == (4, 4)
    assert message
    assert "= 16 examples per optimizer step" in message
    # 12 would not divide 24 evenly with what fits: the largest divisor is used.
    resolved, _ = service.resolve_auto_batch(_config(effective_batch_size=24), hardware)
    assert (resolved.batch_size, resolved.gradient_accumulation_steps) == (4, 6)


def test_a_fixed_batch_is_left_alone(service: TrainingService) -> None:
    config = _config(batch_size=8, gradient_accumulation_steps=2)
    assert service.resolve_auto_batch(config, cpu_hardware()) == (config, None)


def test_auto_is_a_valid_batch_size_and_nonsense_is_not() -> None:
    assert _config().batch_size == "auto"
    assert _config().train_batch_size == 1
    with pytest.raises(ValueError, match="batch_size"):
        _config(batch_size="large")


def test_out_of_memory_backs_off_and_keeps_the_effective_batch(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every micro-batch above 2 "runs out of memory" (injected: CI has no GPU to fill).
    monkeypatch.setenv("FLEXTRAIN_FAULT_OOM_ABOVE_BATCH", "2")
    service = TrainingService(settings, hardware_probe=lambda: cpu_hardware(available_memory_gb=64))
    try:
        job = service.create_job(_config(effective_batch_size=8, max_steps=6))
        service.start_job(job.job_id)
        done = service.wait(job.job_id, timeout=180)
        assert done.status == TrainingStatus.COMPLETED, service.read_log(job.job_id, 60)
        events = service.events(job.job_id)
        kinds = [e.kind for e in events if e.kind != "memory_warning"]
        assert kinds == ["auto_batch", "oom_backoff", "oom_backoff"]
        auto = next(e for e in events if e.kind == "auto_batch")
        assert auto.data == {"batch_size": 8, "gradient_accumulation_steps": 1}
        backoffs = [e for e in events if e.kind == "oom_backoff"]
        assert [b.data for b in backoffs] == [
            {"batch_size": 4, "gradient_accumulation_steps": 2},
            {"batch_size": 2, "gradient_accumulation_steps": 4},
        ]
        assert "same 8 examples per optimizer step" in backoffs[0].message
        assert done.current_step == done.total_steps == 6
        steps = [r["step"] for r in service.metric_history(job.job_id) if "loss" in r]
        assert steps == [1, 2, 3, 4, 5, 6]  # the failed attempts left no rows behind
    finally:
        service.engine.dispose()


def test_default_gradient_checkpointing_is_dropped_when_memory_is_plentiful(
    settings: Settings,
) -> None:
    roomy = TrainingService(settings, hardware_probe=lambda: cpu_hardware(available_memory_gb=64))
    tight = TrainingService(settings, hardware_probe=lambda: cpu_hardware(available_memory_gb=0.3))
    try:
        values = {
            "model_id": "flextrain/tiny-llama",
            "dataset_id": "demo/text",
            "training_type": TrainingType.FINE_TUNING,
            "max_length": 48,
        }
        job = roomy.create_job(AdvancedTrainingConfig(**values))  # type: ignore[arg-type]
        assert job.config["gradient_checkpointing"] is False
        note = roomy.events(job.job_id)[0]
        assert note.kind == "gradient_checkpointing"
        assert note.message.startswith("gradient_checkpointing off: the run needs about")
        # Asked for explicitly: kept.
        kept = roomy.create_job(AdvancedTrainingConfig(**values, gradient_checkpointing=True))  # type: ignore[arg-type]
        assert kept.config["gradient_checkpointing"] is True
        assert roomy.events(kept.job_id) == []
        # Memory that the run may need: the default stays.
        needed = tight.create_job(AdvancedTrainingConfig(**values))  # type: ignore[arg-type]
        assert needed.config["gradient_checkpointing"] is True
    finally:
        roomy.engine.dispose()
        tight.engine.dispose()


def test_without_oom_recovery_the_job_fails_with_what_to_change(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLEXTRAIN_FAULT_OOM_ABOVE_BATCH", "2")
    service = TrainingService(settings, hardware_probe=lambda: cpu_hardware(available_memory_gb=64))
    try:
        job = service.create_job(_config(batch_size=8, max_steps=4, oom_recovery=False))
        service.start_job(job.job_id)
        done = service.wait(job.job_id, timeout=180)
        assert done.status == TrainingStatus.FAILED
        message = done.error_message or ""
        assert message.startswith("OutOfMemoryAdvice: Out of memory at micro-batch 8")
        assert "(oom_recovery is off)" in message
        assert "batch_size 4 with gradient_accumulation_steps 2" in message
        assert [e.kind for e in service.events(job.job_id)].count("oom_backoff") == 0
    finally:
        service.engine.dispose()


def test_a_run_the_estimate_says_cannot_fit_is_refused_unless_forced(
    settings: Settings,
) -> None:
    tight = TrainingService(settings, hardware_probe=lambda: cpu_hardware(available_memory_gb=0.05))
    try:
        with pytest.raises(ConfigValidationError) as caught:
            tight.create_job(_config(batch_size=64, max_length=512), strict_hardware=True)
        issue = next(i for i in caught.value.issues if i.field == "batch_size")
        assert "GB of system memory" in issue.message
        assert "0.05 GB is available" in issue.message
        assert "ignore_memory_estimate" in (issue.fix or "")
        forced = tight.create_job(
            _config(batch_size=64, max_length=512, ignore_memory_estimate=True),
            strict_hardware=True,
        )
        assert any("Started anyway" in w for w in forced.warnings)
    finally:
        tight.engine.dispose()


def test_a_backed_off_run_still_freezes_what_the_config_freezes(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The back-off rebuilds the model: the frozen block must be frozen in that one too.
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    monkeypatch.setenv("FLEXTRAIN_FAULT_OOM_ABOVE_BATCH", "2")
    service = TrainingService(settings, hardware_probe=lambda: cpu_hardware(available_memory_gb=64))
    try:
        values = _config(batch_size=4, max_steps=4).model_dump(exclude_unset=True)
        config = ExpertTrainingConfig(**values, freeze=["*layers.0.*"], learning_rate=1e-2)
        job = service.create_job(config)
        service.start_job(job.job_id)
        done = service.wait(job.job_id, timeout=180)
        assert done.status == TrainingStatus.COMPLETED, service.read_log(job.job_id, 60)
        assert [e.kind for e in service.events(job.job_id)].count("oom_backoff") == 1
        saved = load_file(str(service.environment(job.job_id).model_dir / "model.safetensors"))
        base = AutoModelForCausalLM.from_pretrained(
            service.resolve_model("flextrain/tiny-llama").path
        ).state_dict()
        frozen = "model.layers.0.self_attn.q_proj.weight"
        trained = "model.layers.1.self_attn.q_proj.weight"
        assert saved[frozen].equal(base[frozen])
        assert not saved[trained].equal(base[trained])
    finally:
        service.engine.dispose()
