"""One error family (issue 21): every error of flextrain's own is a `FlextrainError`
with a stable code, an HTTP status and a CLI exit code, and both front ends answer
it from those alone.

The family is found, not listed: every exception class under src/flextrain is either
in it or named in OUTSIDE with the reason.
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

import flextrain
from flextrain.api.app import create_app
from flextrain.cli.main import app as cli_app
from flextrain.data.registry import DatasetFormatError, DatasetNotFoundError
from flextrain.db import DatabaseTooNewError, StoreUnavailableError
from flextrain.errors import (
    ConflictError,
    FlextrainError,
    InvalidInputError,
    NotFoundError,
    UnavailableError,
)
from flextrain.jobs.errors import JobNotFoundError, JobStateError
from flextrain.jobs.store import JobStore
from flextrain.models.hub import HubModelNotFoundError, HubOfflineError
from flextrain.settings import Settings

SRC = Path(flextrain.__file__).parent

# Exception classes that are not flextrain errors a user sees, and why. Classes whose
# name starts with "_" are a module's own control flow and are not listed.
OUTSIDE = {
    "flextrain.train.stop.JobCancelledError": "control flow inside the worker",
    "flextrain.train.stop.TrainingDivergedError": "inside the worker: the job ends DIVERGED",
    "flextrain.train.stop.DiskPausedError": "inside the worker: the job ends PAUSED",
    "flextrain.train.health.RollbackRequest": "control flow inside the worker",
    "flextrain.estimate.probe.ProbeError": "always caught: a warning, the analytic estimate",
    "flextrain.api.errors.APIError": "the REST API's own HTTPException",
    # Raised inside the worker process: their message becomes the job's error_message
    # (read through the store), never a front end's answer.
    "flextrain.train.trainer.CheckpointDiskFullError": "worker-side: becomes the job's error",
    "flextrain.train.oom.OutOfMemoryAdvice": "worker-side: becomes the job's error",
}

STATUSES = {400, 404, 409, 422, 503}

Doors = tuple[TestClient, dict[str, str]]  # the REST client, an admin's headers


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _base_name(node: ast.expr) -> str:
    if isinstance(node, ast.Attribute):
        return node.attr
    return node.id if isinstance(node, ast.Name) else ""


def _exception_like_classes() -> Iterator[tuple[str, str]]:
    """(module, class) of every class that looks like an exception: its name or a base's
    ends in Error, Exception or Advice."""
    suffixes = ("Error", "Exception", "Advice")
    for path in sorted(SRC.rglob("*.py")):
        module = _module_name(path)
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ClassDef) or node.name.startswith("_"):
                continue
            names = [node.name, *(_base_name(b) for b in node.bases)]
            if any(n.endswith(suffixes) for n in names):
                yield module, node.name


def _family() -> list[type[FlextrainError]]:
    """Every FlextrainError subclass, after importing each module that may define one."""
    for module, name in _exception_like_classes():
        if f"{module}.{name}" not in OUTSIDE:
            importlib.import_module(module)
    found: list[type[FlextrainError]] = []
    todo: list[type[FlextrainError]] = [FlextrainError]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub not in found:
                found.append(sub)
                todo.append(sub)
    return found


def _name(kind: type) -> str:
    return f"{kind.__module__}.{kind.__qualname__}"


def test_every_exception_class_is_in_the_family_or_says_why_not() -> None:
    strays = []
    for module, name in _exception_like_classes():
        if f"{module}.{name}" in OUTSIDE:
            continue
        kind = getattr(importlib.import_module(module), name)
        is_exception = isinstance(kind, type) and issubclass(kind, BaseException)
        if is_exception and not issubclass(kind, FlextrainError):
            strays.append(f"{module}.{name}")
    assert not strays, f"derive these from a flextrain.errors kind, or add to OUTSIDE: {strays}"


def test_every_error_has_a_unique_code_a_status_and_an_exit_code() -> None:
    family = _family()
    assert len(family) > 20, [_name(k) for k in family]
    codes: dict[str, str] = {}
    for kind in family:
        assert kind.code, kind
        assert kind.code.isidentifier(), kind
        assert kind.code == kind.code.lower(), kind
        assert "code" in vars(kind), f"{_name(kind)} inherits its code {kind.code!r}"
        assert kind.code not in codes, (_name(kind), codes.get(kind.code))
        codes[kind.code] = _name(kind)
        assert kind.http_status in STATUSES, (_name(kind), kind.http_status)
        assert kind.exit_code in (1, 2), (_name(kind), kind.exit_code)
        assert kind.field is None or kind.field.strip(), kind


@pytest.mark.parametrize(
    ("name", "status", "exit_code"),
    [
        # What the REST API and `guard()` answered before the family (issue 21).
        ("flextrain.jobs.errors.JobNotFoundError", 404, 2),
        ("flextrain.jobs.errors.JobStateError", 409, 2),
        ("flextrain.jobs.checkpoints.CheckpointNotFoundError", 404, 2),
        ("flextrain.models.resolve.ModelNotFoundError", 404, 2),
        ("flextrain.models.resolve.ModelFilesError", 422, 2),
        ("flextrain.models.registry.ModelNotRegisteredError", 404, 2),
        ("flextrain.models.registry.ModelRegistryError", 422, 2),
        ("flextrain.models.registry.ModelNameTakenError", 409, 2),
        ("flextrain.models.registry.ModelInUseError", 409, 2),
        ("flextrain.models.hub.HubError", 409, 1),
        ("flextrain.models.hub.HubOfflineError", 409, 1),
        ("flextrain.models.hub.HubModelNotFoundError", 404, 2),
        ("flextrain.models.trained.AfterTrainingError", 422, 2),
        ("flextrain.models.trained.OutputExistsError", 409, 2),
        ("flextrain.data.registry.DatasetNotFoundError", 404, 2),
        ("flextrain.data.registry.DatasetFormatError", 422, 2),
        ("flextrain.data.manager.DatasetValidationError", 422, 2),
        ("flextrain.data.manager.DatasetInUseError", 409, 2),
        ("flextrain.accounts.users.UserNotFoundError", 404, 2),
        ("flextrain.accounts.users.UserError", 422, 2),
        ("flextrain.jobs.environment.EnvironmentSetupError", 422, 2),
        ("flextrain.config.validation.ConfigValidationError", 422, 2),
        ("flextrain.db.StoreUnavailableError", 503, 1),
        ("flextrain.db.DatabaseTooNewError", 503, 1),
        ("flextrain.jobs.scheduler.SchedulerBusyError", 409, 1),
    ],
)
def test_each_error_keeps_the_answer_it_had(name: str, status: int, exit_code: int) -> None:
    module, _, cls = name.rpartition(".")
    kind = getattr(importlib.import_module(module), cls)
    assert (kind.http_status, kind.exit_code) == (status, exit_code)
    assert issubclass(kind, FlextrainError)


def test_errors_keep_their_python_bases() -> None:
    assert issubclass(JobNotFoundError, LookupError)
    assert issubclass(DatasetFormatError, ValueError)
    assert issubclass(HubModelNotFoundError, LookupError)
    assert issubclass(HubModelNotFoundError, RuntimeError)
    assert issubclass(StoreUnavailableError, RuntimeError)
    assert issubclass(DatabaseTooNewError, UnavailableError)


# -- through both doors --------------------------------------------------------------


@pytest.fixture
def doors(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Doors]:
    """The REST API of a fresh home with an admin's headers; the CLI pointed at it."""
    app = create_app(settings)
    service = app.state.service
    _, token = service.users.create("ada", "admin")
    monkeypatch.setenv("FLEXTRAIN_HOME", str(settings.home))
    monkeypatch.setenv("FLEXTRAIN_MODELS_CACHE", str(settings.models_cache))
    monkeypatch.setenv("FLEXTRAIN_DATABASE_URL", settings.resolved_database_url)
    monkeypatch.setenv("COLUMNS", "400")
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            yield client, {"Authorization": f"Bearer {token}"}
    finally:
        service.engine.dispose()


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli_app, list(args))
    # A clean exit with a message, not an exception escaping the command.
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output, result.output
    return result.exit_code, " ".join(result.output.split())


def test_an_unknown_job_is_404_and_exit_2(doors: Doors) -> None:
    client, headers = doors
    answer = client.get("/api/training/jobs/0123456789ab", headers=headers)
    assert answer.status_code == 404, answer.text
    body = answer.json()
    assert body["code"] == JobNotFoundError.code
    assert body["errors"][0]["field"] == "job_id"
    assert body["errors"][0]["fix"].startswith("use the id of a job you can see")

    exit_code, output = _cli("jobs", "show", "0123456789ab")
    assert exit_code == JobNotFoundError.exit_code == 2
    assert "No training job" in output


# One error of each kind (and one with the exit code of its own), raised where both
# doors list jobs: the answer comes from the error alone.
KINDS = [
    pytest.param(
        DatasetNotFoundError("No dataset 'x' here.", field="eval_file", fix="register it."),
        "eval_file",
        "register it.",
        id="not-found",
    ),
    pytest.param(
        DatasetFormatError("The file has no rows. Fix: add at least one row."),
        "dataset_id",
        "add at least one row.",
        id="invalid",
    ),
    pytest.param(
        JobStateError("Job x is already cancelled. Fix: resume it instead."),
        "job_id",
        "resume it instead.",
        id="conflict",
    ),
    pytest.param(
        HubOfflineError("The hub cannot be reached. Fix: unset HF_HUB_OFFLINE."),
        "model_id",
        "unset HF_HUB_OFFLINE.",
        id="conflict-exit-1",
    ),
    pytest.param(
        StoreUnavailableError("'x.db'", "is locked by another process", 5.0, retry_safe=True),
        "database",
        None,
        id="unavailable",
    ),
]


@pytest.mark.parametrize(("error", "field", "fix"), KINDS)
def test_each_kind_answers_its_status_and_exit_code(
    doors: Doors,
    monkeypatch: pytest.MonkeyPatch,
    error: FlextrainError,
    field: str,
    fix: str | None,
) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(JobStore, "list_jobs", fail)
    client, headers = doors
    answer = client.get("/api/training/jobs", headers=headers)
    assert answer.status_code == error.http_status, answer.text
    body = answer.json()
    assert set(body) == {"detail", "code", "errors"}, body
    assert body["code"] == error.code
    first = body["errors"][0]
    assert first["field"] == field, body
    assert first["fix"], body
    assert not first["fix"].startswith("Fix:"), body
    if fix is not None:
        assert first["fix"] == fix, body
    if error.retry_after is not None:
        assert answer.headers["Retry-After"] == str(error.retry_after)
    else:
        assert "Retry-After" not in answer.headers

    exit_code, output = _cli("jobs", "list")
    assert exit_code == error.exit_code, output
    assert str(error).split(".")[0] in output


def test_the_kinds_differ_in_status() -> None:
    kinds = (NotFoundError, InvalidInputError, ConflictError, UnavailableError)
    assert [k.http_status for k in kinds] == [404, 422, 409, 503]
    assert [k.exit_code for k in kinds] == [2, 2, 2, 1]
