"""How the supervisor turns torchrun's ending into the job's status."""

from __future__ import annotations

from pathlib import Path

from flextrain.config.enums import TrainingStatus, TrainingType
from flextrain.config.schemas import AdvancedTrainingConfig
from flextrain.jobs.supervise import parse_failures, parse_root_cause, settle
from flextrain.service import TrainingService
from tests.staging import stage_status

# torchrun's report when rank 1 was killed and rank 0, seeing the broken collective
# first, raised before torchrun noticed the kill (so torchrun calls rank 0 the root cause).
REPORT = """
============================================================
flextrain.train.worker FAILED
------------------------------------------------------------
Failures:
[0]:
  time      : 2026-11-29_05:44:11
  host      : node0
  rank      : 1 (local_rank: 1)
  exitcode  : -9 (pid: 29348)  (SIGKILL)
  error_file: <N/A>
  traceback : Signal 9 (SIGKILL) received by PID 29348
------------------------------------------------------------
Root Cause (first observed failure):
[1]:
  time      : 2026-11-29_05:44:10
  host      : node0
  rank      : 0 (local_rank: 0)
  exitcode  : -15 (pid: 29347)  (SIGTERM)
  error_file: <N/A>
  traceback : Traceback (most recent call last):
    File "x.py", line 1, in f
  RuntimeError: [pair.cc:537] Read error [127.0.0.1]:21189: Connection reset by peer.
============================================================
"""


def test_the_rank_that_died_is_the_cause_not_the_one_that_saw_it_die() -> None:
    failures = parse_failures("some log lines\n" + REPORT)
    assert [(f.rank, f.exitcode) for f in failures] == [(1, -9), (0, -15)]
    cause = parse_root_cause(REPORT)
    assert cause is not None
    assert (
        cause.describe()
        == "rank 1 on node0 was killed by SIGKILL (out of memory, or killed by hand?)"
    )


def test_an_exception_is_reported_with_its_message() -> None:
    report = REPORT.replace(
        "  exitcode  : -9 (pid: 29348)  (SIGKILL)\n  error_file: <N/A>\n"
        "  traceback : Signal 9 (SIGKILL) received by PID 29348",
        "  exitcode  : 1 (pid: 29348)\n  error_file: <N/A>\n"
        "  traceback : Traceback (most recent call last):\n"
        "    File \"y.py\", line 2, in g\n  ValueError: label 'maybe' is not in the label set",
    )
    cause = parse_root_cause(report)
    assert cause is not None
    assert cause.rank == 1
    assert cause.describe() == (
        "rank 1 on node0 exited with code 1: ValueError: label 'maybe' is not in the label set"
    )


def test_no_report_no_cause() -> None:
    assert parse_root_cause("Traceback ...\nValueError: x\n") is None


def _job(service: TrainingService) -> str:
    config = AdvancedTrainingConfig(
        model_id="flextrain/tiny-llama",
        dataset_id="demo/text",
        training_type=TrainingType.FULL_TRAINING,
        num_processes=2,
        num_threads=1,
    )
    job = service.create_job(config)
    stage_status(service.store, job.job_id, TrainingStatus.TRAINING)
    return job.job_id


def test_a_failed_run_fails_the_job_with_the_cause(
    service: TrainingService, tmp_path: Path
) -> None:
    job_id = _job(service)
    log = tmp_path / "train.log"
    log.write_text(REPORT)
    assert settle(service.store, job_id, 1, None, log) == TrainingStatus.FAILED
    job = service.require_job(job_id)
    assert job.error_message
    assert job.error_message.startswith(
        "Distributed run failed: rank 1 on node0 was killed by SIGKILL"
    )
    assert service.events(job_id)[-1].kind == "rank_failed"


def test_a_rank_the_kernel_killed_for_memory_fails_with_what_to_change(
    service: TrainingService, tmp_path: Path
) -> None:
    job_id = _job(service)
    log = tmp_path / "train.log"
    log.write_text(REPORT)
    why = "the kernel's out-of-memory killer ended the worker at the job's 1.00 GB memory limit"
    assert settle(service.store, job_id, 1, None, log, why) == TrainingStatus.FAILED
    message = service.require_job(job_id).error_message or ""
    assert message.startswith("OutOfMemoryAdvice: Out of memory at micro-batch")
    assert f"(rank 1: {why}; recovery is not done with several processes)" in message
    assert "Fix: lower" in message
    assert "`flextrain check` estimates each option" in message


def test_a_shutdown_interrupts_and_a_finished_job_is_left_alone(service: TrainingService) -> None:
    job_id = _job(service)
    assert settle(service.store, job_id, 1, "SIGTERM", None) == TrainingStatus.INTERRUPTED
    assert "SIGTERM" in (service.require_job(job_id).error_message or "")
    # Already settled (or cancelled by the service): nothing more is written.
    assert settle(service.store, job_id, 1, None, None) is None
    assert service.require_job(job_id).status == TrainingStatus.INTERRUPTED
