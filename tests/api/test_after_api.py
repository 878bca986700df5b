"""POST /api/training/jobs/{job_id}/merge|export|try|evaluate over REST.

One tiny LoRA job, created and started through the API by trainer 'tom', is
trained once for the module. The checks: each route does its work for the job's
owner, roles and visibility are those of the other job routes, written folders
stay inside the caller's own output folder, sizes are bounded, and every refusal
is a 4xx naming the problem.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from flextrain.api.app import create_app
from flextrain.service import TrainingService
from flextrain.settings import Settings
from tests.api.conftest import add_caller, stop_jobs
from tests.api.helpers import BASIC_JOB, Caller, assert_error, create_job, wait_finished
from tests.conftest import TEST_CLIENT_HOST

LORA_JOB: dict[str, Any] = {
    "model_id": "flextrain/tiny-llama",
    "dataset_id": "demo/text",
    "training_type": "lora_adaptation",
    "max_steps": 4,
    "batch_size": 16,
    "learning_rate": 2e-2,
    "max_length": 32,
    "eval_split": 0.1,
    "evaluate_before_training": False,
    "lora_r": 4,
    "lora_alpha": 8,
    "num_threads": 2,
    "save_total_limit": 1,
    "gradient_checkpointing": False,
}


@dataclass(frozen=True)
class Setup:
    client: TestClient
    service: TrainingService
    home: Path
    admin: Caller
    tom: Caller
    tina: Caller
    viewer: Caller
    job_id: str
    pending_id: str

    def post(self, caller: Caller, job_id: str, action: str, body: dict[str, Any]) -> Any:
        return self.client.post(
            f"/api/training/jobs/{job_id}/{action}", json=body, headers=caller.headers
        )


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, models_cache: Path) -> Iterator[Setup]:
    home = tmp_path_factory.mktemp("after-api") / "home"
    app = create_app(
        Settings(home=home, models_cache=models_cache, allowed_hosts=[TEST_CLIENT_HOST])
    )
    service: TrainingService = app.state.service
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            tom = add_caller(service, "tom", "trainer")
            job = create_job(client, tom, LORA_JOB, mode="advanced")
            started = client.post(f"/api/training/jobs/{job['job_id']}/start", headers=tom.headers)
            assert started.status_code == 200, started.text
            final = wait_finished(client, job["job_id"], tom, timeout=240)
            assert final["status"] == "completed", service.read_log(job["job_id"], 40)
            pending = create_job(client, tom, BASIC_JOB)
            yield Setup(
                client=client,
                service=service,
                home=home,
                admin=add_caller(service, "ada", "admin"),
                tom=tom,
                tina=add_caller(service, "tina", "trainer"),
                viewer=add_caller(service, "vic", "viewer"),
                job_id=final["job_id"],
                pending_id=pending["job_id"],
            )
    finally:
        stop_jobs(service)


@pytest.fixture(scope="module")
def lora_classifier(setup: Setup) -> str:
    """Tom's LoRA classifier (a peft adapter, task_type SEQ_CLS) that held no rows out."""
    body = {
        **LORA_JOB,
        "model_id": "flextrain/tiny-bert",
        "dataset_id": "demo/sentiment",
        "max_steps": 2,
        "eval_split": 0.0,
        "eval_strategy": "no",
    }
    job = create_job(setup.client, setup.tom, body, mode="advanced")
    started = setup.client.post(
        f"/api/training/jobs/{job['job_id']}/start", headers=setup.tom.headers
    )
    assert started.status_code == 200, started.text
    final = wait_finished(setup.client, job["job_id"], setup.tom, timeout=240)
    assert final["status"] == "completed", setup.service.read_log(job["job_id"], 40)
    job_id: str = final["job_id"]
    return job_id


def test_merge_for_the_owner_into_the_jobs_folder(setup: Setup) -> None:
    response = setup.post(setup.tom, setup.job_id, "merge", {})
    assert response.status_code == 200, response.text
    body = response.json()
    assert Path(body["path"]) == setup.home / "jobs" / setup.job_id / "merged"
    assert "model.safetensors" in body["files"]
    entry = setup.service.audit.entries(actor="tom", limit=1)[0]
    assert entry.action == "POST /api/training/jobs/{job_id}/merge"
    assert entry.target == setup.job_id
    assert entry.outcome == "ok"


def test_export_goes_inside_the_callers_own_folder(setup: Setup) -> None:
    response = setup.post(setup.tom, setup.job_id, "export", {"out_dir": "exports/tiny"})
    assert response.status_code == 200, response.text
    folder = Path(response.json()["path"])
    assert folder == setup.home / "outputs" / "tom" / "exports" / "tiny"
    assert (folder / "README.md").read_text().startswith("---\nbase_model: flextrain/tiny-llama")
    assert response.json()["weights"] == "merged"

    again = setup.post(setup.tom, setup.job_id, "export", {"out_dir": "exports/tiny"})
    assert_error(again, 409, "not empty")
    forced = setup.post(
        setup.tom,
        setup.job_id,
        "export",
        {"out_dir": "exports/tiny", "force": True, "adapter_only": True},
    )
    assert forced.status_code == 200, forced.text
    assert "adapter_model.safetensors" in forced.json()["files"]

    for outside in ("/tmp/elsewhere", "../../jobs/x", ".", ""):
        response = setup.post(setup.tom, setup.job_id, "export", {"out_dir": outside})
        assert response.status_code in (403, 422), (outside, response.text)
    assert_error(
        setup.post(setup.tom, setup.job_id, "merge", {"out_dir": "/tmp/elsewhere"}),
        403,
        "not inside your folder",
    )
    assert not Path("/tmp/elsewhere").exists()


def test_export_as_gguf_reports_its_parity(setup: Setup) -> None:
    body = {"out_dir": "exports/gguf", "format": "gguf", "quant": "f16"}
    response = setup.post(setup.tom, setup.job_id, "export", body)
    assert response.status_code == 200, response.text
    result = response.json()
    assert (result["format"], result["quant"], result["weights"]) == ("gguf", "f16", "merged")
    assert result["file"].endswith("-f16.gguf")
    assert result["parity"]["passed"] is True
    assert result["parity"]["tokenizer_match"] is True
    verified = setup.post(setup.tom, setup.job_id, "verify", {"path": "exports/gguf"})
    assert verified.status_code == 200, verified.text
    assert (verified.json()["passed"], verified.json()["quant"]) == (True, "f16")
    assert_error(
        setup.post(setup.tom, setup.job_id, "verify", {"path": "exports/none"}),
        422,
        "is no export",
    )
    bad = {"out_dir": "exports/x", "format": "gguf", "quant": "q2"}
    assert_error(setup.post(setup.tom, setup.job_id, "export", bad), 422, "quant")
    vllm_quant = {"out_dir": "exports/y", "quant": "f16"}
    assert_error(
        setup.post(setup.tom, setup.job_id, "export", vllm_quant), 422, "is for --format gguf"
    )


def test_try_answers_for_both_models(setup: Setup) -> None:
    response = setup.post(
        setup.tom, setup.job_id, "try", {"texts": ["The river", "Rain"], "max_new_tokens": 3}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert [row["input"] for row in body["rows"]] == ["The river", "Rain"]
    assert all(isinstance(row["trained"]["generation"], str) for row in body["rows"])
    assert all(isinstance(row["base"]["generation"], str) for row in body["rows"])


def test_evaluate_on_a_dataset_and_on_the_heldout_rows(setup: Setup) -> None:
    response = setup.post(
        setup.admin, setup.job_id, "evaluate", {"dataset_id": "demo/sentiment", "limit": 20}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["rows"] == 20
    assert body["dataset_id"] == "demo/sentiment"
    assert set(body["trained"]) == {"loss", "perplexity"}
    assert body["tokens"] > 0

    held = setup.post(setup.tom, setup.job_id, "evaluate", {"split": "heldout"})
    assert held.status_code == 200, held.text
    assert held.json()["split"] == "heldout"

    wrong = setup.post(
        setup.tom, setup.job_id, "evaluate", {"dataset_id": "demo/sentiment", "split": "heldout"}
    )
    assert_error(wrong, 422, "not the data job")
    # Instructions rendered in the chat template do not fit the job's 32 tokens.
    too_long = setup.post(
        setup.tom, setup.job_id, "evaluate", {"dataset_id": "demo/instructions", "limit": 50}
    )
    assert_error(too_long, 422, "demo/instructions", "max_length=32")


def test_evaluate_defaults_to_the_heldout_rows_and_says_which(setup: Setup) -> None:
    """Issue 19: the default scored the model partly on its training rows."""
    rows = setup.service.require_job(setup.job_id).metrics["eval_rows"]
    response = setup.post(setup.tom, setup.job_id, "evaluate", {})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["split"], body["rows"]) == ("heldout", rows)
    assert rows > 0
    assert body["title"] == (
        f"Trained (job {setup.job_id}, causal LM) beside base (flextrain/tiny-llama): "
        f"demo/text, split heldout, {rows} rows, {body['tokens']:,} tokens"
    )
    assert body["notes"][0] == (
        f"split heldout: all {rows} rows job {setup.job_id} held out of 'demo/text' "
        "(eval_split 0.1, seed 42) were scored; it never trained on them."
    )
    everything = setup.post(setup.tom, setup.job_id, "evaluate", {"split": "all", "limit": 20})
    assert everything.status_code == 200, everything.text
    assert (everything.json()["split"], everything.json()["rows"]) == ("all", 20)
    assert everything.json()["notes"][0].startswith(
        "split all: 20 of the 600 rows of 'demo/text' were scored, including rows job"
    )


def test_evaluate_of_a_job_that_held_nothing_out_says_so(
    setup: Setup, lora_classifier: str
) -> None:
    response = setup.post(setup.tom, lora_classifier, "evaluate", {"limit": 40})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["split"], body["rows"]) == ("all", 40)
    assert body["title"].endswith("(flextrain/tiny-bert): demo/sentiment, split all, 40 rows")
    assert body["notes"][0] == (
        f"split all: job {lora_classifier} held out no rows (eval_split 0, no eval_file), so 40 "
        "of the 480 rows of 'demo/sentiment' were scored, rows it trained on: the scores show "
        "how well it fits its training data, not how it does on new data. Fix: evaluate on "
        "other data (a dataset), or train with eval_split above 0 or an eval_file."
    )
    refused = setup.post(setup.tom, lora_classifier, "evaluate", {"split": "heldout"})
    assert_error(refused, 422, "held out no rows (eval_split 0, no eval_file). Fix:")


def test_try_titles_are_worded_alike_for_every_kind_of_job(
    setup: Setup, lora_classifier: str
) -> None:
    """Issue 19: classifier and causal LM results were titled differently."""
    titles = []
    for job_id in (setup.job_id, lora_classifier):
        response = setup.post(setup.tom, job_id, "try", {"texts": ["Rain"], "max_new_tokens": 2})
        assert response.status_code == 200, response.text
        titles.append(response.json()["title"])
    assert titles == [
        f"Trained (job {setup.job_id}, causal LM) beside base (flextrain/tiny-llama): 1 input",
        f"Trained (job {lora_classifier}, classifier) beside base (flextrain/tiny-bert): 1 input",
    ]


def test_the_registry_names_a_lora_classifier_by_its_task_model(
    setup: Setup, lora_classifier: str
) -> None:
    """Issue 19: a LoRA classifier was listed as its base's class."""
    registry = "/api/training/models/registry"
    listed = setup.client.get(registry, headers=setup.tom.headers)
    assert listed.status_code == 200, listed.text
    mine = [m for m in listed.json() if m["job_id"] == lora_classifier]
    assert [(m["architecture"], m["adapter"]) for m in mine] == [
        ("BertForSequenceClassification", True)
    ]
    lm = [m for m in listed.json() if m["job_id"] == setup.job_id]
    assert [m["architecture"] for m in lm] == ["LlamaForCausalLM"]


def test_roles_and_visibility_are_those_of_the_job_routes(setup: Setup) -> None:
    for action, body in (
        ("merge", {}),
        ("export", {"out_dir": "x"}),
        ("try", {"texts": ["a"]}),
        ("evaluate", {}),
    ):
        assert_error(setup.post(setup.viewer, setup.job_id, action, body), 403, "viewer")
        assert_error(setup.post(setup.tina, setup.job_id, action, body), 404, setup.job_id)
    # A trainer names registered datasets only, never a server file.
    assert_error(
        setup.post(setup.tom, setup.job_id, "evaluate", {"dataset_id": "/etc/hostname"}),
        404,
        "not registered",
    )


def test_sizes_are_bounded(setup: Setup) -> None:
    too_many = {"texts": ["a"] * 17}
    assert_error(setup.post(setup.tom, setup.job_id, "try", too_many), 422, "texts")
    long_generation = {"texts": ["a"], "max_new_tokens": 257}
    assert_error(setup.post(setup.tom, setup.job_id, "try", long_generation), 422)
    assert_error(setup.post(setup.tom, setup.job_id, "evaluate", {"limit": 10_001}), 422, "limit")
    assert_error(setup.post(setup.tom, setup.job_id, "export", {"out_dir": "a\u0000b"}), 422, "NUL")


def test_a_job_that_has_not_completed_answers_409_at_once(setup: Setup) -> None:
    for action, body in (
        ("merge", {}),
        ("export", {"out_dir": "never"}),
        ("try", {"texts": ["a"]}),
        ("evaluate", {}),
    ):
        response = setup.post(setup.tom, setup.pending_id, action, body)
        assert_error(response, 409, "pending", "completed job")
    assert not (setup.home / "outputs" / "tom" / "never").exists()
