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
    app = create_app(Settings(home=home, models_cache=models_cache))
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


def test_merge_for_the_owner_into_the_jobs_folder(setup: Setup) -> None:
    response = setup.post(setup.tom, setup.job_id, "merge", {})
    assert response.status_code == 200, response.text
    body = response.json()
    assert Path(body["path"]) == setup.home / "jobs" / setup.job_id / "merged"
    assert "model.safetensors" in body["files"]
    entry = setup.service.audit.entries(actor="tom", limit=1)[0]
    assert entry.action == "POST /api/training/jobs/{job_id}/merge"
    assert entry.target == setup.job_id and entry.outcome == "ok"


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
    assert body["rows"] == 20 and body["dataset_id"] == "demo/sentiment"
    assert set(body["trained"]) == {"loss", "perplexity"} and body["tokens"] > 0

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
