"""The kernel's out-of-memory killer: a real one, in a memory cgroup of the job's own.

A job with `job_memory_limit_gb` runs in its own memory cgroup; a micro-batch that
does not fit makes the kernel SIGKILL the worker (nothing is injected: the kernel
decides). The service must tell this apart from any other death and continue the
job at half the micro-batch with the effective batch kept, or fail it with what to
change. Creating cgroups needs root (or a delegated v2 subtree): where the machine
does not allow it, these tests are skipped with the reason.

Calibrated on this machine (cgroup v1, peak memory of the worker, 512-token rows,
a tiny Llama with a 8,192-row output layer): 612 MB at micro-batch 4, 1,268 MB at
16, so about 830 MB at 8. A 1.0 GB limit kills 16 and leaves 8 some 190 MB.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flextrain.config.enums import TrainingStatus
from flextrain.config.schemas import AdvancedTrainingConfig
from flextrain.jobs import oom
from flextrain.models.builtin import builtin_path, save_random_llama
from flextrain.service import TrainingService
from flextrain.settings import Settings

LIMIT_GB = 1.0


def _cgroups_allowed() -> str | None:
    try:
        group = oom.MemoryCgroup.create("probe-" + os.urandom(4).hex(), 1024**3)
    except OSError as exc:
        return f"this process may not create memory cgroups ({exc})"
    group.remove()
    return None


_NO_CGROUPS = _cgroups_allowed()
needs_cgroups = pytest.mark.skipif(_NO_CGROUPS is not None, reason=_NO_CGROUPS or "")


@pytest.fixture(scope="module")
def wide_model(tmp_path_factory: pytest.TempPathFactory, models_cache: Path) -> Path:
    """The tiny Llama with an output layer 8,192 wide: logits dominate its memory."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(builtin_path("flextrain/tiny-llama", models_cache))
    folder = tmp_path_factory.mktemp("wide-llama")
    dims = {"hidden": 64, "intermediate": 128, "layers": 2, "heads": 4, "kv_heads": 2}
    return save_random_llama(folder, tokenizer, vocab_size=8192, **dims)


@pytest.fixture(scope="module")
def long_rows(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """64 texts of ~600 words: every row fills max_length, so memory grows with the batch."""
    words = (Path(__file__).parents[2] / "src/flextrain/data/bundled/text.txt").read_text().split()
    rng = random.Random(0)
    path = tmp_path_factory.mktemp("long") / "long.jsonl"
    with path.open("w") as out:
        for _ in range(64):
            start = rng.randrange(len(words) - 700)
            out.write(json.dumps({"text": " ".join(words[start : start + 600])}) + "\n")
    return path


@pytest.fixture
def limited(settings: Settings, long_rows: Path) -> Iterator[TrainingService]:
    service = TrainingService(settings.model_copy(update={"job_memory_limit_gb": LIMIT_GB}))
    service.datasets.register("long", long_rows)
    yield service
    for job in service.list_jobs():
        if not job.is_finished:
            service.cancel_job(job.job_id)
    service.engine.dispose()


def _config(model: Path, **overrides: object) -> AdvancedTrainingConfig:
    values: dict[str, object] = {
        "model_id": str(model),
        "dataset_id": "long",
        "training_type": "fine_tuning",
        "batch_size": 16,
        "max_length": 512,
        "max_steps": 2,
        "packing": False,
        "gradient_checkpointing": False,
        "evaluate_before_training": False,
        "ignore_memory_estimate": True,
    }
    values.update(overrides)
    return AdvancedTrainingConfig(**values)  # type: ignore[arg-type]


@needs_cgroups
def test_an_oom_killed_job_continues_at_half_the_micro_batch(
    limited: TrainingService, wide_model: Path
) -> None:
    job = limited.create_job(_config(wide_model))
    limited.start_job(job.job_id)
    done = limited.wait(job.job_id, timeout=300)
    assert done.status == TrainingStatus.COMPLETED, limited.read_log(job.job_id, 40)
    events = [e for e in limited.events(job.job_id) if e.kind in ("oom_killed", "resumed")]
    assert [e.kind for e in events] == ["oom_killed", "resumed"]
    killed = events[0]
    assert killed.level == "warning"
    assert killed.data == {"batch_size": 8, "gradient_accumulation_steps": 2}
    assert killed.message.startswith("Out of memory at micro-batch 16: the kernel's")
    assert "1.00 GB memory limit (job_memory_limit_gb)" in killed.message
    assert "same 16 examples per optimizer step" in killed.message
    # The job now runs (and resumes) with the smaller micro-batch; the step count held.
    assert (done.config["batch_size"], done.config["gradient_accumulation_steps"]) == (8, 2)
    assert done.current_step == done.total_steps == 2
    assert Path(done.model_path or "", "model.safetensors").exists()
    # The cgroup is gone with the worker: nothing of the job is left in the kernel.
    record = oom.LaunchRecord.load(limited.environment(job.job_id).root)
    assert record is not None
    assert record.cgroup is not None
    deadline = time.monotonic() + 10
    while Path(record.cgroup).exists() and time.monotonic() < deadline:
        limited.recover_jobs()  # the sweep a later launch or restart does
        time.sleep(0.2)
    assert not Path(record.cgroup).exists()


@needs_cgroups
def test_without_oom_recovery_an_oom_killed_job_fails_with_what_to_change(
    limited: TrainingService, wide_model: Path
) -> None:
    job = limited.create_job(_config(wide_model, oom_recovery=False))
    limited.start_job(job.job_id)
    done = limited.wait(job.job_id, timeout=300)
    assert done.status == TrainingStatus.FAILED
    message = done.error_message or ""
    assert message.startswith("OutOfMemoryAdvice: Out of memory at micro-batch 16 (the kernel's")
    assert "job_memory_limit_gb); oom_recovery is off)" in message
    assert "Fix: lower batch_size 8 with gradient_accumulation_steps 2" in message
    assert [e.kind for e in limited.events(job.job_id)] == ["oom_killed"]


@needs_cgroups
def test_a_worker_killed_by_hand_is_interrupted_not_taken_for_out_of_memory(
    limited: TrainingService, wide_model: Path
) -> None:
    job = limited.create_job(_config(wide_model, batch_size=2, max_steps=400, save_steps=1000))
    limited.start_job(job.job_id)
    deadline = time.monotonic() + 120
    while limited.require_job(job.job_id).current_step < 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    running = limited.require_job(job.job_id)
    assert running.status == TrainingStatus.TRAINING
    assert running.pid is not None
    # The worker asked the kernel to pick it first when memory runs out ...
    score = Path(f"/proc/{running.pid}/oom_score_adj").read_text().strip()
    assert int(score) == oom.WORKER_OOM_SCORE_ADJ
    # ... and runs in its own cgroup with the job's limit.
    record = oom.LaunchRecord.load(limited.environment(job.job_id).root)
    assert record is not None
    assert record.cgroup is not None
    assert str(running.pid) in Path(record.cgroup, "cgroup.procs").read_text().split()
    os.kill(running.pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while limited.require_job(job.job_id).status.is_active and time.monotonic() < deadline:
        time.sleep(0.2)
    after = limited.require_job(job.job_id)
    assert after.status == TrainingStatus.INTERRUPTED
    assert (after.error_message or "").startswith("The worker process stopped without reporting")
    assert [e.kind for e in limited.events(job.job_id)] == ["interrupted"]
    assert after.config["batch_size"] == 2


def test_without_a_cgroup_the_machine_wide_count_and_the_exit_decide(tmp_path: Path) -> None:
    now = oom.vmstat_oom_kills()
    if now is None:
        pytest.skip("this kernel does not count OOM kills in /proc/vmstat")
    # Launched before the kernel's last OOM kill, ended by SIGKILL: most likely the OOM killer.
    oom.LaunchRecord(vmstat_oom_kills=now - 1).save(tmp_path)
    oom.record_exit(tmp_path, -signal.SIGKILL)
    assert (oom.killed_by_oom(tmp_path) or "").startswith("the kernel's out-of-memory killer most")
    # Any other end (a crash, a signal of ours) is not memory, whatever the kernel counted.
    oom.record_exit(tmp_path, -signal.SIGTERM)
    assert oom.killed_by_oom(tmp_path) is None
    oom.record_exit(tmp_path, 1)
    assert oom.killed_by_oom(tmp_path) is None
    # How it ended unknown (the launching process has gone too): the count alone decides.
    oom.clear_exit(tmp_path)
    assert oom.killed_by_oom(tmp_path) is not None
    oom.LaunchRecord(vmstat_oom_kills=now).save(tmp_path)
    assert oom.killed_by_oom(tmp_path) is None
    # Launched by a flextrain without this record: never taken for out-of-memory.
    (tmp_path / oom.LAUNCH_FILE).unlink()
    assert oom.killed_by_oom(tmp_path) is None
