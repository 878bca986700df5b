"""Faults of the machine around a job, made real: a full disk while checkpointing, an
output folder that cannot be written, a dataset's stored copy deleted, a model folder
whose weights are cut short or missing. Each gives a message naming the thing and the
fix, leaves nothing half-made, and leaves other jobs alone.

The disk and mount faults use a small tmpfs (a real ENOSPC, a real EROFS); they need
root and mount permission, as in CI, and skip with the reason elsewhere. The database
faults are in test_environment_faults_database.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from safetensors import safe_open
from typer.testing import CliRunner

from flextrain.api.app import create_app
from flextrain.cli.main import app as cli_app
from flextrain.config.enums import TrainingStatus, TrainingType
from flextrain.config.schemas import AdvancedTrainingConfig
from flextrain.config.validation import ConfigValidationError
from flextrain.data.bundled import bundled_path
from flextrain.data.registry import DatasetNotFoundError
from flextrain.jobs.checkpoints import STAGING_PREFIX, latest_checkpoint
from flextrain.models.resolve import ModelFilesError
from flextrain.service import TrainingService
from flextrain.settings import Settings

Mount = Callable[[Path, str], Path]

# A tiny-llama checkpoint (weights, optimizer, RNG, tokenizer) is about 1.8 MB.
ONE_AND_A_HALF = 2700 * 1024
# No space kept free beyond what the run needs: the tmpfs here is the whole disk.
NO_RESERVE = {"disk_reserve_mb": 0}
# `flextrain train` without its model: creates a job and returns.
TRAIN = ["train", "--dataset", "demo/text", "--type", "fine_tuning", "--detach"]


def _config(**overrides: object) -> AdvancedTrainingConfig:
    values: dict[str, object] = {
        "model_id": "flextrain/tiny-llama",
        "dataset_id": "demo/text",
        "training_type": TrainingType.FINE_TUNING,
        "max_steps": 15,
        "save_steps": 5,
        "save_total_limit": 2,
        "batch_size": 8,
        "max_length": 32,
        "logging_steps": 1,
        "num_threads": 1,
        "eval_split": 0.0,
        "evaluate_before_training": False,
        "gradient_checkpointing": False,
    }
    values.update(overrides)
    return AdvancedTrainingConfig(**values)  # type: ignore[arg-type]


@pytest.fixture
def mount() -> Iterator[Mount]:
    """Mount a tmpfs with `options` on a folder; unmounted at teardown."""
    mounted: list[Path] = []

    def do_mount(where: Path, options: str) -> Path:
        where.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            pytest.skip(
                f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode}): this "
                "test needs root and mount permission for a real ENOSPC or EROFS"
            )
        mounted.append(where)
        return where

    yield do_mount
    for where in reversed(mounted):
        if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], capture_output=True)


def _remount(where: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(where)], check=True)


# -- disk full while checkpointing --------------------------------------------------------


def test_a_disk_filling_up_pauses_the_job_before_a_checkpoint_and_resume_continues_it(
    service: TrainingService, tmp_path: Path, mount: Mount
) -> None:
    """Room for the whole run when it starts; then something else fills the disk. The job
    pauses before the checkpoint that no longer fits (nothing half-written), and resumes
    once the space is back, with no step lost or trained twice."""
    other = service.create_job(_config(output_dir=str(tmp_path / "other")))
    job = service.create_job(_config(output_dir=str(tmp_path / "full"), health=NO_RESERVE))
    checkpoints = Path(job.output_dir or "") / "checkpoints"
    mount(checkpoints, "size=16m")
    service.start_job(other.job_id)
    service.start_job(job.job_id)
    # Before the worker's first step (it takes seconds to start): leave room for one
    # checkpoint and a half.
    ballast = checkpoints / "ballast"
    ballast.write_bytes(b"\0" * (shutil.disk_usage(checkpoints).free - ONE_AND_A_HALF))

    paused = service.wait(job.job_id, timeout=240)
    assert paused.status == TrainingStatus.PAUSED, paused.error_message
    message = paused.error_message or ""
    assert "Paused at step 10 before its checkpoint: it needs about" in message
    assert f"{checkpoints} has" in message
    assert "nothing was half-written; checkpoint-5 is the latest checkpoint" in message
    assert "Fix: free space on that disk" in message
    assert "flextrain jobs resume" in message
    assert [e.kind for e in service.events(job.job_id)][-1] == "paused"

    assert sorted(p.name for p in checkpoints.iterdir()) == ["ballast", "checkpoint-5"]
    kept = latest_checkpoint(checkpoints)
    assert kept == checkpoints / "checkpoint-5"
    assert json.loads((kept / "trainer_state.json").read_text())["global_step"] == 5
    with safe_open(str(kept / "model.safetensors"), framework="numpy") as weights:
        assert len(list(weights.keys())) > 0

    # The job next to it never noticed.
    finished = service.wait(other.job_id, timeout=240)
    assert finished.status == TrainingStatus.COMPLETED, finished.error_message
    assert finished.current_step == 15

    # Space freed: resume continues from checkpoint-5 and finishes.
    ballast.unlink()
    service.resume_job(job.job_id)
    done = service.wait(job.job_id, timeout=240)
    assert done.status == TrainingStatus.COMPLETED, done.error_message
    assert done.current_step == 15
    steps = [row["step"] for row in service.metric_history(job.job_id) if "loss" in row]
    assert steps == list(range(1, 16))
    assert not list(checkpoints.glob(f"{STAGING_PREFIX}*"))


def test_a_run_whose_checkpoints_cannot_fit_is_refused_with_the_numbers(
    service: TrainingService, tmp_path: Path, mount: Mount
) -> None:
    small = mount(tmp_path / "small", "size=4m")
    with pytest.raises(ConfigValidationError) as info:
        service.create_job(_config(output_dir=str(small / "run"), health=NO_RESERVE))
    issue = _output_dir_issue(info.value)
    assert "the run writes about" in issue
    assert "3 checkpoints of 1." in issue  # MB each: save_total_limit 2, one more in rotation
    assert f"but {small} has 4.0 MB free" in issue
    assert "Fix: free space there, keep fewer checkpoints (save_total_limit)" in issue
    assert service.list_jobs() == []
    # With fewer checkpoints kept it fits, and starts.
    fits = service.create_job(
        _config(
            output_dir=str(small / "run"),
            health=NO_RESERVE,
            save_total_limit=None,
            save_steps=None,
            max_steps=4,
        )
    )
    service.start_job(fits.job_id)
    assert service.wait(fits.job_id, timeout=240).status == TrainingStatus.COMPLETED


# -- output folder not writable ------------------------------------------------------------


def _output_dir_issue(error: ConfigValidationError) -> str:
    messages = [str(issue) for issue in error.errors if issue.field == "output_dir"]
    assert messages, error.issues
    return messages[0]


def test_an_output_dir_on_a_read_only_mount_is_refused_when_the_job_is_created(
    service: TrainingService, tmp_path: Path, mount: Mount
) -> None:
    read_only = mount(tmp_path / "ro", "ro,size=1m")
    with pytest.raises(ConfigValidationError) as info:
        service.create_job(_config(output_dir=str(read_only / "run")))
    issue = _output_dir_issue(info.value)
    assert str(read_only / "run") in issue
    assert "Read-only file system" in issue
    assert "Fix: choose a folder you can write to" in issue
    assert service.list_jobs() == []


def test_an_output_dir_that_became_read_only_fails_the_start_not_the_worker(
    service: TrainingService, tmp_path: Path, mount: Mount
) -> None:
    job = service.create_job(_config(output_dir=str(tmp_path / "out")))
    mount(Path(job.output_dir or ""), "ro,size=1m")  # e.g. the disk remounted read-only
    with pytest.raises(ConfigValidationError) as info:
        service.start_job(job.job_id)
    assert "Read-only file system" in _output_dir_issue(info.value)
    after = service.require_job(job.job_id)
    assert after.status == TrainingStatus.FAILED
    assert after.pid is None
    assert "output_dir" in (after.error_message or "")


def test_an_output_dir_under_a_regular_file_is_a_422_and_a_cli_message(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file where a folder should be")
    wanted = blocker / "run"
    app = create_app(settings)
    service: TrainingService = app.state.service
    _, token = service.users.create("ada", "admin")
    body = _config(output_dir=str(wanted)).model_dump(mode="json")
    with TestClient(app, raise_server_exceptions=False) as client:
        answer = client.post(
            "/api/training/jobs/advanced",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
        )
    assert answer.status_code == 422, answer.text
    fields = {e["field"]: e["message"] for e in answer.json()["errors"]}
    assert f"{blocker} is a file, not a folder" in fields["output_dir"]

    monkeypatch.setenv("FLEXTRAIN_HOME", str(settings.home))
    monkeypatch.setenv("FLEXTRAIN_MODELS_CACHE", str(settings.models_cache))
    result = CliRunner().invoke(
        cli_app,
        [*TRAIN, "--model", "flextrain/tiny-llama", "--output-dir", str(wanted)],
    )
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "output_dir" in text
    assert "is a file, not a folder" in text
    assert "Traceback" not in text
    assert service.list_jobs() == []
    service.engine.dispose()


# -- dataset deleted after registration ----------------------------------------------------


def test_a_dataset_whose_stored_copy_was_deleted_cannot_start_or_resume_until_registered(
    service: TrainingService, tmp_path: Path
) -> None:
    source = tmp_path / "prose.txt"
    shutil.copy(bundled_path("text.txt"), source)
    stored = service.datasets.add(source, name="prose")
    # The original file may go: registering stored a copy, which jobs train on.
    source.unlink()
    job = service.create_job(_config(dataset_id="prose", max_steps=4, save_steps=None))
    stopped = service.create_job(_config(dataset_id="prose", max_steps=4, save_steps=None))
    service.cancel_job(stopped.job_id)
    before = service.require_job(stopped.job_id)

    shutil.rmtree(stored.path.parent)  # the stored copy, e.g. by hand in FLEXTRAIN_HOME
    with pytest.raises(DatasetNotFoundError) as info:
        service.start_job(job.job_id)
    message = str(info.value)
    assert "Dataset 'prose'" in message
    assert "stored copy" in message
    assert "Fix: register the file again" in message
    refused = service.require_job(job.job_id)
    assert refused.status == TrainingStatus.FAILED
    assert refused.error_message == message
    assert refused.pid is None

    with pytest.raises(DatasetNotFoundError, match="register the file again"):
        service.resume_job(stopped.job_id)
    assert service.require_job(stopped.job_id) == before  # untouched

    # The fix the message gives works: the same content is the same version.
    shutil.copy(bundled_path("text.txt"), source)
    assert service.datasets.add(source, name="prose").version == stored.version
    service.resume_job(job.job_id)
    done = service.wait(job.job_id, timeout=240)
    assert done.status == TrainingStatus.COMPLETED, done.error_message


# -- model folder with corrupt or missing weights ------------------------------------------


@pytest.fixture
def model_folder(service: TrainingService, tmp_path: Path) -> Path:
    """A copy of the built-in tiny Llama that a test may break."""
    folder = tmp_path / "my-llama"
    shutil.copytree(service.models.resolve("flextrain/tiny-llama").path, folder)
    return folder


def _truncate(folder: Path) -> str:
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])  # a copy that stopped half-way
    return "model.safetensors is truncated or not a safetensors file"


def _garbage(folder: Path) -> str:
    (folder / "model.safetensors").write_bytes(b"<html>404 Not Found</html>" * 40)
    return "model.safetensors is truncated or not a safetensors file"


def _missing_shard(folder: Path) -> str:
    (folder / "model.safetensors").rename(folder / "model-00001-of-00002.safetensors")
    with safe_open(str(folder / "model-00001-of-00002.safetensors"), framework="numpy") as f:
        names = list(f.keys())
    half = len(names) // 2
    weight_map = {
        name: f"model-0000{1 if i < half else 2}-of-00002.safetensors"
        for i, name in enumerate(names)
    }
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map})
    )
    return "model-00002-of-00002.safetensors is missing"


@pytest.mark.parametrize("damage", [_truncate, _garbage, _missing_shard])
def test_a_model_folder_with_broken_weights_is_refused_at_check_and_create(
    service: TrainingService, model_folder: Path, damage: Callable[[Path], str]
) -> None:
    expected = damage(model_folder)
    with pytest.raises(ModelFilesError) as info:
        service.create_job(_config(model_id=str(model_folder)))
    message = str(info.value)
    assert expected in message
    assert str(model_folder) in message
    assert "Fix: copy the model folder again" in message
    assert service.list_jobs() == []

    report = service.check_compatibility(str(model_folder))
    assert report.is_compatible is False
    assert any(expected in issue for issue in report.issues)


def test_a_model_folder_without_weights_is_refused_unless_trained_from_scratch(
    service: TrainingService, model_folder: Path
) -> None:
    (model_folder / "model.safetensors").unlink()
    with pytest.raises(ConfigValidationError) as info:
        service.create_job(_config(model_id=str(model_folder)))
    issues = [str(i) for i in info.value.errors if i.field == "model_id"]
    assert issues
    assert "has no weight file: model.safetensors is missing" in issues[0]
    assert "Fix: copy the weights into the folder" in issues[0]
    assert service.list_jobs() == []
    # A config (and tokenizer) is all full_training needs: it builds the model fresh.
    job = service.create_job(
        _config(model_id=str(model_folder), training_type=TrainingType.FULL_TRAINING)
    )
    assert job.status == TrainingStatus.PENDING


def test_broken_weights_are_a_422_over_rest_and_one_line_from_the_cli(
    settings: Settings, model_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = _truncate(model_folder)
    app = create_app(settings)
    service: TrainingService = app.state.service
    _, token = service.users.create("ada", "admin")
    headers = {"Authorization": f"Bearer {token}"}
    body = _config(model_id=str(model_folder)).model_dump(mode="json")
    with TestClient(app, raise_server_exceptions=False) as client:
        created = client.post("/api/training/jobs/advanced", json=body, headers=headers)
        checked = client.post(
            "/api/training/compatibility/check",
            json={"model_id": str(model_folder), "training_type": "fine_tuning"},
            headers=headers,
        )
    assert created.status_code == 422, created.text
    assert expected in created.json()["detail"]
    assert checked.status_code == 200, checked.text
    assert any(expected in issue for issue in checked.json()["issues"])

    monkeypatch.setenv("FLEXTRAIN_HOME", str(settings.home))
    monkeypatch.setenv("FLEXTRAIN_MODELS_CACHE", str(settings.models_cache))
    result = CliRunner().invoke(
        cli_app,
        [*TRAIN, "--model", str(model_folder)],
    )
    assert result.exit_code == 2, result.output
    assert expected in " ".join(result.output.split())
    assert "Traceback" not in result.output
    service.engine.dispose()
