"""The compatibility report with memory and time, and memory as a validation rule.

Models are the built-ins (no network); machines are given as data where the
verdict depends on them.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from flextrain.config.enums import TrainingStatus, TrainingType
from flextrain.config.schemas import AdvancedTrainingConfig, BasicTrainingConfig
from flextrain.config.validation import ConfigValidationError
from flextrain.hardware.detect import GPUInfo, HardwareConstraints
from flextrain.models.builtin import MINILM_ID, TINY_LLAMA_ID
from flextrain.service import TrainingService
from flextrain.settings import Settings
from tests.conftest import cpu_hardware, gpu_hardware


def two_h200s(free_gb: tuple[float, float] = (100.0, 60.0)) -> HardwareConstraints:
    gpus = [
        GPUInfo(
            index=i,
            name="NVIDIA H200",
            total_memory_gb=139.8,
            free_memory_gb=free,
            compute_capability=(9, 0),
        )
        for i, free in enumerate(free_gb)
    ]
    return cpu_hardware(
        available_gpu_memory_gb=sum(free_gb),
        gpu_count=2,
        supports_mixed_precision=True,
        recommended_precision="bf16",
        supports_bf16=True,
        gpus=gpus,
    )


# -- a model that fits -----------------------------------------------------------------


def test_tiny_llama_lora_report(service: TrainingService) -> None:
    report = service.check_compatibility(
        TINY_LLAMA_ID, TrainingType.LORA_ADAPTATION, batch_size=4, max_length=64
    )
    assert report.is_compatible, report.issues
    assert report.issues == []
    assert report.lora_target_modules == ["q_proj", "v_proj"]
    assert report.objective == "causal_lm"

    memory = report.memory
    assert memory is not None
    assert memory.source == "analytic"
    on_gpu = service.hardware().gpu_count > 0
    assert memory.device == ("cuda" if on_gpu else "cpu")
    assert report.memory_kind == ("gpu" if on_gpu else "system")
    assert memory.peak_gb > 0
    assert memory.fits
    parts = (
        memory.weights_gb,
        memory.gradients_gb,
        memory.optimizer_gb,
        memory.activations_gb,
        memory.logits_gb,
    )
    assert all(p > 0 for p in parts)
    assert (memory.baseline_gb == 0) == on_gpu
    assert memory.peak_gb > memory.baseline_gb + memory.weights_gb
    assert 0 < memory.trainable_parameters < memory.total_parameters / 10
    assert report.required_memory_gb == pytest.approx(memory.peak_gb, abs=1e-3)
    assert report.recommendation_details == []
    assert report.recommended_batch_size == 4

    time = report.time
    assert time is not None
    assert time.seconds > 0
    assert time.low_seconds <= time.seconds <= time.high_seconds
    assert time.source == "prior"
    assert time.assumption == "1000 rows of 64 tokens"
    assert time.tokens_per_epoch == 1000 * 64
    assert time.optimizer_steps == math.ceil(1000 / 4) * time.epochs
    assert report.estimated_training_time_hours == pytest.approx(time.seconds / 3600)


def test_report_is_json_serialisable(service: TrainingService) -> None:
    report = service.check_compatibility(TINY_LLAMA_ID, batch_size=2, max_length=32)
    data = json.loads(report.model_dump_json())
    assert {"memory", "time", "is_compatible", "recommendation_details"} <= set(data)
    assert data["memory"]["source"] == "analytic"


def test_time_from_a_named_dataset(service: TrainingService) -> None:
    config = BasicTrainingConfig(
        model_id=TINY_LLAMA_ID,
        dataset_id="demo/text",
        training_type=TrainingType.FINE_TUNING,
        batch_size=4,
        max_length=64,
        num_epochs=2,
    )
    report = service.check_compatibility(TINY_LLAMA_ID, config=config)
    assert report.is_compatible, report.issues
    time = report.time
    assert time is not None
    assert time.assumption is None
    data = service.datasets.get("demo/text")
    train_rows = data.num_rows - int(data.num_rows * config.eval_split)
    assert 0 < time.tokens_per_epoch <= train_rows * 64
    assert time.tokens_per_epoch >= train_rows  # every row has at least one token
    assert time.epochs == 2
    assert time.optimizer_steps == math.ceil(train_rows / 4) * 2

    # Shorter rows after truncation: fewer tokens, less time.
    short = service.check_compatibility(
        TINY_LLAMA_ID, config=config.model_copy(update={"max_length": 8})
    )
    assert short.time is not None
    assert short.time.tokens_per_epoch == train_rows * 8  # every line is longer than 8 tokens
    assert short.time.seconds < time.seconds


def test_the_report_names_the_batching_and_times_its_work(service: TrainingService) -> None:
    # Instructions: the loss is on the answers only, lengths vary; the check picks the
    # strategy the worker will pick, and its time counts that strategy's work.
    config = AdvancedTrainingConfig(
        model_id=TINY_LLAMA_ID,
        dataset_id="demo/instructions",
        training_type=TrainingType.FINE_TUNING,
        batch_size=8,
        max_length=256,
        num_epochs=1,
    )
    report = service.check_compatibility(TINY_LLAMA_ID, config=config)
    assert report.time is not None
    # The tiny Llama is mostly attention, which packed rows make grow with the row:
    # grouping saves more than its 15% bar.
    assert report.time.batching == "grouped"
    assert report.time.batching_reason is not None
    assert "work per epoch against it: padded " in report.time.batching_reason
    assert "packed " in report.time.batching_reason
    packed = service.check_compatibility(
        TINY_LLAMA_ID, config=config.model_copy(update={"packing": True})
    )
    assert packed.time is not None
    assert packed.time.batching == "packed"
    assert packed.time.batching_reason == "the only exact strategy for this model and config"
    assert packed.time.seconds > report.time.seconds
    padded = service.check_compatibility(
        TINY_LLAMA_ID, config=config.model_copy(update={"packing": False, "group_by_length": False})
    )
    assert padded.time is not None
    assert padded.time.batching == "padded"
    assert padded.time.seconds > report.time.seconds
    # Classification batches are padded per batch: no plan is named.
    minilm = service.check_compatibility(MINILM_ID, TrainingType.TASK_SPECIFIC, batch_size=4)
    assert minilm.time is not None
    assert minilm.time.batching is None


def test_gpu_machine_compares_the_smallest_free_gpu(service: TrainingService) -> None:
    hardware = two_h200s()
    report = service.compatibility.check(TINY_LLAMA_ID, hardware=hardware, batch_size=8)
    assert report.is_compatible, report.issues
    assert report.memory_kind == "gpu"
    assert report.available_memory_gb == pytest.approx(60.0)
    memory = report.memory
    assert memory is not None
    assert memory.device == "cuda"
    assert memory.baseline_gb == 0
    assert any("CUDA context" in n for n in memory.notes)

    cpu = service.compatibility.check(TINY_LLAMA_ID, hardware=cpu_hardware(), batch_size=8)
    assert report.time is not None
    assert cpu.time is not None
    gpu_arithmetic = report.time.seconds - report.time.overhead_seconds
    cpu_arithmetic = cpu.time.seconds - cpu.time.overhead_seconds
    assert gpu_arithmetic < cpu_arithmetic / 100


def test_gpu_count_without_gpu_details_uses_the_summed_free_memory(
    service: TrainingService,
) -> None:
    report = service.compatibility.check(TINY_LLAMA_ID, hardware=gpu_hardware())
    assert report.memory_kind == "gpu"
    assert report.available_memory_gb == pytest.approx(20.0)


# -- a model that does not fit ---------------------------------------------------------


def test_minilm_full_fine_tuning_on_a_small_machine(service: TrainingService) -> None:
    available = 0.3
    report = service.compatibility.check(
        MINILM_ID,
        TrainingType.FINE_TUNING,
        hardware=cpu_hardware(available_memory_gb=available),
        batch_size=32,
        max_length=512,
    )
    assert report.is_compatible is False
    issue = next(i for i in report.issues if "Not enough system memory" in i)
    assert f"{available:.2f} GB available" in issue
    assert report.memory is not None
    assert not report.memory.fits
    assert report.memory.peak_gb > available
    assert report.available_memory_gb == pytest.approx(available)

    details = report.recommendation_details
    assert details
    for option in details:
        assert option.fits == (option.peak_gb <= available), option
    # The plain-text recommendations are the fitting options, or all of them if none fits.
    fitting = [d.description for d in details if d.fits]
    assert report.recommendations == (fitting or [d.description for d in details])
    assert report.recommended_batch_size == 0  # not even one row fits under the baseline


def test_a_recommended_fix_really_fits(service: TrainingService) -> None:
    available = 0.8
    report = service.compatibility.check(
        TINY_LLAMA_ID,
        TrainingType.FULL_TRAINING,
        hardware=cpu_hardware(available_memory_gb=available),
        batch_size=64,
        max_length=512,
    )
    assert report.is_compatible is False
    fitting = [d for d in report.recommendation_details if d.fits]
    assert fitting
    assert report.recommendations == [d.description for d in fitting]
    for option in fitting:
        assert option.peak_gb <= available
        if "batch_size" in option.changes:
            assert option.changes["batch_size"] < 64
            assert (
                option.changes["batch_size"] * option.changes["gradient_accumulation_steps"] >= 64
            )
    assert 1 <= (report.recommended_batch_size or 0) < 64


# -- models that cannot be checked -----------------------------------------------------


def test_model_needing_remote_code(service: TrainingService, tmp_path: Path) -> None:
    folder = tmp_path / "custom"
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps(
            {
                "model_type": "my_custom_arch",
                "architectures": ["MyModel"],
                "auto_map": {"AutoConfig": "configuration_my.MyConfig"},
            }
        )
    )
    report = service.check_compatibility(str(folder))
    assert report.is_compatible is False
    assert report.needs_trust_remote_code is True
    assert len(report.issues) == 1
    assert "trust_remote_code" in report.issues[0]
    assert str(folder) in report.issues[0]
    assert report.recommendations  # what to do about it
    assert report.memory is None
    assert report.time is None


def test_missing_model_folder(service: TrainingService) -> None:
    report = service.check_compatibility("/nonexistent/model")
    assert report.is_compatible is False
    assert len(report.issues) == 1
    assert "does not exist" in report.issues[0]
    assert "/nonexistent/model" in report.issues[0]
    assert report.memory is None


def test_hub_id_while_offline(
    service: TrainingService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-home" / "hub"))
    report = service.check_compatibility("flextrain-tests/no-such-model")
    assert report.is_compatible is False
    assert len(report.issues) == 1
    issue = report.issues[0]
    assert "not found or inaccessible (offline?)" in issue
    assert "flextrain-tests/no-such-model" in issue
    assert TINY_LLAMA_ID in issue  # the way out: a built-in


# -- memory as a validation rule: create_job and start_job ----------------------------


def minilm_config() -> AdvancedTrainingConfig:
    return AdvancedTrainingConfig(
        model_id=MINILM_ID,
        dataset_id="demo/sentiment",
        training_type=TrainingType.FINE_TUNING,
        batch_size=64,
        max_length=512,
    )


@pytest.fixture
def small_machine(settings: Settings) -> Iterator[TrainingService]:
    svc = TrainingService(settings, hardware_probe=lambda: cpu_hardware(available_memory_gb=0.2))
    yield svc
    for job in svc.list_jobs():
        if not job.is_finished:
            svc.cancel_job(job.job_id)
    svc.engine.dispose()


def test_create_job_warns_when_memory_is_short(small_machine: TrainingService) -> None:
    job = small_machine.create_job(minilm_config())
    assert job.status == TrainingStatus.PENDING
    memory = [w for w in job.warnings if "GB of system memory" in w]
    assert len(memory) == 1, job.warnings
    assert memory[0].startswith("batch_size:")
    assert "0.20 GB is available" in memory[0]


def test_create_job_strict_refuses_with_the_fix(small_machine: TrainingService) -> None:
    with pytest.raises(ConfigValidationError) as caught:
        small_machine.create_job(minilm_config(), strict_hardware=True)
    errors = caught.value.errors
    assert [e.field for e in errors] == ["batch_size"]
    error = errors[0]
    match = re.search(
        r"needs about ([\d.]+) GB of system memory; 0\.20 GB is available", error.message
    )
    assert match, error.message
    assert float(match.group(1)) > 0.2 * 1.1
    # Under the framework baseline nothing fits: the fix says so.
    assert error.fix == (
        "use a smaller model or a machine with more memory. "
        "Or force it with ignore_memory_estimate."
    )
    assert error.fix in str(caught.value)
    assert small_machine.list_jobs() == []


def test_strict_fix_names_an_option_that_fits(settings: Settings) -> None:
    svc = TrainingService(settings, hardware_probe=lambda: cpu_hardware(available_memory_gb=0.8))
    config = AdvancedTrainingConfig(
        model_id=TINY_LLAMA_ID,
        dataset_id="demo/text",
        training_type=TrainingType.FINE_TUNING,
        batch_size=64,
        max_length=512,
        gradient_checkpointing=False,
    )
    try:
        with pytest.raises(ConfigValidationError) as caught:
            svc.create_job(config, strict_hardware=True)
    finally:
        svc.engine.dispose()
    (error,) = caught.value.errors
    assert error.field == "batch_size"
    fix = re.fullmatch(
        r".*\(about ([\d.]+) GB\)\. Or force it with ignore_memory_estimate\.", error.fix
    )
    assert fix, error.fix
    assert float(fix.group(1)) <= 0.8
    assert error.fix in str(caught.value)


def test_create_job_near_the_limit_is_a_warning_even_when_strict(settings: Settings) -> None:
    config = AdvancedTrainingConfig(
        model_id=TINY_LLAMA_ID,
        dataset_id="demo/text",
        training_type=TrainingType.FINE_TUNING,
        batch_size=8,
        max_length=128,
    )
    # What the check reports is what validation compares: the same estimate.
    probe = TrainingService(settings, hardware_probe=cpu_hardware)
    try:
        memory = probe.check_compatibility(TINY_LLAMA_ID, config=config).memory
    finally:
        probe.engine.dispose()
    assert memory is not None
    svc = TrainingService(
        settings, hardware_probe=lambda: cpu_hardware(available_memory_gb=memory.peak_gb)
    )
    try:
        job = svc.create_job(config, strict_hardware=True)
    finally:
        svc.engine.dispose()
    near = [w for w in job.warnings if "It may not fit" in w]
    assert len(near) == 1, job.warnings
    assert near[0].startswith("batch_size:")


def test_start_job_refuses_and_fails_the_job(small_machine: TrainingService) -> None:
    job = small_machine.create_job(minilm_config())
    with pytest.raises(ConfigValidationError, match="GB of system memory"):
        small_machine.start_job(job.job_id)
    failed = small_machine.require_job(job.job_id)
    assert failed.status == TrainingStatus.FAILED
    assert failed.error_message is not None
    assert "batch_size" in failed.error_message
    assert failed.pid is None  # no worker was launched
