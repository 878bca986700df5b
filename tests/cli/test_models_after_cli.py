"""`flextrain models merge|export`, `flextrain try` and `flextrain evaluate`, in-process.

One tiny LoRA job is trained once for the module (through the service, which is
quicker than following it through `flextrain train`); every command then runs
against it as a user would, settings from FLEXTRAIN_HOME and FLEXTRAIN_DATABASE_URL.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from click.testing import Result
from typer.testing import CliRunner

from flextrain.cli.main import app
from flextrain.config.enums import TrainingType
from flextrain.config.schemas import AdvancedTrainingConfig, BasicTrainingConfig
from flextrain.jobs.store import TrainingJob
from flextrain.service import TrainingService
from flextrain.settings import Settings
from tests.train.helpers import run_job


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, models_cache: Path) -> Iterator[TrainingJob]:
    home = tmp_path_factory.mktemp("after-cli") / "home"
    settings = Settings(home=home, models_cache=models_cache)
    service = TrainingService(settings)
    try:
        job = run_job(
            service,
            AdvancedTrainingConfig(
                model_id="flextrain/tiny-llama",
                dataset_id="demo/text",
                training_type=TrainingType.LORA_ADAPTATION,
                max_steps=4,
                batch_size=16,
                learning_rate=2e-2,
                max_length=32,
                eval_split=0.1,
                evaluate_before_training=False,
                lora_r=4,
                lora_alpha=8,
                num_threads=2,
                save_total_limit=1,
                gradient_checkpointing=False,
            ),
        )
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("FLEXTRAIN_HOME", str(settings.home))
            patch.setenv("FLEXTRAIN_MODELS_CACHE", str(models_cache))
            patch.setenv("FLEXTRAIN_DATABASE_URL", settings.resolved_database_url)
            patch.setenv("COLUMNS", "300")  # rich tables unwrapped
            yield job
    finally:
        service.engine.dispose()


@pytest.fixture(scope="module")
def lora_classifier(trained: TrainingJob) -> TrainingJob:
    """A LoRA classifier in the same home (the environment `trained` set) that held no
    rows out."""
    service = TrainingService(Settings())
    try:
        return run_job(
            service,
            AdvancedTrainingConfig(
                model_id="flextrain/tiny-bert",
                dataset_id="demo/sentiment",
                training_type=TrainingType.LORA_ADAPTATION,
                max_steps=2,
                batch_size=16,
                max_length=32,
                eval_split=0.0,
                eval_strategy="no",
                evaluate_before_training=False,
                lora_r=4,
                lora_alpha=8,
                num_threads=2,
                save_total_limit=1,
                gradient_checkpointing=False,
            ),
        )
    finally:
        service.engine.dispose()


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def flat(result: Result) -> str:
    return " ".join(result.output.split())


def test_merge_writes_the_merged_model(trained: TrainingJob, tmp_path: Path) -> None:
    result = invoke("models", "merge", trained.job_id, "--out", str(tmp_path / "m"), "--json")
    assert result.exit_code == 0, result.output
    merged = json.loads(result.stdout)
    assert "model.safetensors" in merged["files"]
    assert (tmp_path / "m" / "config.json").exists()

    again = invoke("models", "merge", trained.job_id, "--out", str(tmp_path / "m"))
    assert again.exit_code == 2
    assert "is not empty" in flat(again)
    assert "--force" in flat(again)
    assert "Traceback" not in again.output

    forced = invoke("models", "merge", trained.job_id, "--out", str(tmp_path / "m"), "--force")
    assert forced.exit_code == 0, forced.output
    assert "Merged" in flat(forced)


def test_export_writes_a_folder_with_a_model_card(trained: TrainingJob, tmp_path: Path) -> None:
    out = tmp_path / "export"
    result = invoke("models", "export", trained.job_id, str(out))
    assert result.exit_code == 0, result.output
    assert "Exported" in flat(result)
    assert "merged weights" in flat(result)
    card = (out / "README.md").read_text()
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["base_model"] == "flextrain/tiny-llama"
    assert front["datasets"] == ["demo/text"]
    assert not (out / "training_args.bin").exists()

    refused = invoke("models", "export", trained.job_id, str(out))
    assert refused.exit_code == 2
    assert "not empty" in flat(refused)


def test_try_prints_trained_and_base_side_by_side(trained: TrainingJob) -> None:
    result = invoke("try", trained.job_id, "The river", "In the morning", "--max-new-tokens", "4")
    assert result.exit_code == 0, result.output
    # The column headers (the title above them reads "Trained ... beside base ...: 2 inputs").
    header = next(line for line in result.output.splitlines() if "┃ input" in line)
    assert header.index("trained") < header.index("base")
    assert "The river" in result.output
    assert "In the morning" in result.output

    as_json = invoke("try", trained.job_id, "The river", "--max-new-tokens", "2", "--json")
    rows = json.loads(as_json.stdout)["rows"]
    assert rows[0]["input"] == "The river"
    assert isinstance(rows[0]["base"]["generation"], str)


def test_evaluate_prints_a_table_of_both_models(trained: TrainingJob) -> None:
    result = invoke("evaluate", trained.job_id, "--dataset", "demo/text", "--limit", "30")
    assert result.exit_code == 0, result.output
    text = flat(result)
    assert "demo/text" in text
    assert "30 rows" in text
    assert "perplexity" in text
    assert "trained" in text
    assert "base" in text

    as_json = invoke("evaluate", trained.job_id, "--split", "heldout", "--json")
    assert as_json.exit_code == 0, as_json.output
    body = json.loads(as_json.stdout)
    assert body["split"] == "heldout"
    assert body["trained"]["loss"] > 0


def test_evaluate_defaults_to_the_heldout_rows_and_says_which(trained: TrainingJob) -> None:
    """Issue 19: `evaluate JOB` scored the model partly on its training rows."""
    as_json = invoke("evaluate", trained.job_id, "--json")
    assert as_json.exit_code == 0, as_json.output
    body = json.loads(as_json.stdout)
    rows = trained.metrics["eval_rows"]
    assert (body["split"], body["rows"]) == ("heldout", rows)
    assert rows > 0
    what = f": demo/text, split heldout, {rows} rows, {body['tokens']:,} tokens"
    assert body["title"].endswith(what)
    held_note = (
        f"split heldout: all {rows} rows job {trained.job_id} held out of 'demo/text' "
        "(eval_split 0.1, seed 42) were scored; it never trained on them."
    )
    assert body["notes"][0] == held_note

    table = invoke("evaluate", trained.job_id)
    assert table.exit_code == 0, table.output
    assert body["title"] in flat(table)
    assert f"note: {held_note}" in flat(table)

    everything = invoke("evaluate", trained.job_id, "--split", "all", "--limit", "20")
    assert everything.exit_code == 0, everything.output
    assert "demo/text, split all, 20 rows" in flat(everything)
    assert f"including rows job {trained.job_id} trained on" in flat(everything)


def test_evaluate_of_a_job_that_held_nothing_out_says_so(lora_classifier: TrainingJob) -> None:
    job_id = lora_classifier.job_id
    result = invoke("evaluate", job_id, "--limit", "40")
    assert result.exit_code == 0, result.output
    text = flat(result)
    assert (
        f"Trained (job {job_id}, classifier) beside base (flextrain/tiny-bert): "
        "demo/sentiment, split all, 40 rows"
    ) in text
    assert (
        f"note: split all: job {job_id} held out no rows (eval_split 0, no eval_file), so 40 "
        "of the 480 rows of 'demo/sentiment' were scored, rows it trained on"
    ) in text
    as_json = invoke("evaluate", job_id, "--limit", "40", "--json")
    assert json.loads(as_json.stdout)["split"] == "all"
    refused = invoke("evaluate", job_id, "--split", "heldout")
    assert refused.exit_code == 2
    assert "held out no rows" in flat(refused)


def test_try_titles_are_worded_alike_for_every_kind_of_job(
    trained: TrainingJob, lora_classifier: TrainingJob
) -> None:
    """Issue 19: classifier and causal LM tables were titled differently."""
    lm = invoke("try", trained.job_id, "The river", "--max-new-tokens", "2")
    cls = invoke("try", lora_classifier.job_id, "Lovely food.", "Awful.")
    assert lm.exit_code == 0, (lm.output, cls.output)
    assert cls.exit_code == 0, (lm.output, cls.output)
    assert (
        f"Trained (job {trained.job_id}, causal LM) beside base (flextrain/tiny-llama): 1 input"
        in flat(lm)
    )
    assert (
        f"Trained (job {lora_classifier.job_id}, classifier) beside base "
        "(flextrain/tiny-bert): 2 inputs"
    ) in flat(cls)
    as_json = invoke("try", lora_classifier.job_id, "Lovely food.", "--json")
    assert json.loads(as_json.stdout)["title"].endswith("(flextrain/tiny-bert): 1 input")


def test_models_list_names_a_lora_classifier_by_its_task_model(
    lora_classifier: TrainingJob,
) -> None:
    """Issue 19: a LoRA classifier was listed as its base's class."""
    listed = invoke("models", "list", "--json")
    assert listed.exit_code == 0, listed.output
    mine = [m for m in json.loads(listed.stdout) if m["job_id"] == lora_classifier.job_id]
    assert [(m["architecture"], m["adapter"]) for m in mine] == [
        ("BertForSequenceClassification", True)
    ]
    table = invoke("models", "list")
    row = next(line for line in table.output.splitlines() if lora_classifier.job_id in line)
    assert "trained (adapter)" in row
    assert "BertForSequenceClassification" in row


def test_errors_name_the_problem_without_a_traceback(trained: TrainingJob) -> None:
    unknown = invoke("evaluate", trained.job_id, "--dataset", "no-such-data")
    assert unknown.exit_code == 2
    assert "no-such-data" in flat(unknown)
    bad_split = invoke("evaluate", trained.job_id, "--split", "train")
    assert bad_split.exit_code == 2
    assert "--split" in flat(bad_split)
    no_job = invoke("try", "0123456789ab", "hello")
    assert no_job.exit_code == 2
    assert "0123456789ab" in flat(no_job)

    service = TrainingService(Settings())  # from the environment, as the CLI builds it
    try:
        pending = service.create_job(
            BasicTrainingConfig(
                model_id="flextrain/tiny-llama",
                dataset_id="demo/text",
                training_type=TrainingType.FINE_TUNING,
                max_length=32,
            )
        )
    finally:
        service.engine.dispose()
    refused = invoke("models", "merge", pending.job_id)
    assert refused.exit_code == 2
    assert "pending" in flat(refused)
    assert "completed job" in flat(refused)
    for result in (unknown, bad_split, no_job, refused):
        assert "Traceback" not in result.output
