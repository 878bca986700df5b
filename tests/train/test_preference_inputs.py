"""Bad input to preference and reward training: refused at creation with the field and
the fix (no job left behind), or, for a reward function that raises mid-run, a failed
job that names the function, the user's line and the prompt it failed on."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from flextrain.config.enums import TrainingStatus, TrainingType
from flextrain.config.schemas import AdvancedTrainingConfig, ExpertTrainingConfig
from flextrain.config.validation import ConfigValidationError
from flextrain.service import TrainingService
from tests.train.helpers import metric_series, write_keyword_preferences

BASE: dict[str, Any] = {
    "model_id": "flextrain/tiny-llama",
    "max_length": 32,
    "num_threads": 2,
    "gradient_checkpointing": False,
    "logging_steps": 1,
}


def _write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _refused(service: TrainingService, config: AdvancedTrainingConfig) -> ConfigValidationError:
    with pytest.raises(ConfigValidationError) as caught:
        service.create_job(config)
    assert service.list_jobs() == []
    return caught.value


def test_pairs_in_the_wrong_columns_are_refused_naming_the_columns_wanted(
    service: TrainingService, tmp_path: Path
) -> None:
    data = _write(tmp_path / "qa.jsonl", [{"prompt": "a", "completion": "b"}] * 4)
    error = _refused(
        service,
        AdvancedTrainingConfig(**BASE, dataset_id=str(data), training_type=TrainingType.DPO),
    )
    issue = next(i for i in error.issues if i.field == "dataset_id")
    assert "dpo needs rows with prompt, chosen, rejected" in issue.message
    assert "completion data" in issue.message
    assert "--shape preference" in issue.fix


def test_an_empty_answer_is_refused_with_its_row(service: TrainingService, tmp_path: Path) -> None:
    rows = [{"prompt": f"p{i}", "chosen": "good", "rejected": "bad"} for i in range(5)]
    rows[2]["chosen"] = "  "
    rows[3]["rejected"] = None
    data = _write(tmp_path / "pairs.jsonl", rows)
    error = _refused(
        service,
        AdvancedTrainingConfig(**BASE, dataset_id=str(data), training_type=TrainingType.ORPO),
    )
    issue = next(i for i in error.issues if i.field == "dataset_id")
    assert "2 row error(s) in preference data" in issue.message
    assert "row 3, chosen: is empty" in issue.message
    assert "row 4, rejected: is missing" in issue.message


def test_identical_answers_are_a_warning_with_their_count_and_the_job_trains(
    service: TrainingService, tmp_path: Path
) -> None:
    data = write_keyword_preferences(tmp_path / "pairs.jsonl", rows=40)
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    for row in rows[:3]:
        row["rejected"] = row["chosen"]
    _write(data, rows)
    cfg = AdvancedTrainingConfig(
        **BASE,
        dataset_id=str(data),
        training_type=TrainingType.DPO,
        batch_size=8,
        max_steps=2,
        eval_split=0.0,
    )
    job = service.create_job(cfg)
    assert any("3 pair(s) have chosen identical to rejected" in w for w in job.warnings)
    service.start_job(job.job_id)
    done = service.wait(job.job_id, timeout=120, poll=0.2)
    assert done.status == TrainingStatus.COMPLETED, done.error_message
    assert done.current_step == 2


REWARDS = """
def picky(prompts, completions, **columns):
    out = []
    for prompt in prompts:
        if "river" in prompt:
            out.append(1 / 0)
        out.append(0.5)
    return out


def short(prompts, completions, **columns):
    return [0.5]
"""


@pytest.fixture
def code_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "code"
    folder.mkdir()
    (folder / "rewards.py").write_text(textwrap.dedent(REWARDS))
    return folder


def _grpo(data: Path, code_dir: Path, function: str) -> ExpertTrainingConfig:
    return ExpertTrainingConfig(
        **BASE,
        dataset_id=str(data),
        training_type=TrainingType.GRPO,
        batch_size=4,
        max_steps=3,
        eval_split=0.0,
        preference={"num_generations": 4, "max_completion_length": 4},
        reward_functions=[function],
        code_dir=str(code_dir),
    )


@pytest.mark.parametrize(
    ("function", "expected"),
    [
        (
            "rewards:picky",
            [
                "rewards:picky raised ZeroDivisionError: division by zero",
                "rewards.py line 6, in picky",
                "on the completion of prompt 'the river was'",
            ],
        ),
        ("rewards:short", ["rewards:short returned 1 values for 4 completions"]),
    ],
)
def test_a_reward_function_that_fails_fails_the_job_naming_it_and_the_row(
    service: TrainingService, tmp_path: Path, code_dir: Path, function: str, expected: list[str]
) -> None:
    data = _write(tmp_path / "prompts.jsonl", [{"prompt": "the river was"}] * 8)
    job = service.create_job(_grpo(data, code_dir, function))
    service.start_job(job.job_id)
    done = service.wait(job.job_id, timeout=120, poll=0.2)
    assert done.status == TrainingStatus.FAILED
    for text in expected:
        assert text in (done.error_message or ""), done.error_message
    assert not (Path(done.model_path or tmp_path / "none") / "model.safetensors").exists()


def test_a_user_reward_function_drives_grpo(
    service: TrainingService, tmp_path: Path, code_dir: Path
) -> None:
    (code_dir / "counting.py").write_text(
        "def ones(prompts, completions, **columns):\n    return [1.0 for _ in completions]\n"
    )
    data = _write(tmp_path / "prompts.jsonl", [{"prompt": "the soup was"}] * 8)
    job = service.create_job(_grpo(data, code_dir, "counting:ones"))
    service.start_job(job.job_id)
    done = service.wait(job.job_id, timeout=120, poll=0.2)
    assert done.status == TrainingStatus.COMPLETED, done.error_message
    assert metric_series(service, job.job_id, "reward") == [1.0, 1.0, 1.0]
