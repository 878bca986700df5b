"""Helpers for the REST API tests: callers with tokens, tiny job bodies, SSE parsing."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from fastapi.testclient import TestClient

# A run that finishes in seconds on CPU and whose loss visibly falls: a high
# learning rate, few steps, a loss row every 2 steps, no evaluation passes.
TINY_JOB: dict[str, Any] = {
    "model_id": "flextrain/tiny-llama",
    "dataset_id": "demo/text",
    "training_type": "fine_tuning",
    "num_epochs": 1,
    "learning_rate": 3e-3,
    "batch_size": 16,
    "max_length": 32,
    "logging_steps": 2,
    "max_steps": 12,
    "eval_strategy": "no",
    "evaluate_before_training": False,
    "num_threads": 1,
    "gradient_checkpointing": False,  # explicit: no "checkpointing off" event
}

# A basic-mode body that validates quickly; used where a job is created but not run.
BASIC_JOB: dict[str, Any] = {
    "model_id": "flextrain/tiny-llama",
    "dataset_id": "demo/text",
    "training_type": "fine_tuning",
    "num_epochs": 1,
    "batch_size": 16,
    "max_length": 32,
    "gradient_checkpointing": False,  # explicit: no "checkpointing off" event
}


@dataclass(frozen=True)
class Caller:
    """A user of the API and the headers that authenticate them."""

    name: str
    role: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass(frozen=True)
class Event:
    event: str
    data: Any


def parse_sse(lines: Iterable[str]) -> list[Event]:
    """Server-Sent Events from the lines of a stream; comments (keep-alives) skipped."""
    events: list[Event] = []
    name = "message"
    data: list[str] = []
    for line in lines:
        if line == "":
            if data:
                events.append(Event(name, json.loads("\n".join(data))))
            name, data = "message", []
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
    if data:
        events.append(Event(name, json.loads("\n".join(data))))
    return events


def read_events(client: TestClient, job_id: str, caller: Caller) -> list[Event]:
    url = f"/api/training/jobs/{job_id}/events"
    with client.stream("GET", url, headers=caller.headers) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        return parse_sse(response.iter_lines())


def create_job(
    client: TestClient, caller: Caller, body: dict[str, Any] | None = None, mode: str = "basic"
) -> dict[str, Any]:
    response = client.post(
        f"/api/training/jobs/{mode}", json=body or BASIC_JOB, headers=caller.headers
    )
    assert response.status_code == 201, response.text
    job: dict[str, Any] = response.json()
    return job


def wait_finished(
    client: TestClient, job_id: str, caller: Caller, timeout: float = 120
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(f"/api/training/jobs/{job_id}", headers=caller.headers)
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()
        if job["status"] in ("completed", "failed", "cancelled", "interrupted"):
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job['status']}"
        time.sleep(0.2)


def assert_error(response: Any, status: int, *needles: str) -> dict[str, Any]:
    """The status, the common error shape, and each needle in the detail."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"detail", "code", "errors"}, body
    assert isinstance(body["detail"], str)
    assert body["detail"].strip()
    for needle in needles:
        assert needle in body["detail"], (needle, body["detail"])
    return body
