"""After training: merge, export, try and evaluate, on two real tiny jobs.

One LoRA causal LM (tiny Llama on the bundled instructions, registered so it has
a content hash) and one classifier (tiny BERT trained in full on demo/sentiment)
are trained once for the module; every test reads them. The checks are what a
user relies on: the merged model computes what base + adapter computed, the card
names the exact data, evaluation tokenises as training did (it reproduces the
job's own held-out metrics), and training shows up as a better trained column.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from flextrain.config.enums import TrainingType
from flextrain.config.schemas import AdvancedTrainingConfig, BasicTrainingConfig
from flextrain.data.bundled import bundled_path
from flextrain.jobs.errors import JobStateError
from flextrain.jobs.store import TrainingJob
from flextrain.models.evaluate import evaluate, try_model
from flextrain.models.export import export, merge
from flextrain.models.trained import AfterTrainingError, OutputExistsError
from flextrain.service import TrainingService
from flextrain.settings import Settings
from tests.models.after_helpers import FAST, lora_lm_config
from tests.train.helpers import run_job


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, models_cache: Path) -> Iterator[Any]:
    home = tmp_path_factory.mktemp("after") / "home"
    svc = TrainingService(Settings(home=home, models_cache=models_cache))
    yield svc
    for job in svc.list_jobs():
        if not job.is_finished:
            svc.cancel_job(job.job_id)
    svc.engine.dispose()


@pytest.fixture(scope="module")
def lora_lm(service: TrainingService) -> TrainingJob:
    service.datasets.register("instructions", bundled_path("instructions.jsonl"))
    cfg = lora_lm_config()
    return run_job(service, cfg)


@pytest.fixture(scope="module")
def classifier(service: TrainingService) -> TrainingJob:
    cfg = AdvancedTrainingConfig(
        model_id="flextrain/tiny-bert",
        dataset_id="demo/sentiment",
        training_type=TrainingType.TASK_SPECIFIC,
        num_epochs=4,
        learning_rate=3e-3,
        max_length=32,
        eval_split=0.2,
        evaluate_before_training=False,
        **FAST,
    )
    return run_job(service, cfg)


@pytest.fixture(scope="module")
def lora_classifier(service: TrainingService) -> TrainingJob:
    """A LoRA classifier (a peft adapter with task_type SEQ_CLS) that held no rows out."""
    cfg = AdvancedTrainingConfig(
        model_id="flextrain/tiny-bert",
        dataset_id="demo/sentiment",
        training_type=TrainingType.LORA_ADAPTATION,
        max_steps=2,
        max_length=32,
        eval_split=0.0,
        eval_strategy="no",
        evaluate_before_training=False,
        lora_r=4,
        lora_alpha=8,
        **FAST,
    )
    return run_job(service, cfg)


def _logits(model: Any, tokenizer: Any, texts: list[str]) -> torch.Tensor:
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        return model(**batch).logits.float()


def _front_matter(card: str) -> tuple[dict[str, Any], str]:
    _, front, body = card.split("---\n", 2)
    return yaml.safe_load(front), body


# -- merge ------------------------------------------------------------------------------
def test_merged_model_computes_what_base_plus_adapter_computes(
    service: TrainingService, lora_lm: TrainingJob
) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result = merge(service, lora_lm.job_id)
    folder = Path(result.path)
    assert folder == service.environment(lora_lm.job_id).root / "merged"
    assert "model.safetensors" in result.files
    assert not [f for f in result.files if f.endswith((".bin", ".pt", ".pth", ".ckpt"))]
    assert not (folder / "adapter_config.json").exists()

    tokenizer = AutoTokenizer.from_pretrained(folder)
    texts = ["Put these words in order.", "The heat lasted for ten days", "water"]
    merged = AutoModelForCausalLM.from_pretrained(folder).eval()
    meta_base = service.models.resolve("flextrain/tiny-llama").path
    base = AutoModelForCausalLM.from_pretrained(meta_base).eval()
    base_logits = _logits(base, tokenizer, texts)
    adapted = PeftModel.from_pretrained(base, lora_lm.model_path).eval()
    expected = _logits(adapted, tokenizer, texts)
    got = _logits(merged, tokenizer, texts)
    diff = float((got - expected).abs().max())
    print(f"\nmerge: max |merged - (base + adapter)| = {diff:.2e}")
    assert diff < 1e-5
    # The adapter changed the model, so equality above is not equality to the base.
    assert float((expected - base_logits).abs().max()) > 1e-3

    # Merging again replaces the job's own merged folder.
    again = merge(service, lora_lm.job_id)
    assert again.path == result.path


def test_merge_refuses_a_job_without_adapter(
    service: TrainingService, classifier: TrainingJob
) -> None:
    with pytest.raises(AfterTrainingError, match=r"no adapter to merge.*export"):
        merge(service, classifier.job_id)


def test_merge_into_a_non_empty_folder_needs_force(
    service: TrainingService, lora_lm: TrainingJob, tmp_path: Path
) -> None:
    out = tmp_path / "merged"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match=r"not empty.*--force"):
        merge(service, lora_lm.job_id, out)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["merged"]  # no half-written sibling
    merge(service, lora_lm.job_id, out, force=True)
    assert (out / "model.safetensors").exists()
    assert not (out / "notes.txt").exists()


# -- export -----------------------------------------------------------------------------
def test_export_card_names_the_data_hash_and_the_version(
    service: TrainingService, lora_lm: TrainingJob, tmp_path: Path
) -> None:
    from transformers import AutoModelForCausalLM

    result = export(service, lora_lm.job_id, tmp_path / "export")
    folder = Path(result.path)
    assert result.weights == "merged"
    assert lora_lm.dataset_version
    assert result.dataset_hash == lora_lm.dataset_version
    assert "training_args.bin" not in result.files
    assert "model.safetensors" in result.files

    front, body = _front_matter((folder / "README.md").read_text())
    assert front["base_model"] == "flextrain/tiny-llama"
    assert front["library_name"] == "transformers"
    assert front["pipeline_tag"] == "text-generation"
    assert {"flextrain", "lora_adaptation"} <= set(front["tags"])
    assert front["datasets"] == ["instructions"]
    assert lora_lm.dataset_version in body
    assert f"flextrain version:** {version('flextrain')}" in body
    # The config shows what was set, not every default.
    config = yaml.safe_load(body.split("```yaml\n", 1)[1].split("```", 1)[0])
    assert config["max_steps"] == 8
    assert config["lora_r"] == 4
    assert "weight_decay" not in config
    assert "eval_loss" in body

    model = AutoModelForCausalLM.from_pretrained(folder)
    assert model.config.model_type == "llama"


def test_export_adapter_only_loads_on_the_base(
    service: TrainingService, lora_lm: TrainingJob, tmp_path: Path
) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    result = export(service, lora_lm.job_id, tmp_path / "adapter", adapter_only=True)
    assert result.weights == "adapter"
    assert {"adapter_model.safetensors", "adapter_config.json", "README.md"} <= set(result.files)
    assert "model.safetensors" not in result.files
    front, _ = _front_matter((Path(result.path) / "README.md").read_text())
    assert front["library_name"] == "peft"
    base = AutoModelForCausalLM.from_pretrained(service.models.resolve("flextrain/tiny-llama").path)
    PeftModel.from_pretrained(base, result.path)


def test_export_refuses_a_non_empty_folder_and_leaves_it_alone(
    service: TrainingService, classifier: TrainingJob, tmp_path: Path
) -> None:
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="not empty"):
        export(service, classifier.job_id, out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    with pytest.raises(AfterTrainingError, match=r"adapter_only.*no adapter"):
        export(service, classifier.job_id, tmp_path / "new", adapter_only=True)
    model_dir = Path(classifier.model_path or "")
    for own in (model_dir, model_dir.parent.parent):  # the model folder, the job's folder
        with pytest.raises(AfterTrainingError, match="own model folder"):
            export(service, classifier.job_id, own, force=True)
    assert (model_dir / "model.safetensors").exists()
    (tmp_path / "a-file").write_text("")
    with pytest.raises(AfterTrainingError, match="Cannot write"):
        export(service, classifier.job_id, tmp_path / "a-file" / "model")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "taken"]


def test_export_of_a_full_model_hashes_an_unregistered_file(
    service: TrainingService, classifier: TrainingJob, tmp_path: Path
) -> None:
    from transformers import AutoModelForSequenceClassification

    result = export(service, classifier.job_id, tmp_path / "cls", full_config=True)
    assert result.weights == "full"
    file_hash = hashlib.sha256(bundled_path("sentiment.jsonl").read_bytes()).hexdigest()
    assert result.dataset_hash == file_hash
    card = (Path(result.path) / "README.md").read_text()
    front, body = _front_matter(card)
    assert front["pipeline_tag"] == "text-classification"
    assert file_hash in body
    assert "not a registered version" in body
    assert "Labels:** negative, positive" in body
    assert "weight_decay" in body  # full_config: every field
    model = AutoModelForSequenceClassification.from_pretrained(result.path)
    assert set(model.config.id2label.values()) == {"negative", "positive"}


# -- evaluate ---------------------------------------------------------------------------
def test_evaluate_shows_the_trained_classifier_beating_its_base(
    service: TrainingService, classifier: TrainingJob
) -> None:
    result = evaluate(service, classifier.job_id, "demo/sentiment", split="all")
    print(f"\nevaluate demo/sentiment: trained {result.trained}, base {result.base}")
    assert result.rows == 480
    assert result.split == "all"
    assert result.notes[0] == (
        "split all: all 480 rows of 'demo/sentiment' were scored, including rows job "
        f"{classifier.job_id} trained on. Fix: use split heldout to score only the rows it "
        "never saw."
    )
    assert result.trained["accuracy"] >= result.base["accuracy"] + 0.1
    assert result.trained["f1"] > result.base["f1"]
    assert result.trained["loss"] < result.base["loss"]
    assert any("random" in note for note in result.notes)


def test_evaluate_defaults_to_the_rows_the_job_held_out(
    service: TrainingService, classifier: TrainingJob
) -> None:
    """Issue 19: the default scored a model partly on its training rows."""
    from flextrain.interface import FlexibleTrainingInterface

    job_id = classifier.job_id
    assert classifier.metrics["eval_rows"] == 96
    result = evaluate(service, job_id)
    assert (result.split, result.rows) == ("heldout", 96)
    assert result.title == (
        f"Trained (job {job_id}, classifier) beside base (flextrain/tiny-bert): "
        "demo/sentiment, split heldout, 96 rows"
    )
    assert result.notes[0] == (
        f"split heldout: all 96 rows job {job_id} held out of 'demo/sentiment' (eval_split "
        "0.2, seed 42) were scored; it never trained on them."
    )
    # Its own data named again is still its own; the limit shows in the note.
    named = evaluate(service, job_id, "demo/sentiment", limit=10)
    assert (named.split, named.rows) == ("heldout", 10)
    assert named.notes[0].startswith(f"split heldout: 10 of the 96 rows job {job_id} held out")
    # The Python API has the same default.
    api = FlexibleTrainingInterface(service=service)
    via_api = asyncio.run(api.evaluate_model(job_id, limit=10))
    assert (via_api.split, via_api.rows, via_api.notes[0]) == ("heldout", 10, named.notes[0])


def test_evaluate_of_a_job_that_held_nothing_out_scores_all_rows_and_says_so(
    service: TrainingService, lora_classifier: TrainingJob
) -> None:
    from flextrain.interface import FlexibleTrainingInterface

    job_id = lora_classifier.job_id
    result = evaluate(service, job_id, limit=40)
    assert (result.split, result.rows) == ("all", 40)
    assert result.title.endswith(", split all, 40 rows")
    assert result.notes[0] == (
        f"split all: job {job_id} held out no rows (eval_split 0, no eval_file), so 40 of the "
        "480 rows of 'demo/sentiment' were scored, rows it trained on: the scores show how "
        "well it fits its training data, not how it does on new data. Fix: evaluate on other "
        "data (a dataset), or train with eval_split above 0 or an eval_file."
    )
    api = FlexibleTrainingInterface(service=service)
    via_api = asyncio.run(api.evaluate_model(job_id, limit=40))
    assert (via_api.split, via_api.notes[0]) == ("all", result.notes[0])
    with pytest.raises(AfterTrainingError, match=r"held out no rows \(eval_split 0, no eval_fi"):
        evaluate(service, job_id, split="heldout")


def test_evaluate_heldout_reproduces_the_jobs_own_eval(
    service: TrainingService, classifier: TrainingJob
) -> None:
    """Same rows, same tokens, same label ids as training: the same numbers."""
    result = evaluate(service, classifier.job_id, split="heldout")
    assert result.rows == classifier.metrics["eval_rows"]
    assert result.trained["accuracy"] == pytest.approx(classifier.metrics["eval_accuracy"])
    assert result.trained["f1"] == pytest.approx(classifier.metrics["eval_f1"])
    assert result.trained["loss"] == pytest.approx(classifier.metrics["eval_loss"], abs=1e-4)


def test_evaluate_language_model_loss_and_perplexity(
    service: TrainingService, lora_lm: TrainingJob
) -> None:
    held = evaluate(service, lora_lm.job_id, split="heldout", limit=None)
    assert held.rows == lora_lm.metrics["eval_rows"]
    assert held.tokens
    assert held.tokens > 0
    # Token-weighted here, a mean of batch means in the Trainer: close, not equal.
    assert held.trained["loss"] == pytest.approx(lora_lm.metrics["eval_loss"], rel=0.02)
    assert held.trained["perplexity"] == pytest.approx(math.exp(held.trained["loss"]))
    assert held.trained["loss"] < held.base["loss"]

    other = evaluate(service, lora_lm.job_id, "demo/text", limit=40, batch_size=8)
    assert other.rows == 40
    assert other.dataset_id == "demo/text"
    assert set(other.trained) == set(other.base) == {"loss", "perplexity"}


def test_evaluate_refuses_data_of_the_wrong_shape(
    service: TrainingService, classifier: TrainingJob, lora_lm: TrainingJob
) -> None:
    with pytest.raises(AfterTrainingError, match=r"'demo/text' has no labels.*classifier"):
        evaluate(service, classifier.job_id, "demo/text")
    with pytest.raises(AfterTrainingError, match=r"heldout.*not the data job"):
        evaluate(service, lora_lm.job_id, "demo/text", split="heldout")


# -- try --------------------------------------------------------------------------------
def test_try_gives_generations_and_labels_for_both_models(
    service: TrainingService, lora_lm: TrainingJob, classifier: TrainingJob
) -> None:
    lm = try_model(service, lora_lm.job_id, ["Name a colour.", "Spell 'cat'."], max_new_tokens=5)
    assert lm.templated  # it trained on instructions: prompted in its chat format
    assert [row.input for row in lm.rows] == ["Name a colour.", "Spell 'cat'."]
    for row in lm.rows:
        assert row.prompt.startswith("<|user|>\n")
        assert row.prompt.endswith("<|assistant|>\n")
        assert isinstance(row.trained.generation, str)
        assert isinstance(row.base.generation, str)
    raw = try_model(service, lora_lm.job_id, ["The heat"], max_new_tokens=3, chat=False)
    assert raw.rows[0].prompt == "The heat"
    assert not raw.templated

    cls = try_model(service, classifier.job_id, ["Lovely food and kind staff.", "Awful."])
    for row in cls.rows:
        for answer in (row.trained, row.base):
            assert answer.label in ("negative", "positive")
            assert answer.scores is not None
            assert sum(answer.scores.values()) == pytest.approx(1.0, abs=1e-4)
    assert any("random" in note for note in cls.notes)
    with pytest.raises(AfterTrainingError, match="texts"):
        try_model(service, classifier.job_id, [" "])


def test_try_titles_are_worded_alike_for_every_kind_of_job(
    service: TrainingService,
    lora_lm: TrainingJob,
    classifier: TrainingJob,
    lora_classifier: TrainingJob,
) -> None:
    """Issue 19: classifier and causal LM tables were titled differently."""
    titles = [
        try_model(service, job.job_id, texts, max_new_tokens=2).title
        for job, texts in (
            (lora_lm, ["Hello"]),
            (classifier, ["Lovely.", "Awful."]),
            (lora_classifier, ["Lovely."]),
        )
    ]
    assert titles == [
        f"Trained (job {lora_lm.job_id}, causal LM) beside base (flextrain/tiny-llama): 1 input",
        f"Trained (job {classifier.job_id}, classifier) beside base (flextrain/tiny-bert): "
        "2 inputs",
        f"Trained (job {lora_classifier.job_id}, classifier) beside base "
        "(flextrain/tiny-bert): 1 input",
    ]


def test_a_lora_classifier_is_registered_as_its_task_model(
    service: TrainingService, classifier: TrainingJob, lora_classifier: TrainingJob
) -> None:
    """Issue 19: a LoRA classifier read as its base's class (BertForMaskedLM here)."""
    from flextrain.interface import FlexibleTrainingInterface

    full = service.model_registry.for_job(classifier.job_id)
    adapter = service.model_registry.for_job(lora_classifier.job_id)
    assert full is not None
    assert adapter is not None
    assert (full.architecture, full.adapter) == ("BertForSequenceClassification", False)
    assert (adapter.architecture, adapter.adapter) == ("BertForSequenceClassification", True)
    # The same model with the same two-label head: the same count.
    assert adapter.num_parameters == full.num_parameters
    api = FlexibleTrainingInterface(service=service)
    listed = {m.job_id: m.architecture for m in api.list_models()}
    assert listed[lora_classifier.job_id] == "BertForSequenceClassification"


def test_a_job_that_has_not_completed_is_refused_at_once(service: TrainingService) -> None:
    job = service.create_job(
        BasicTrainingConfig(
            model_id="flextrain/tiny-llama",
            dataset_id="demo/text",
            training_type=TrainingType.FINE_TUNING,
            max_length=32,
        )
    )
    for call in (
        lambda: merge(service, job.job_id),
        lambda: export(service, job.job_id, "/nonexistent/never-written"),
        lambda: try_model(service, job.job_id, ["hello"]),
        lambda: evaluate(service, job.job_id),
    ):
        with pytest.raises(JobStateError, match=r"pending.*needs a completed job"):
            call()
    assert not Path("/nonexistent/never-written").exists()


def test_the_python_api_offers_all_four(
    service: TrainingService, lora_lm: TrainingJob, tmp_path: Path
) -> None:
    from flextrain.interface import FlexibleTrainingInterface

    api = FlexibleTrainingInterface(service=service)

    async def run() -> None:
        merged = await api.merge_model(lora_lm.job_id, tmp_path / "merged")
        assert "model.safetensors" in merged.files
        exported = await api.export_model(lora_lm.job_id, tmp_path / "export", adapter_only=True)
        assert exported.weights == "adapter"
        tried = await api.try_model(lora_lm.job_id, ["Hello"], max_new_tokens=2)
        assert len(tried.rows) == 1
        evaluated = await api.evaluate_model(lora_lm.job_id, "demo/text", limit=10)
        assert evaluated.rows == 10
        assert "perplexity" in evaluated.base

    asyncio.run(run())
