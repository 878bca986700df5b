"""The `flextrain` command line, run in-process through Typer's CliRunner.

Settings come from FLEXTRAIN_HOME / FLEXTRAIN_MODELS_CACHE exactly as for a user;
the two train tests run real (tiny) training in a worker process.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import yaml
from click.testing import Result
from typer.testing import CliRunner

from flextrain.cli.main import app
from flextrain.jobs.workerenv import tcmalloc_path
from flextrain.service import TrainingService
from flextrain.settings import Settings
from tests.train.helpers import write_keyword_sentiment

TRAIN_FAST = [
    "--model",
    "flextrain/tiny-llama",
    "--epochs",
    "1",
    "--batch-size",
    "16",
    "--max-length",
    "48",
]


@pytest.fixture
def home(tmp_path: Path, models_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    home = tmp_path / "home"
    monkeypatch.setenv("FLEXTRAIN_HOME", str(home))
    monkeypatch.setenv("FLEXTRAIN_MODELS_CACHE", str(models_cache))
    # Wide enough that rich never truncates a job id, status or path in a table.
    monkeypatch.setenv("COLUMNS", "400")
    yield home
    # Never leave a worker behind, whatever the test did.
    if (home / "flextrain.db").exists():
        svc = TrainingService(Settings(home=home, models_cache=models_cache))
        try:
            for job in svc.list_jobs():
                if not job.is_finished:
                    svc.cancel_job(job.job_id)
        finally:
            svc.engine.dispose()


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def flat(result: Result) -> str:
    """All output (stdout and stderr) with line wrapping undone."""
    return " ".join(result.output.split())


def job_id_of(result: Result) -> str:
    match = re.search(r"Job ([0-9a-f]{12}) started", result.output)
    assert match, result.output
    return match.group(1)


def show_json(job_id: str) -> dict:
    result = invoke("jobs", "show", job_id, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def assert_nothing_written(home: Path) -> None:
    result = invoke("jobs", "list", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == []
    jobs_dir = home / "jobs"
    assert not jobs_dir.exists() or list(jobs_dir.iterdir()) == []


# -- hardware --------------------------------------------------------------------------


def test_hardware_prints_a_table(home: Path) -> None:
    result = invoke("hardware")
    assert result.exit_code == 0, result.output
    assert "CPU cores" in result.output
    assert "Recommended precision" in result.output
    assert "fp32" in result.output  # this machine has no GPU


def test_hardware_json(home: Path) -> None:
    result = invoke("hardware", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    for key in ("available_memory_gb", "gpu_count", "cpu_cores", "recommended_precision"):
        assert key in data
    assert data["gpu_count"] == 0
    assert data["cpu_cores"] >= 1
    assert data["available_memory_gb"] > 0
    assert data["recommended_precision"] == "fp32"


# -- train, then inspect the job -------------------------------------------------------


def test_train_then_jobs_list_show_logs(home: Path) -> None:
    result = invoke(
        "train",
        *TRAIN_FAST,
        "--dataset",
        "demo/text",
        "--type",
        "fine_tuning",
        "--learning-rate",
        "0.003",
    )
    assert result.exit_code == 0, result.output
    assert "Completed" in result.output
    job_id = job_id_of(result)
    match = re.search(r"Model saved to (\S+)", result.output)
    assert match, result.output
    model_path = Path(match.group(1))
    assert model_path.is_dir()
    assert (model_path / "config.json").is_file()
    assert model_path.is_relative_to(home / "jobs" / job_id)

    listed = invoke("jobs", "list")
    assert listed.exit_code == 0, listed.output
    row = next(line for line in listed.output.splitlines() if job_id in line)
    assert "completed" in row

    data = show_json(job_id)
    assert data["job_id"] == job_id
    assert data["status"] == "completed"
    assert data["mode"] == "basic"
    assert data["config"]["num_epochs"] == 1
    assert data["config"]["learning_rate"] == pytest.approx(0.003)
    assert data["config"]["max_length"] == 48
    assert data["model_path"] == str(model_path)

    logs = invoke("jobs", "logs", job_id)
    assert logs.exit_code == 0, logs.output
    assert "[flextrain] completed" in logs.output
    # The worker ran with tcmalloc where this machine has it (jobs/launch.py).
    assert ("threads, tcmalloc" in logs.output) == (tcmalloc_path() is not None), logs.output


def test_train_from_config_file_with_flag_override(home: Path, tmp_path: Path) -> None:
    data = write_keyword_sentiment(tmp_path / "kw.jsonl", rows=96)
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "model_id": "flextrain/tiny-llama",
                "dataset_id": str(data),
                "training_type": "lora_adaptation",
                "num_epochs": 5,
                "learning_rate": 0.003,
                "batch_size": 16,
                "max_length": 48,
                "lora_r": 4,
                "lora_alpha": 8,
                "evaluate_before_training": False,
            }
        )
    )
    result = invoke("train", "--config", str(cfg), "--epochs", "1")
    assert result.exit_code == 0, result.output
    assert "Completed" in result.output
    job = show_json(job_id_of(result))
    assert job["status"] == "completed"
    assert job["mode"] == "advanced"
    assert job["config"]["num_epochs"] == 1  # the flag wins over the file
    assert job["config"]["lora_r"] == 4
    assert job["config"]["lora_alpha"] == 8
    assert job["config"]["training_type"] == "lora_adaptation"


# -- bad input: a message, exit code 2, nothing written --------------------------------


def _bad_config(tmp_path: Path, **extra: object) -> Path:
    path = tmp_path / "bad.yaml"
    values: dict[str, object] = {
        "model_id": "flextrain/tiny-llama",
        "dataset_id": "demo/text",
        "training_type": "fine_tuning",
        **extra,
    }
    path.write_text(yaml.safe_dump(values))
    return path


def _assert_bad_input(result: Result, *needles: str) -> None:
    text = flat(result)
    assert result.exit_code == 2, result.output
    # A clean exit, not an exception escaping the command.
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in text, (needle, result.output)


def test_unknown_key_in_config_file(home: Path, tmp_path: Path) -> None:
    result = invoke("train", "--config", str(_bad_config(tmp_path, lerning_rate=0.1)))
    _assert_bad_input(result, "lerning_rate")
    assert_nothing_written(home)


def test_negative_learning_rate(home: Path) -> None:
    result = invoke(
        "train", *TRAIN_FAST, "--dataset", "demo/text", "--type", "fine_tuning",
        "--learning-rate", "-1",
    )  # fmt: skip
    _assert_bad_input(result, "learning_rate", "Fix:")
    assert_nothing_written(home)


def test_fp16_on_a_cpu_machine(home: Path, tmp_path: Path) -> None:
    result = invoke("train", "--config", str(_bad_config(tmp_path, fp16=True)))
    _assert_bad_input(result, "fp16", "Fix:")
    assert_nothing_written(home)


def test_unknown_dataset(home: Path) -> None:
    result = invoke("train", *TRAIN_FAST, "--dataset", "no/such-data", "--type", "fine_tuning")
    _assert_bad_input(result, "no/such-data", "not registered")
    assert_nothing_written(home)


def test_missing_model_folder(home: Path) -> None:
    result = invoke(
        "train", "--model", "/nonexistent/model", "--dataset", "demo/text",
        "--type", "fine_tuning",
    )  # fmt: skip
    _assert_bad_input(result, "/nonexistent/model", "does not exist")
    assert_nothing_written(home)


def test_missing_type(home: Path) -> None:
    result = invoke("train", *TRAIN_FAST, "--dataset", "demo/text")
    _assert_bad_input(result, "--type")
    assert_nothing_written(home)


def test_unknown_type_value(home: Path) -> None:
    result = invoke("train", *TRAIN_FAST, "--dataset", "demo/text", "--type", "bogus")
    _assert_bad_input(result, "bogus")
    assert_nothing_written(home)


def test_missing_config_file(home: Path, tmp_path: Path) -> None:
    result = invoke("train", "--config", str(tmp_path / "absent.yaml"))
    _assert_bad_input(result, "absent.yaml", "does not exist")
    assert_nothing_written(home)


def test_jobs_show_unknown(home: Path) -> None:
    result = invoke("jobs", "show", "nope")
    _assert_bad_input(result, "No training job", "nope")
    assert_nothing_written(home)


def test_jobs_cancel_unknown(home: Path) -> None:
    result = invoke("jobs", "cancel", "nope")
    _assert_bad_input(result, "No training job", "nope")
    assert_nothing_written(home)


def test_jobs_logs_unknown(home: Path) -> None:
    result = invoke("jobs", "logs", "nope")
    _assert_bad_input(result, "No training job")


# -- datasets --------------------------------------------------------------------------


def test_datasets_register_and_list(home: Path, tmp_path: Path) -> None:
    csv_file = tmp_path / "reviews.csv"
    csv_file.write_text(
        "text,label\n"
        "the soup was warm,positive\n"
        "the train was late,negative\n"
        "the garden was lovely,positive\n"
        "the bill was wrong,negative\n"
    )
    result = invoke("datasets", "register", "mydata", str(csv_file))
    assert result.exit_code == 0, result.output
    assert "mydata" in result.output
    assert "4 rows" in result.output
    assert "classification" in result.output

    listed = invoke("datasets", "list")
    assert listed.exit_code == 0, listed.output
    for name in ("demo/sentiment", "demo/text", "mydata"):
        assert name in listed.output
    row = next(line for line in listed.output.splitlines() if "mydata" in line)
    assert "classification" in row
    assert "negative, positive" in row


def test_datasets_register_unsupported_extension(home: Path, tmp_path: Path) -> None:
    xml = tmp_path / "data.xml"
    xml.write_text("<rows><row>hello</row></rows>\n")
    result = invoke("datasets", "register", "x", str(xml))
    _assert_bad_input(result, "data.xml", "unsupported suffix .xml", ".csv", ".jsonl", ".txt")
    listed = invoke("datasets", "list")
    assert " x " not in flat(listed)


# -- detach and cancel -----------------------------------------------------------------


def test_detach_then_cancel(home: Path) -> None:
    result = invoke(
        "train",
        "--model",
        "flextrain/tiny-llama",
        "--dataset",
        "demo/text",
        "--type",
        "full_training",
        "--epochs",
        "300",
        "--batch-size",
        "8",
        "--max-length",
        "48",
        "--learning-rate",
        "0.001",
        "--detach",
    )
    assert result.exit_code == 0, result.output
    job_id = job_id_of(result)
    started = show_json(job_id)
    assert started["status"] in ("preparing", "training")
    pid = started["pid"]
    assert pid is not None
    assert psutil.pid_exists(pid)

    cancelled = invoke("jobs", "cancel", job_id)
    assert cancelled.exit_code == 0, cancelled.output
    assert "cancelled" in cancelled.output
    assert show_json(job_id)["status"] == "cancelled"
    # The worker is really gone (reaped, or at worst a zombie).
    if psutil.pid_exists(pid):
        assert psutil.Process(pid).status() == psutil.STATUS_ZOMBIE

    again = invoke("jobs", "cancel", job_id)
    _assert_bad_input(again, "already cancelled")


@pytest.mark.parametrize("dataset_id", ["reviews[v2].jsonl", "reviews[/v2].jsonl"])
def test_error_messages_show_user_text_verbatim(home: Path, dataset_id: str) -> None:
    result = invoke("train", *TRAIN_FAST, "--dataset", dataset_id, "--type", "fine_tuning")
    _assert_bad_input(result, dataset_id, "not registered")


def test_an_unreachable_database_is_one_clear_line(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A team server's PostgreSQL being down is an error message, not a traceback."""
    monkeypatch.setenv("FLEXTRAIN_DATABASE_URL", "postgresql+psycopg://nobody@127.0.0.1:1/none")
    result = invoke("jobs", "list")
    assert result.exit_code == 1
    assert "The job database could not be used" in flat(result)
    assert "FLEXTRAIN_DATABASE_URL" in flat(result)
    assert "Traceback" not in result.output
