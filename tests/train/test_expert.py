"""Expert mode end to end: real jobs whose loss, optimizer, schedule, hooks and user code
change what the run does, observably."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Any

import pytest

from flextrain.config.enums import TrainingMode, TrainingStatus, TrainingType
from flextrain.config.schemas import ExpertTrainingConfig
from flextrain.config.validation import ConfigValidationError
from flextrain.service import TrainingService
from tests.train.helpers import logged_losses, reload_logits, write_keyword_sentiment

LM: dict[str, Any] = {
    "model_id": "flextrain/tiny-llama",
    "dataset_id": "demo/text",
    "training_type": TrainingType.FULL_TRAINING,
    "max_steps": 12,
    "learning_rate": 3e-3,
    "batch_size": 4,
    "max_length": 48,
    "logging_steps": 1,
    "num_threads": 1,
    "eval_split": 0.1,
    "evaluate_before_training": False,
    "gradient_checkpointing": False,
    "seed": 3,
}

USER_CODE = '''
from transformers import Trainer, TrainerCallback


def doubled(model, inputs, outputs):
    """Twice the model's own loss: observable in the logged loss."""
    return outputs.loss * 2


def broken(model, inputs, outputs):
    return outputs.loss / 0.0 if False else 1 / 0


def make_sgd(model, config):
    """An optimizer factory: plain SGD at the configured lr."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    print(f"make_sgd: SGD over {len(params)} tensors", flush=True)
    return torch.optim.SGD(params, lr=config.learning_rate, momentum=0.5)


class MarkingTrainer(Trainer):
    """A Trainer subclass that adds a number to every log row."""

    def log(self, logs, start_time=None):
        logs["marked"] = 42.0
        super().log(logs, start_time)


class StepMarker(TrainerCallback):
    """Writes each optimizer step it sees beside the checkpoints."""

    def on_step_end(self, args, state, control, **kwargs):
        with open(args.output_dir + "/../steps.txt", "a") as fh:
            fh.write(f"{state.global_step}\\n")
'''


def _run(service: TrainingService, **values: Any) -> str:
    job = service.create_job(ExpertTrainingConfig(**{**LM, **values}))
    assert job.mode == TrainingMode.EXPERT
    service.start_job(job.job_id)
    done = service.wait(job.job_id, timeout=240, poll=0.2)
    assert done.status == TrainingStatus.COMPLETED, (
        done.error_message,
        service.read_log(job.job_id, 40),
    )
    return job.job_id


def _learning_rates(service: TrainingService, job_id: str) -> list[float]:
    return [m["learning_rate"] for m in service.metric_history(job_id) if "loss" in m]


@pytest.fixture
def code_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "code"
    folder.mkdir()
    (folder / "my_code.py").write_text(textwrap.dedent(USER_CODE))
    return folder


def test_expression_schedule_sets_the_lr_of_every_step_and_is_plotted_first(
    service: TrainingService,
) -> None:
    expr = "lr * min(1, step / warmup) * 0.5 * (1 + cos(pi * progress))"
    job_id = _run(service, lr_schedule_expr=expr, warmup_steps=4)
    # The Trainer logs the lr used for step k (1-based) after the scheduler moved past
    # step k-1: the expression's value at k-1... here checked at the logged steps.
    rates = _learning_rates(service, job_id)
    assert len(rates) == 12
    for k, rate in enumerate(rates):
        expected = 3e-3 * min(1, k / 4) * 0.5 * (1 + math.cos(math.pi * k / 12))
        assert rate == pytest.approx(expected, rel=1e-6, abs=1e-12), (k, rates)
    event = next(e for e in service.events(job_id) if e.kind == "lr_schedule")
    plot = Path(event.data["plot"])
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_bad_expression_is_refused_before_the_job_exists(service: TrainingService) -> None:
    with pytest.raises(ConfigValidationError) as caught:
        service.create_job(ExpertTrainingConfig(**LM, lr_schedule_expr="__import__('os')"))
    issue = caught.value.issues[0]
    assert issue.field == "lr_schedule_expr"
    assert "__import__" in issue.message
    assert service.list_jobs() == []


def test_user_loss_and_user_callback_are_called(service: TrainingService, code_dir: Path) -> None:
    plain = _run(service)
    doubled = _run(
        service,
        loss={"function": "my_code:doubled"},
        callbacks=["my_code:StepMarker"],
        code_dir=str(code_dir),
    )
    # Same seed, same data: the first step's loss is exactly twice the plain run's.
    assert logged_losses(service, doubled)[0] == pytest.approx(
        2 * logged_losses(service, plain)[0], rel=1e-5
    )
    steps = (service.environment(doubled).output_dir / "steps.txt").read_text().split()
    assert steps == [str(i) for i in range(1, 13)]


def test_an_error_in_user_code_fails_the_job_with_the_users_file_and_line(
    service: TrainingService, code_dir: Path
) -> None:
    job = service.create_job(
        ExpertTrainingConfig(**LM, loss={"function": "my_code:broken"}, code_dir=str(code_dir))
    )
    service.start_job(job.job_id)
    done = service.wait(job.job_id, timeout=240, poll=0.2)
    assert done.status == TrainingStatus.FAILED
    assert "my_code:broken raised ZeroDivisionError" in (done.error_message or "")
    assert "my_code.py line 11, in broken" in (done.error_message or "")
    assert "Traceback" in service.read_log(job.job_id, 80)  # the whole story is in the log


def test_user_code_that_does_not_exist_is_refused_with_the_file_named(
    service: TrainingService, code_dir: Path
) -> None:
    with pytest.raises(ConfigValidationError) as caught:
        service.create_job(
            ExpertTrainingConfig(**LM, callbacks=["my_code:Nope"], code_dir=str(code_dir))
        )
    assert "defines no top-level 'Nope'" in str(caught.value)


def test_focal_and_class_weights_change_a_classification_run(
    service: TrainingService, tmp_path: Path
) -> None:
    data = write_keyword_sentiment(tmp_path / "sentiment.jsonl", rows=96)
    service.datasets.add(data, name="kw-sentiment")
    base = {
        **LM,
        "model_id": "flextrain/tiny-bert",
        "dataset_id": "kw-sentiment",
        "training_type": TrainingType.TASK_SPECIFIC,
        "max_length": 16,
        "max_steps": 8,
    }
    runs = {}
    for name, loss in {
        "ce": {},
        "focal": {"name": "focal", "focal_gamma": 2.0},
        "weighted": {"class_weights": {"positive": 4.0}},
    }.items():
        job = service.create_job(ExpertTrainingConfig(**base, loss=loss))
        service.start_job(job.job_id)
        done = service.wait(job.job_id, timeout=240, poll=0.2)
        assert done.status == TrainingStatus.COMPLETED, done.error_message
        runs[name] = logged_losses(service, job.job_id)
    # Focal scales every term by (1 - p)^2 < 1: its loss is far below CE's at step 1.
    assert runs["focal"][0] < 0.5 * runs["ce"][0]
    # Weighting the positive class moves the updates: a different loss curve.
    assert runs["weighted"] != pytest.approx(runs["ce"], rel=1e-3)


def test_optimizer_groups_freezing_ema_and_curriculum_in_one_run(
    service: TrainingService,
) -> None:
    job_id = _run(
        service,
        training_type=TrainingType.FINE_TUNING,  # from the saved weights: block 0 comparable
        optimizer={
            "name": "SGD",
            "kwargs": {"momentum": 0.9, "nesterov": True},
            "param_groups": [{"pattern": "*embed_tokens*", "lr_scale": 0.1}],
        },
        freeze=["*layers.0.*"],
        ema_decay=0.9,
        clip_grad_value=0.5,
        curriculum="length",
    )
    log = service.read_log(job_id, 200)
    assert "optimizer group: {'lr': 0.0003" in log  # the embeddings at 0.1x
    assert "optimizer group: {'lr': 0.003" in log
    assert "froze" in log
    assert "curriculum: training in ascending order of length" in log
    # The saved model is the EMA one and reloads to what was recorded.
    got, recorded = reload_logits(service.environment(job_id).model_dir)
    assert got == pytest.approx(recorded, abs=1e-4)
    # Frozen block 0 kept its initial weights in the saved model.
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    saved = load_file(str(service.environment(job_id).model_dir / "model.safetensors"))
    base = AutoModelForCausalLM.from_pretrained(service.models.resolve(LM["model_id"]).path)
    name = "model.layers.0.self_attn.q_proj.weight"
    assert saved[name].equal(base.state_dict()[name])
    other = "model.layers.1.self_attn.q_proj.weight"
    assert not saved[other].equal(base.state_dict()[other])


def test_user_optimizer_factory_and_trainer_subclass_through_the_python_api(
    service: TrainingService, code_dir: Path
) -> None:
    import asyncio

    from flextrain.interface import FlexibleTrainingInterface

    ft = FlexibleTrainingInterface(service=service)
    config = ExpertTrainingConfig(
        **LM,
        optimizer={"factory": "my_code:make_sgd"},
        trainer_class="my_code:MarkingTrainer",
        code_dir=str(code_dir),
    )

    async def run() -> Any:
        job = await ft.create_expert_training_job(config)
        await ft.start_training_job(job.job_id)
        return await ft.wait_for_job(job.job_id, timeout=240)

    done = asyncio.run(run())
    assert done.status == TrainingStatus.COMPLETED, done.error_message
    assert done.mode == TrainingMode.EXPERT
    rows = [m for m in service.metric_history(done.job_id) if "loss" in m]
    assert rows
    assert all(m["marked"] == 42.0 for m in rows)
    assert "make_sgd: SGD over" in service.read_log(done.job_id, 200)  # the factory ran
