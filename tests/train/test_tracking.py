"""Experiment tracking: what configure_tracking decides, the rule that names a missing
package, and one real training run logged to MLflow and TensorBoard.

The pure parts import neither mlflow nor torch; the end-to-end test trains a
2-layer Llama of width 32 for a few steps through transformers' own callbacks
and reads back what they wrote, with MLflow's client and TensorBoard's reader.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import pytest

from flextrain.config.validation import ConfigValidationError, TrainingParameterValidator
from flextrain.jobs.spec import DataSpec, RunSpec
from flextrain.train.tracking import (
    EXPERIMENT_NAME,
    configure_tracking,
    default_tracking_uri,
    log_final_model,
    missing_tracking_packages,
    mlflow_run,
)
from tests.train.helpers import run_spec

JOB_ID = "job-7f3a"
DATASET_VERSION = "c0ffee" * 10


def make_spec(tmp_path: Path, **config: Any) -> RunSpec:
    data = DataSpec(
        path=str(tmp_path / "data.txt"),
        format="text",
        text_column=None,
        label_column=None,
        labels=[],
        version=DATASET_VERSION,
    )
    return run_spec(tmp_path, data=data, job_id=JOB_ID, num_threads=2, **config)


def hide_packages(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    """Make `names` look uninstalled to find_spec (other lookups go through)."""
    real = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> Any:
        return None if name in names else real(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


@pytest.fixture(autouse=True)
def no_user_mlflow_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests start from an environment without the user's MLflow settings."""
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "TENSORBOARD_LOGGING_DIR"):
        monkeypatch.delenv(name, raising=False)


class TestMissingTrackingPackages:
    def test_installed_trackers_are_not_missing(self) -> None:
        assert missing_tracking_packages(["mlflow", "tensorboard"]) == []

    def test_names_each_missing_tracker_once_in_order(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        hide_packages(monkeypatch, "mlflow", "tensorboard", "tensorboardX")
        assert missing_tracking_packages(["tensorboard", "mlflow", "tensorboard"]) == [
            "tensorboard",
            "mlflow",
        ]

    def test_tensorboardx_stands_in_for_tensorboard(self, monkeypatch: pytest.MonkeyPatch) -> None:
        hide_packages(monkeypatch, "tensorboard")
        real = importlib.util.find_spec
        monkeypatch.setattr(
            importlib.util,
            "find_spec",
            lambda name, package=None: object() if name == "tensorboardX" else real(name, package),
        )
        assert missing_tracking_packages(["tensorboard"]) == []


class TestConfigureTracking:
    def test_no_tracking_asks_for_nothing(self, tmp_path: Path) -> None:
        assert configure_tracking(make_spec(tmp_path), tmp_path / "home") == ([], {})

    def test_mlflow_defaults_to_a_sqlite_store_in_home(self, tmp_path: Path) -> None:
        home = tmp_path / "home"
        report_to, env = configure_tracking(make_spec(tmp_path, tracking=["mlflow"]), home)
        assert report_to == ["mlflow"]
        assert env["MLFLOW_TRACKING_URI"] == f"sqlite:///{home.resolve()}/mlflow.db"
        assert env["MLFLOW_EXPERIMENT_NAME"] == EXPERIMENT_NAME == "flextrain"
        assert "TENSORBOARD_LOGGING_DIR" not in env

    def test_tags_name_the_job_model_training_type_and_data_version(self, tmp_path: Path) -> None:
        _, env = configure_tracking(make_spec(tmp_path, tracking=["mlflow"]), tmp_path)
        tags = json.loads(env["MLFLOW_TAGS"])
        assert tags["flextrain.job_id"] == JOB_ID
        assert tags["flextrain.training_type"] == "fine_tuning"
        assert tags["flextrain.model_id"] == "flextrain/tiny-llama"
        assert tags["flextrain.dataset_version"] == DATASET_VERSION

    def test_without_home_the_store_is_in_the_output_folder(self, tmp_path: Path) -> None:
        spec = make_spec(tmp_path, tracking=["mlflow"])
        _, env = configure_tracking(spec, None)
        assert env["MLFLOW_TRACKING_URI"] == default_tracking_uri(Path(spec.output_dir))

    def test_tensorboard_writes_under_the_output_folder(self, tmp_path: Path) -> None:
        spec = make_spec(tmp_path, tracking=["tensorboard"])
        report_to, env = configure_tracking(spec, tmp_path / "home")
        assert report_to == ["tensorboard"]
        assert env == {"TENSORBOARD_LOGGING_DIR": str(tmp_path / "output" / "tensorboard")}

    def test_both_in_a_fixed_order(self, tmp_path: Path) -> None:
        spec = make_spec(tmp_path, tracking=["tensorboard", "mlflow", "tensorboard"])
        report_to, env = configure_tracking(spec, tmp_path)
        assert report_to == ["mlflow", "tensorboard"]
        assert {"MLFLOW_TRACKING_URI", "TENSORBOARD_LOGGING_DIR"} <= env.keys()

    def test_tracking_uri_in_the_environment_turns_mlflow_on(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
        report_to, env = configure_tracking(make_spec(tmp_path), tmp_path / "home")
        assert report_to == ["mlflow"]
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow.example:5000"

    def test_tracking_uri_in_the_environment_wins_over_home(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////srv/shared/mlflow.db")
        monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "team-runs")
        spec = make_spec(tmp_path, tracking=["mlflow", "tensorboard"])
        report_to, env = configure_tracking(spec, tmp_path / "home")
        assert report_to == ["mlflow", "tensorboard"]
        assert env["MLFLOW_TRACKING_URI"] == "sqlite:////srv/shared/mlflow.db"
        assert env["MLFLOW_EXPERIMENT_NAME"] == "team-runs"

    def test_an_explicit_environ_is_read_instead_of_the_process_one(self, tmp_path: Path) -> None:
        environ = {"MLFLOW_TRACKING_URI": "http://other:5000"}
        _, env = configure_tracking(make_spec(tmp_path), tmp_path, environ)
        assert env["MLFLOW_TRACKING_URI"] == "http://other:5000"

    def test_tracking_uri_without_mlflow_installed_is_ignored(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
        hide_packages(monkeypatch, "mlflow")
        assert configure_tracking(make_spec(tmp_path), tmp_path) == ([], {})

    def test_leaves_the_process_environment_alone(self, tmp_path: Path) -> None:
        before = dict(os.environ)
        configure_tracking(make_spec(tmp_path, tracking=["mlflow", "tensorboard"]), tmp_path)
        assert dict(os.environ) == before


class TestTrackingRule:
    def test_installed_trackers_pass(self) -> None:
        cfg = make_spec(Path("/unused"), tracking=["mlflow", "tensorboard"]).config
        issues = TrainingParameterValidator().validate(cfg)
        assert [i for i in issues if i.field == "tracking"] == []

    @pytest.mark.parametrize("tracker", ["mlflow", "tensorboard"])
    def test_a_missing_package_is_named_with_the_fix(
        self, tracker: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        hide_packages(monkeypatch, "mlflow", "tensorboard", "tensorboardX")
        cfg = make_spec(Path("/unused"), tracking=[tracker]).config
        with pytest.raises(ConfigValidationError, match=r"pip install 'flextrain\[tracking\]'"):
            TrainingParameterValidator().validate_or_raise(cfg)
        issues = [i for i in TrainingParameterValidator().validate(cfg) if i.field == "tracking"]
        assert len(issues) == 1
        assert issues[0].severity == "error"
        assert f"{tracker} package is not installed" in issues[0].message


class TestMlflowRun:
    def test_without_mlflow_it_yields_no_run(self, tmp_path: Path) -> None:
        with mlflow_run(["tensorboard"], {}, run_name="x") as run_id:
            assert run_id is None
        log_final_model(run_id, tmp_path)  # nothing to do, nothing raised

    def test_refuses_a_store_other_than_the_environment_names(self, tmp_path: Path) -> None:
        env = {"MLFLOW_TRACKING_URI": default_tracking_uri(tmp_path)}
        with (
            pytest.raises(RuntimeError, match="configure_tracking"),
            mlflow_run(["mlflow"], env, run_name="x"),
        ):
            pass

    def test_a_failing_block_marks_the_run_failed(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from mlflow import MlflowClient

        report_to, env = configure_tracking(make_spec(tmp_path, tracking=["mlflow"]), tmp_path)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        with pytest.raises(ValueError, match="boom"), mlflow_run(report_to, env, run_name="x"):
            raise ValueError("boom")
        client = MlflowClient(env["MLFLOW_TRACKING_URI"])
        experiment = client.get_experiment_by_name(EXPERIMENT_NAME)
        assert experiment is not None
        assert experiment.artifact_location == (tmp_path / "mlartifacts").resolve().as_uri()
        (run,) = client.search_runs([experiment.experiment_id])
        assert run.info.status == "FAILED"
        assert run.data.tags["flextrain.job_id"] == JOB_ID


def test_training_logs_to_mlflow_and_tensorboard(
    tmp_path: Path, models_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch
    from datasets import Dataset
    from mlflow import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from transformers import (
        AutoTokenizer,
        DataCollatorForLanguageModeling,
        LlamaConfig,
        LlamaForCausalLM,
        Trainer,
        TrainingArguments,
    )

    from flextrain.models.builtin import TINY_LLAMA_ID, builtin_path

    home = tmp_path / "home"
    spec = make_spec(tmp_path, tracking=["mlflow", "tensorboard"], learning_rate=1e-2)
    report_to, env = configure_tracking(spec, home)
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    tokenizer = AutoTokenizer.from_pretrained(builtin_path(TINY_LLAMA_ID, models_cache))
    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            max_position_embeddings=64,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    texts = [f"the garden was {w} today" for w in ("warm", "bright", "cold", "dull")] * 4
    data = Dataset.from_dict(dict(tokenizer(texts)))
    run_name = spec.config.run_name or spec.job_id
    trainer = Trainer(
        model=model,
        args=TrainingArguments(
            output_dir=spec.checkpoint_dir,
            run_name=run_name,
            max_steps=6,
            per_device_train_batch_size=4,
            learning_rate=spec.config.learning_rate,
            logging_steps=1,
            save_strategy="no",
            use_cpu=True,
            report_to=report_to,
            disable_tqdm=True,
        ),
        train_dataset=data,
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
    )
    model_dir = Path(spec.model_dir)
    with mlflow_run(report_to, env, run_name=run_name) as run_id:
        trainer.train()
        trainer.evaluate(data)  # after the callback's train end: must join the same run
        trainer.save_model(str(model_dir))
        log_final_model(run_id, model_dir)

    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("flextrain")
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_id == run_id
    assert run.info.run_name == JOB_ID
    assert run.info.status == "FINISHED"
    assert run.data.params["learning_rate"] == "0.01"
    assert run.data.params["hidden_size"] == "32"
    assert run.data.tags["flextrain.dataset_version"] == DATASET_VERSION
    assert "eval_loss" in run.data.metrics
    losses = client.get_metric_history(run.info.run_id, "loss")
    assert len({m.step for m in losses}) > 1
    artifacts = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "model")}
    assert {"config.json", "model.safetensors"} <= artifacts
    assert (home / "mlartifacts" / run.info.run_id / "artifacts" / "model").is_dir()

    tensorboard_dir = Path(spec.output_dir) / "tensorboard"
    assert list(tensorboard_dir.glob("events.out.tfevents.*"))
    events = EventAccumulator(str(tensorboard_dir))
    events.Reload()
    assert len(events.Scalars("train/loss")) > 1
