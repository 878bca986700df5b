"""`POST /api/training/jobs/expert`: built-in losses and the expression schedule are data
any trainer may send; user code is code execution, for admins, with its hash audited."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from flextrain.service import TrainingService
from tests.api.helpers import TINY_JOB, Caller, assert_error, wait_finished

EXPERT = "/api/training/jobs/expert"


def _body(**extra: Any) -> dict[str, Any]:
    return {**TINY_JOB, **extra}


def test_a_trainer_may_send_data_but_not_code(
    client: TestClient, trainer: Caller, tmp_path: Path
) -> None:
    data_only = _body(
        loss={"name": "focal", "focal_gamma": 2.0},
        lr_schedule_expr="lr * (1 - progress)",
        optimizer={"name": "SGD", "kwargs": {"momentum": 0.9}},
    )
    created = client.post(EXPERT, json=data_only, headers=trainer.headers)
    assert created.status_code == 201, created.text
    assert created.json()["mode"] == "expert"

    (tmp_path / "mine.py").write_text(
        "def loss(model, inputs, outputs):\n    return outputs.loss\n"
    )
    code = _body(loss={"function": "mine:loss"}, code_dir=str(tmp_path))
    refused = client.post(EXPERT, json=code, headers=trainer.headers)
    assert_error(refused, 403, "names user code (mine:loss)", "only an admin")


def test_an_admin_may_name_code_and_the_audit_log_keeps_its_hash(
    client: TestClient, admin: Caller, service: TrainingService, tmp_path: Path
) -> None:
    source = "def loss(model, inputs, outputs):\n    return outputs.loss\n"
    (tmp_path / "mine.py").write_text(source)
    body = _body(loss={"function": "mine:loss"}, code_dir=str(tmp_path))
    created = client.post(EXPERT, json=body, headers=admin.headers)
    assert created.status_code == 201, created.text
    entry = next(e for e in service.audit.entries() if e.action == f"POST {EXPERT}")
    assert entry.target == created.json()["job_id"]
    digest = hashlib.sha256(source.encode()).hexdigest()
    assert entry.detail == f"user code in {tmp_path}: mine.py sha256={digest}"


def test_bad_expert_input_names_the_field(client: TestClient, trainer: Caller) -> None:
    bad = client.post(EXPERT, json=_body(lr_schedule_expr="().__class__"), headers=trainer.headers)
    body = assert_error(bad, 422)
    assert [e["field"] for e in body["errors"]] == ["lr_schedule_expr"]
    unknown = client.post(EXPERT, json=_body(loss={"name": "hinge"}), headers=trainer.headers)
    errors = assert_error(unknown, 422)["errors"]
    assert errors[0]["field"] == "loss.name"
    assert "'focal'" in errors[0]["message"]


def test_checking_yaml_that_names_code_tells_a_trainer_it_is_admin_only(
    client: TestClient, trainer: Caller, admin: Caller
) -> None:
    text = "loss:\n  function: mine:loss\ncallbacks: [mine:Callback]\nema_decay: 0.99\n"
    for_trainer = client.post(
        "/api/training/expert/check", json={"yaml": text}, headers=trainer.headers
    )
    assert for_trainer.status_code == 200, for_trainer.text
    issues = {i["field"]: i for i in for_trainer.json()["issues"]}
    assert set(issues) == {"loss.function", "callbacks"}
    for issue in issues.values():
        assert issue["message"].startswith("names user code, which runs on the server")
        assert "ask an admin" in issue["fix"]
    # An admin is told what is wrong with the code itself (here: no code_dir).
    for_admin = client.post(
        "/api/training/expert/check", json={"yaml": text}, headers=admin.headers
    )
    assert all("only an admin" not in i["message"] for i in for_admin.json()["issues"])


def test_grpo_reward_functions_are_user_code_and_built_in_rewards_are_data(
    client: TestClient, trainer: Caller, tmp_path: Path
) -> None:
    grpo = {
        **TINY_JOB,
        "dataset_id": "demo/preferences",  # pairs: GRPO samples after each prompt
        "training_type": "grpo",
        "batch_size": 4,
        "max_steps": 2,
        "eval_split": 0.0,
    }
    rewards = {"rewards": [{"name": "contains", "pattern": "="}], "max_completion_length": 4}
    created = client.post(EXPERT, json={**grpo, "preference": rewards}, headers=trainer.headers)
    assert created.status_code == 201, created.text
    job_id = created.json()["job_id"]
    started = client.post(f"/api/training/jobs/{job_id}/start", headers=trainer.headers)
    assert started.status_code == 200, started.text
    done = wait_finished(client, job_id, trainer)
    assert (done["status"], done["current_step"]) == ("completed", 2), done

    (tmp_path / "score.py").write_text("def ones(prompts, completions, **kw):\n    return [1.0]\n")
    code = {**grpo, "reward_functions": ["score:ones"], "code_dir": str(tmp_path)}
    refused = client.post(EXPERT, json=code, headers=trainer.headers)
    assert_error(refused, 403, "names user code (score:ones)", "only an admin")
    checked = client.post(
        "/api/training/expert/check",
        json={"yaml": "reward_functions: [score:ones]\n"},
        headers=trainer.headers,
    )
    assert [i["field"] for i in checked.json()["issues"]] == ["reward_functions"]
