"""`flextrain check`: memory parts, time, verdict and fixes, through Typer's CliRunner.

Settings come from FLEXTRAIN_HOME / FLEXTRAIN_MODELS_CACHE as for a user. One
test runs the calibration probe for real (tiny-llama, two small batches).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from typer.testing import CliRunner

from flextrain.cli.main import app
from flextrain.cli.train import parse_training_type
from flextrain.config.enums import TrainingType
from flextrain.estimate.timing import STARTUP_SECONDS


@pytest.fixture
def home(tmp_path: Path, models_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("FLEXTRAIN_HOME", str(home))
    monkeypatch.setenv("FLEXTRAIN_MODELS_CACHE", str(models_cache))
    # Wide enough that rich never wraps or truncates a table cell.
    monkeypatch.setenv("COLUMNS", "400")
    return home


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def flat(result: Result) -> str:
    return " ".join(result.output.split())


DATASETS = [
    pytest.param((), id="no-dataset"),
    pytest.param(("--dataset", "demo/text"), id="demo-text"),
]


def check(*args: str) -> Result:
    return invoke("check", *args)


@pytest.mark.parametrize("dataset", DATASETS)
def test_check_prints_memory_time_and_verdict(home: Path, dataset: tuple[str, ...]) -> None:
    result = check(
        "flextrain/tiny-llama", "--type", "lora", "--batch-size", "4", "--max-length", "64",
        *dataset,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    text = flat(result)
    assert "peak" in text
    assert "Compatible" in text
    assert "Not compatible" not in text
    row = next(line for line in result.output.splitlines() if "LoRA targets" in line)
    assert "q_proj, v_proj" in row
    assert "Memory (analytic" in text
    assert "Time: about" in text
    assert "Recommended batch size: 4" in text
    if not dataset:
        assert "assuming 1000 rows of 64 tokens" in text
    else:
        assert "assuming" not in text


@pytest.mark.parametrize("dataset", DATASETS)
def test_check_json(home: Path, dataset: tuple[str, ...]) -> None:
    result = check(
        "flextrain/tiny-llama", "--type", "lora", "--batch-size", "4", "--max-length", "64",
        "--json", *dataset,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert {"memory", "time", "is_compatible"} <= set(data)
    assert data["is_compatible"] is True
    assert data["training_type"] == "lora_adaptation"
    assert data["memory"]["source"] == "analytic"
    assert data["memory"]["peak_gb"] > 0
    assert data["time"]["low_seconds"] <= data["time"]["seconds"] <= data["time"]["high_seconds"]
    assert data["time"]["epochs"] == 3  # the command's default
    assert data["time"]["tokens_per_epoch"] > 0
    assert (data["time"]["assumption"] is None) == bool(dataset)
    assert data["probe"] is None


def test_check_flags_reach_the_estimate(home: Path) -> None:
    def lora_report(*extra: str) -> dict:
        result = check(
            "flextrain/tiny-llama", "--type", "lora", "--batch-size", "4", "--max-length", "64",
            "--dataset", "demo/text", "--json", *extra,
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    r16 = lora_report()
    r32 = lora_report("--lora-r", "32")
    assert r32["memory"]["trainable_parameters"] == 2 * r16["memory"]["trainable_parameters"]
    longer = lora_report("--epochs", "6")

    # Twice the epochs: twice the arithmetic and the per-step costs; start-up once.
    def variable(report: dict[str, Any]) -> float:
        time = report["time"]
        startup = STARTUP_SECONDS["cpu"][1]
        return float(time["seconds"]) - startup

    assert variable(longer) == pytest.approx(2 * variable(r16))


def test_check_unknown_type_is_bad_input(home: Path) -> None:
    result = check("flextrain/tiny-llama", "--type", "bogus")
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    text = flat(result)
    assert "'bogus' is not a training type" in text
    assert "lora_adaptation" in text  # the fix lists what is accepted


def test_check_unknown_dataset_is_bad_input(home: Path) -> None:
    result = check("flextrain/tiny-llama", "--dataset", "no/such-data")
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "no/such-data" in flat(result)


@pytest.mark.parametrize("dataset", DATASETS)
def test_check_missing_model_is_not_compatible(home: Path, dataset: tuple[str, ...]) -> None:
    result = check("/nonexistent/model", *dataset)
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    text = flat(result)
    assert "Not compatible" in text
    assert "does not exist" in text


@pytest.mark.parametrize("dataset", DATASETS)
def test_check_missing_model_json(home: Path, dataset: tuple[str, ...]) -> None:
    result = check("/nonexistent/model", "--json", *dataset)
    assert result.exit_code == 1, result.output
    data = json.loads(result.stdout)
    assert data["is_compatible"] is False
    assert data["memory"] is None
    assert any("does not exist" in issue for issue in data["issues"])


# One real probe is enough: of a QLoRA run (4-bit base) where bitsandbytes is installed,
# as in `make test`, since the probe must build the model as that job would.
PROBED_TYPE = "qlora" if importlib.util.find_spec("bitsandbytes") else "fine_tuning"


@pytest.mark.parametrize("dataset", [()], ids=["no-dataset"])
def test_check_with_probe(home: Path, dataset: tuple[str, ...]) -> None:
    result = check(
        "flextrain/tiny-llama", "--batch-size", "4", "--max-length", "32", "--probe", "--json",
        "--type", PROBED_TYPE, *dataset,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["memory"]["source"] == "probe"
    probe = data["probe"]
    assert len(probe["points"]) >= 2
    assert [p["batch_size"] for p in probe["points"]] == [
        1,
        4,
    ]  # a quarter of the target, and the target itself
    assert all(p["seq_len"] == 32 for p in probe["points"])
    assert data["memory"]["peak_gb"] == pytest.approx(probe["predicted_peak_gb"])
    assert data["time"]["source"] == "probe"
    assert data["warnings"] == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("lora", TrainingType.LORA_ADAPTATION),
        ("LoRA", TrainingType.LORA_ADAPTATION),
        ("full", TrainingType.FULL_TRAINING),
        ("cpt", TrainingType.CONTINUED_PRETRAINING),
        ("task", TrainingType.TASK_SPECIFIC),
        ("fine", TrainingType.FINE_TUNING),
        ("fine_tuning", TrainingType.FINE_TUNING),
        ("fine-tuning", TrainingType.FINE_TUNING),
        (" lora_adaptation ", TrainingType.LORA_ADAPTATION),
    ],
)
def test_parse_training_type(value: str, expected: TrainingType) -> None:
    assert parse_training_type(value) is expected


@pytest.mark.parametrize("value", ["bogus", "", "lora2"])
def test_parse_training_type_rejects_unknown_names(value: str) -> None:
    with pytest.raises(ValueError, match=r"--type: .* is not a training type\. Fix: use one of"):
        parse_training_type(value)


def test_check_reports_the_configs_own_errors(home: Path) -> None:
    result = check(
        "flextrain/tiny-llama",
        "--optim",
        "bogus",
        "--batch-size",
        "4",
        "--max-length",
        "32",
        "--json",
    )
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["is_compatible"] is False
    assert any(issue.startswith("optim: 'bogus'") for issue in report["issues"])


def test_check_a_full_weight_dpo_run_counts_its_reference_and_probes_pairs(home: Path) -> None:
    result = check(
        "flextrain/tiny-llama", "--type", "dpo", "--full-weights", "--batch-size", "4",
        "--max-length", "32", "--probe",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "reference model" in text
    assert "Memory (probe, cpu)" in text


def test_check_grpo_counts_its_sampling(home: Path) -> None:
    result = check(
        "flextrain/tiny-llama", "--type", "grpo", "--batch-size", "8", "--max-length", "32",
        "--completion-length", "16", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["memory"]["generation_gb"] > 0
    assert data["memory"]["reference_gb"] == 0  # LoRA: the adapter-off base is the reference
    assert data["time"]["optimizer_steps"] >= 1


def test_check_qlora_counts_a_4bit_base(home: Path) -> None:
    pytest.importorskip("bitsandbytes")
    args = ("flextrain/tiny-llama", "--batch-size", "4", "--max-length", "32", "--json")
    lora = json.loads(check(*args, "--type", "lora").stdout)["memory"]
    result = check(*args, "--type", "qlora")
    assert result.exit_code == 0, result.output
    qlora = json.loads(result.stdout)["memory"]
    # The blocks' weights in 4 bits: less than LoRA's float32 base, the same adapters.
    assert qlora["weights_gb"] < lora["weights_gb"]
    assert qlora["dequantization_gb"] > 0 == lora["dequantization_gb"]
    assert qlora["trainable_parameters"] == lora["trainable_parameters"]
    assert any("4 bits" in note for note in qlora["notes"])
    table = flat(check("flextrain/tiny-llama", "--type", "qlora", "--batch-size", "4"))
    assert "4-bit dequantization" in table
