"""A program written for the original `training_interface` module runs unchanged.

The program below uses the original's API as its callers did: its own three services
handed to the constructor positionally with `base_dir`, hardware facts built from four
numbers, the compatibility checker and environment manager as coroutines, the
validator's `(ok, issues)`, positional dataclass-style configs, `training_mode` and
`active_jobs`. It runs as a script, against the seed's import path, and must end
with a really trained model. Where the original only pretended, the differences are
in docs/compat.md; the last test checks a few of them say so clearly.
"""

from __future__ import annotations

import json
import logging
import runpy
import sys
import textwrap
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM

from ai_karen_engine.core.response import training_interface as original
from flextrain.config.validation import ConfigValidationError

PROGRAM = textwrap.dedent(
    """
    import asyncio
    import json
    import logging
    import sys

    from ai_karen_engine.core.response.training_interface import (
        BasicTrainingConfig,
        FlexibleTrainingInterface,
        HardwareConstraints,
        ModelCompatibilityChecker,
        TrainingEnvironmentManager,
        TrainingMode,
        TrainingParameterValidator,
        TrainingStatus,
        TrainingType,
    )

    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    BASE = sys.argv[1]


    class EnhancedHuggingFaceService:  # the caller's own services, as in AI-Karen
        async def get_model_info(self, model_id):
            return None


    class TrainingDataManager:
        pass


    class SystemModelManager:
        pass


    async def main():
        hardware = HardwareConstraints(16.0, 0.0, 0, 2)
        checker = ModelCompatibilityChecker(EnhancedHuggingFaceService())
        compatibility = await checker.check_compatibility(
            "flextrain/tiny-llama", TrainingType.FULL_TRAINING, hardware
        )
        assert compatibility.is_compatible, compatibility.compatibility_issues
        assert compatibility.supports_full_training and compatibility.supports_fine_tuning

        environments = TrainingEnvironmentManager(base_dir=BASE + "/environments")
        environment = await environments.setup_environment(
            "flextrain/tiny-llama", TrainingType.FULL_TRAINING, TrainingMode.BASIC
        )
        assert environment.environment_ready, environment.setup_errors
        assert environment.checkpoint_dir.is_dir() and environment.logs_dir.is_dir()
        environments.cleanup_environment(environment)

        config = BasicTrainingConfig(
            "flextrain/tiny-llama", "demo/text", TrainingType.FULL_TRAINING, 1, 3e-3, 8, 32
        )
        ok, issues = TrainingParameterValidator().validate_basic_config(
            config, compatibility, hardware
        )
        assert ok, issues

        interface = FlexibleTrainingInterface(
            EnhancedHuggingFaceService(), TrainingDataManager(), SystemModelManager(), BASE
        )
        job = await interface.create_basic_training_job(config)
        assert job.training_mode == TrainingMode.BASIC
        assert job.job_id in interface.active_jobs
        assert await interface.start_training_job(job.job_id)
        finished = (TrainingStatus.COMPLETED, TrainingStatus.FAILED, TrainingStatus.CANCELLED)
        while interface.get_training_job(job.job_id).status not in finished:
            await asyncio.sleep(0.5)
        done = interface.get_training_job(job.job_id)
        print(json.dumps({
            "status": done.status.value,
            "error": done.error_message,
            "model_path": done.model_path,
            "steps": done.current_step,
            "losses": [r["loss"] for r in interface.get_job_metrics(job.job_id) if "loss" in r],
            "listed": [j.job_id for j in interface.list_training_jobs()],
            "job_id": job.job_id,
        }))


    asyncio.run(main())
    """
)


def test_a_program_written_for_the_original_module_trains_a_real_model(
    tmp_path: Path,
    models_cache: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    program = tmp_path / "karen_program.py"
    program.write_text(PROGRAM)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("FLEXTRAIN_MODELS_CACHE", str(models_cache))
    monkeypatch.delenv("FLEXTRAIN_DATABASE_URL", raising=False)  # its own home: base_dir
    monkeypatch.setattr(sys, "argv", [str(program), str(tmp_path / "karen")])
    caplog.set_level(logging.INFO)
    # Run as `python karen_program.py BASE` would (as __main__; in this process, whose
    # torch import and worker fork server it shares, to keep the suite fast).
    runpy.run_path(str(program), run_name="__main__")
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["status"] == "completed", result["error"]
    assert result["listed"] == [result["job_id"]]
    losses = result["losses"]
    assert len(losses) >= 4
    assert sum(losses[-2:]) / 2 < sum(losses[:2]) / 2  # it trained
    assert AutoModelForCausalLM.from_pretrained(result["model_path"]) is not None
    assert (tmp_path / "karen" / "jobs" / result["job_id"]).is_dir()  # base_dir is the home
    # The caller's own services were set aside with a note, not used half-way.
    assert "enhanced_hf_service (EnhancedHuggingFaceService) is set aside" in caplog.text
    assert "system_model_manager (SystemModelManager) is set aside" in caplog.text


def test_every_name_of_the_original_module_is_exported() -> None:
    # The original module's public names (its enums, dataclasses, classes, and the
    # TrainingDataManager it imported for its callers).
    names = {
        "TrainingMode",
        "TrainingType",
        "TrainingStatus",
        "HardwareConstraints",
        "ModelCompatibility",
        "TrainingEnvironment",
        "BasicTrainingConfig",
        "AdvancedTrainingConfig",
        "TrainingJob",
        "ModelCompatibilityChecker",
        "TrainingEnvironmentManager",
        "TrainingParameterValidator",
        "FlexibleTrainingInterface",
        "TrainingDataManager",
    }
    assert names <= set(original.__all__)
    assert all(getattr(original, name) is not None for name in names)
    # The original's enum values are all there (flextrain adds more).
    assert {m.value for m in original.TrainingStatus} >= {
        "pending", "validating", "preparing", "training", "evaluating",
        "completed", "failed", "cancelled",
    }  # fmt: skip


def test_the_original_field_names_are_there() -> None:
    hardware = original.HardwareConstraints(
        available_memory_gb=8.0, available_gpu_memory_gb=24.0, gpu_count=1, cpu_cores=4
    )
    assert (hardware.total_memory_gb, hardware.recommended_precision) == (8.0, "fp16")
    assert hardware.supports_gradient_checkpointing is True
    assert hardware.max_batch_size is None
    with pytest.raises(TypeError, match="multiple values for argument 'gpu_count'"):
        original.HardwareConstraints(8.0, 24.0, 1, gpu_count=2)
    report = original.ModelCompatibility(
        model_id="m",
        is_compatible=False,
        supported_training_types=[original.TrainingType.LORA_ADAPTATION],
        issues=["too big"],
        estimated_training_time_hours=0.5,
        framework_versions={"transformers": "5", "torch": "2"},
    )
    dumped = report.model_dump()
    assert (dumped["supports_lora"], dumped["supports_fine_tuning"]) == (True, False)
    assert dumped["compatibility_issues"] == ["too big"]
    assert dumped["estimated_training_time"] == "30 minutes"
    assert dumped["training_frameworks"] == ["torch", "transformers"]
    assert dumped["required_gpu_memory_gb"] == 0.0
    advanced = original.AdvancedTrainingConfig(
        "m", "d", original.TrainingType.FINE_TUNING, 1e-4, 0.0
    )
    assert (advanced.learning_rate, advanced.weight_decay) == (1e-4, 0.0)


def test_what_the_original_only_pretended_is_refused_clearly() -> None:
    """The original stored custom_parameters and ignored them; flextrain refuses them."""
    config = original.AdvancedTrainingConfig(
        model_id="flextrain/tiny-llama",
        dataset_id="demo/text",
        training_type=original.TrainingType.FINE_TUNING,
        custom_parameters={"my_knob": 3},
    )
    ok, issues = original.TrainingParameterValidator().validate_advanced_config(config)
    assert not ok
    assert issues[0].startswith("custom_parameters: my_knob: flextrain does not pass")
    with pytest.raises(ConfigValidationError, match="leave custom_parameters empty"):
        original.TrainingParameterValidator().validate_or_raise(config)
