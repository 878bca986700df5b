"""Paths a REST caller names must not reach beyond what their role allows.

A trainer's job may not write into another user's job folder, and a viewer may
not read facts (row counts, label values) of arbitrary files on the server by
naming them as a dataset id.
"""

from __future__ import annotations

import json
from pathlib import Path

from fastapi.testclient import TestClient

from flextrain.service import TrainingService
from tests.api.helpers import BASIC_JOB, Caller, create_job

JOBS = "/api/training/jobs"


def test_a_trainer_cannot_point_output_dir_into_another_users_job(
    client: TestClient, trainer: Caller, other_trainer: Caller, service: TrainingService
) -> None:
    toms = create_job(client, trainer)
    target = toms["output_dir"]
    response = client.post(
        f"{JOBS}/basic", json={**BASIC_JOB, "output_dir": target}, headers=other_trainer.headers
    )
    assert response.status_code in (403, 422), response.text
    assert "output_dir" in response.json()["detail"]
    assert client.get(JOBS, headers=other_trainer.headers).json() == []
    assert service.count_jobs() == 1


def test_a_viewer_cannot_inspect_an_arbitrary_server_file_as_a_dataset(
    client: TestClient, viewer: Caller, tmp_path: Path
) -> None:
    secret = tmp_path / "outside-home" / "salaries.jsonl"
    secret.parent.mkdir()
    secret.write_text(json.dumps({"text": "alice", "label": "95000"}) + "\n")
    response = client.get(f"/api/datasets/{secret}", headers=viewer.headers)
    assert response.status_code == 404, response.text
    assert "95000" not in response.text
