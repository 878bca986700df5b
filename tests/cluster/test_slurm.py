"""Jobs on a real one-node Slurm cluster through `FLEXTRAIN_EXECUTOR=slurm`.

Every job here is a real sbatch job whose srun step trains a tiny model; the checks
are the ones a local job passes (loss falls, the model loads, cancel stops every
rank) plus Slurm's own: its queue reason, a requeue that resumes, a refusal before
sbatch.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import psutil
import pytest
from transformers import AutoModelForCausalLM

from flextrain.config.enums import TrainingStatus, TrainingType
from flextrain.config.schemas import AdvancedTrainingConfig
from flextrain.config.validation import ConfigValidationError
from flextrain.jobs.store import TrainingJob
from flextrain.service import TrainingService
from tests.cluster.engines import SlurmCluster

pytestmark = pytest.mark.cluster


def _config(**overrides: object) -> AdvancedTrainingConfig:
    values: dict[str, object] = {
        "model_id": "flextrain/tiny-llama",
        "dataset_id": "demo/text",
        "training_type": TrainingType.FULL_TRAINING,
        "max_steps": 16,
        "learning_rate": 3e-3,
        "batch_size": 8,
        "max_length": 48,
        "logging_steps": 1,
        "num_threads": 1,
        "eval_split": 0.0,
        "save_total_limit": 2,
        "gradient_checkpointing": False,
        "monitor_interval": 0.5,
        "seed": 7,
    }
    values.update(overrides)
    return AdvancedTrainingConfig(**values)  # type: ignore[arg-type]


def _until(service: TrainingService, job_id: str, ok, timeout: float = 180) -> TrainingJob:  # type: ignore[no-untyped-def]
    """Poll `job_id` until `ok`; ticks the queue as `wait` does, so a job queued again
    (after a lost worker) is submitted again."""
    deadline = time.monotonic() + timeout
    job = service.require_job(job_id)
    next_tick = 0.0
    while not ok(job):
        next_tick = service.tick_while_queued(job, next_tick)
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out: {job.status.value} step {job.current_step} "
                f"({job.wait_reason or job.error_message})\n{service.read_log(job_id, 60)}"
            )
        time.sleep(0.5)
        job = service.require_job(job_id)
    return job


def _workers_of(job_id: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if job_id in cmdline and any("flextrain" in part for part in cmdline):
            found.append(proc)
    return found


def _squeue(slurm: SlurmCluster, cluster_job_id: str) -> str:
    return subprocess.run(
        ["squeue", "-h", "-j", cluster_job_id, "-o", "%T"],
        capture_output=True,
        text=True,
        env=slurm.env,
    ).stdout.strip()


def _start_when_requeued(slurm: SlurmCluster, cluster_id: str) -> None:
    """Slurm holds a requeued job back by its begin time (about two minutes); let it
    start as soon as it is pending again, as an operator would.

    Not in the second of the requeue: the old run's credential is revoked as of that
    second, and slurmd refuses a launch whose credential is not newer ("Job credential
    revoked"), which ends the job."""
    deadline = time.monotonic() + 60
    while _squeue(slurm, cluster_id) != "PENDING" and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(2.0)
    subprocess.run(
        ["scontrol", "update", f"JobId={cluster_id}", "StartTime=now"], env=slurm.env, check=False
    )


def _loss_steps(service: TrainingService, job_id: str) -> list[int]:
    """The steps with a logged loss, in order (the end-of-run summary row has none)."""
    history = service.metric_history(job_id)
    return sorted(int(row["step"]) for row in history if row.get("loss") is not None)


def test_a_job_trains_as_a_slurm_batch_job(slurm_service: TrainingService) -> None:
    job = slurm_service.create_job(_config())
    started = slurm_service.start_job(job.job_id)
    # Handed to Slurm at once: queued there, with Slurm's id.
    assert started.executor == "slurm"
    assert started.cluster_job_id
    assert started.cluster_job_id.isdigit()
    done = _until(slurm_service, job.job_id, lambda j: j.is_finished)
    assert done.status == TrainingStatus.COMPLETED, slurm_service.read_log(job.job_id, 60)
    losses = [row["loss"] for row in slurm_service.metric_history(job.job_id) if row.get("loss")]
    assert len(losses) >= 10
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3
    assert done.model_path is not None
    assert AutoModelForCausalLM.from_pretrained(done.model_path) is not None
    script = Path(slurm_service.environment(job.job_id).root, "slurm.sbatch").read_text()
    assert "#SBATCH --requeue" in script
    assert "srun" in script
    log = slurm_service.read_log(job.job_id)
    assert f"[flextrain] job {job.job_id}: full_training" in log


def test_a_two_process_job_runs_torchrun_under_srun(slurm_service: TrainingService) -> None:
    job = slurm_service.create_job(_config(num_processes=2, max_steps=8))
    slurm_service.start_job(job.job_id)
    done = _until(slurm_service, job.job_id, lambda j: j.is_finished, timeout=300)
    assert done.status == TrainingStatus.COMPLETED, slurm_service.read_log(job.job_id, 80)
    log = slurm_service.read_log(job.job_id)
    assert "rank 0 of 2" in log
    assert "rank 1 of 2" in log
    assert AutoModelForCausalLM.from_pretrained(done.model_path) is not None


def test_cancel_stops_every_rank_and_keeps_a_checkpoint(
    slurm_service: TrainingService, slurm: SlurmCluster
) -> None:
    job = slurm_service.create_job(_config(num_processes=2, max_steps=2000, save_steps=1000))
    slurm_service.start_job(job.job_id)
    running = _until(slurm_service, job.job_id, lambda j: j.current_step >= 2, timeout=240)
    assert running.cluster_job_id
    assert _workers_of(job.job_id)
    cancelled = slurm_service.cancel_job(job.job_id)
    assert cancelled.status == TrainingStatus.CANCELLED
    deadline = time.monotonic() + 60
    while (_workers_of(job.job_id) or _squeue(slurm, running.cluster_job_id)) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.5)
    assert not _workers_of(job.job_id), "a rank outlived the cancel"
    assert _squeue(slurm, running.cluster_job_id) == ""
    checkpoints = list(slurm_service.environment(job.job_id).checkpoint_dir.glob("checkpoint-*"))
    assert checkpoints, "the cancel saved no checkpoint"


def test_a_requeued_job_resumes_from_its_checkpoint_with_no_lost_steps(
    slurm_service: TrainingService, slurm: SlurmCluster
) -> None:
    job = slurm_service.create_job(_config(max_steps=60, save_steps=4))
    slurm_service.start_job(job.job_id)
    _until(slurm_service, job.job_id, lambda j: j.current_step >= 9, timeout=240)
    cluster_id = slurm_service.require_job(job.job_id).cluster_job_id
    assert cluster_id
    subprocess.run(["scontrol", "requeue", cluster_id], check=True, env=slurm.env)
    _start_when_requeued(slurm, cluster_id)
    done = _until(slurm_service, job.job_id, lambda j: j.status == TrainingStatus.COMPLETED, 300)
    assert done.resume_count == 1
    assert done.cluster_job_id == cluster_id  # the same Slurm job, run again
    resumed = [e for e in slurm_service.events(job.job_id) if e.kind == "resumed"]
    assert len(resumed) == 1
    assert "requeued" in resumed[0].message
    assert int(resumed[0].data["step"]) >= 4
    assert _loss_steps(slurm_service, job.job_id) == list(range(1, 61)), "steps lost or twice"


def test_a_pending_job_shows_slurms_reason(slurm_service: TrainingService) -> None:
    later = {"extra_sbatch": ["--begin=now+3600"]}
    job = slurm_service.create_job(_config(cluster=later))
    started = slurm_service.start_job(job.job_id)
    assert started.status == TrainingStatus.QUEUED
    queued = _until(slurm_service, job.job_id, lambda j: "BeginTime" in (j.wait_reason or ""), 30)
    assert queued.wait_reason == f"slurm job {queued.cluster_job_id} is pending: BeginTime"
    cancelled = slurm_service.cancel_job(job.job_id)
    assert cancelled.status == TrainingStatus.CANCELLED


def test_an_unknown_partition_is_refused_before_sbatch(
    slurm_service: TrainingService, slurm: SlurmCluster
) -> None:
    job = slurm_service.create_job(_config(cluster={"partition": "nope"}))
    with pytest.raises(ConfigValidationError) as raised:
        slurm_service.start_job(job.job_id)
    message = str(raised.value)
    assert "cluster.partition: Slurm has no partition 'nope' (it has: debug, tiny)" in message
    after = slurm_service.require_job(job.job_id)
    assert after.cluster_job_id is None
    root = slurm_service.environment(job.job_id).root
    assert not (root / "slurm.sbatch").exists()
    assert not (root / "job.json").exists()
    listed = subprocess.run(
        ["squeue", "-h", "-n", f"flextrain-{job.job_id}"],
        capture_output=True,
        text=True,
        env=slurm.env,
    ).stdout
    assert listed.strip() == ""


def test_a_multi_node_job_on_a_sqlite_store_is_refused(slurm_service: TrainingService) -> None:
    if not slurm_service.settings.resolved_database_url.startswith("sqlite"):
        pytest.skip("the store is PostgreSQL here, which nodes can reach")
    job = slurm_service.create_job(_config(num_nodes=2))
    with pytest.raises(ConfigValidationError) as raised:
        slurm_service.start_job(job.job_id)
    assert "num_nodes: A 2-node job reports from every node" in str(raised.value)
    assert "FLEXTRAIN_DATABASE_URL" in str(raised.value)


def test_the_estimate_is_made_for_the_partitions_node(slurm_service: TrainingService) -> None:
    hardware = slurm_service.hardware()
    assert hardware.platform == "slurm partition debug"
    assert hardware.cpu_cores == (psutil.cpu_count() or 1)
    assert hardware.gpu_count == 0


def test_a_time_limit_warning_checkpoints_requeues_and_resumes(
    slurm_service: TrainingService, slurm: SlurmCluster
) -> None:
    """Slurm's --signal=B:USR1 warning (time limit or preemption ahead), delivered to
    the batch script as Slurm does: the step checkpoints and stops, the script requeues
    the job, and the requeued run continues from that checkpoint."""
    job = slurm_service.create_job(_config(max_steps=60, save_steps=1000))
    slurm_service.start_job(job.job_id)
    _until(slurm_service, job.job_id, lambda j: j.current_step >= 6, timeout=240)
    cluster_id = slurm_service.require_job(job.job_id).cluster_job_id
    assert cluster_id
    subprocess.run(["scancel", "--batch", "--signal=USR1", cluster_id], check=True, env=slurm.env)
    _start_when_requeued(slurm, cluster_id)
    done = _until(slurm_service, job.job_id, lambda j: j.status == TrainingStatus.COMPLETED, 300)
    assert done.resume_count == 1
    resumed = [e for e in slurm_service.events(job.job_id) if e.kind == "resumed"]
    assert len(resumed) == 1
    assert int(resumed[0].data["step"]) >= 6  # the checkpoint the warning saved
    assert _loss_steps(slurm_service, job.job_id) == list(range(1, 61))
    out = slurm_service.read_log(job.job_id)
    assert "time limit or preemption ahead; checkpoint saved, requeueing" in out


def test_a_two_node_job_meets_on_the_first_node_and_matches_one_node(
    slurm_service: TrainingService, slurm: SlurmCluster
) -> None:
    """Two slurmd (node1, node2) on this machine: a job of one process on each of two
    nodes rendezvouses at the first node's address and trains to the loss of two
    processes on one node at the same global batch. Its nodes report to a shared
    store, so this runs with PostgreSQL (make test-cluster)."""
    if slurm_service.settings.resolved_database_url.startswith("sqlite"):
        pytest.skip("a multi-node job needs a store every node reaches: PostgreSQL")
    common = {"max_steps": 24, "batch_size": 4, "eval_split": 0.1, "logging_steps": 4}
    two_nodes = slurm_service.create_job(_config(num_nodes=2, **common))
    slurm_service.start_job(two_nodes.job_id)
    one_node = slurm_service.create_job(_config(num_processes=2, **common))
    slurm_service.start_job(one_node.job_id)
    a = _until(slurm_service, two_nodes.job_id, lambda j: j.is_finished, timeout=400)
    b = _until(slurm_service, one_node.job_id, lambda j: j.is_finished, timeout=400)
    assert a.status == TrainingStatus.COMPLETED, slurm_service.read_log(a.job_id, 80)
    assert b.status == TrainingStatus.COMPLETED, slurm_service.read_log(b.job_id, 80)
    nodes = subprocess.run(
        ["scontrol", "show", "job", "-o", a.cluster_job_id or ""],
        capture_output=True,
        text=True,
        env=slurm.env,
    ).stdout
    assert "NodeList=node[1-2]" in nodes
    assert a.metrics["world_size"] == b.metrics["world_size"] == 2
    assert a.eval_loss is not None
    assert b.eval_loss is not None
    assert a.eval_loss < 6.0
    assert abs(a.eval_loss - b.eval_loss) / b.eval_loss < 0.05, (a.eval_loss, b.eval_loss)
    print(f"eval loss: 2 nodes x 1 process {a.eval_loss:.4f}, 1 node x 2 {b.eval_loss:.4f}")


def test_a_job_no_node_can_hold_is_refused_naming_the_numbers(
    slurm_service: TrainingService, slurm: SlurmCluster
) -> None:
    cores = psutil.cpu_count() or 1
    job = slurm_service.create_job(_config(num_threads=cores * 8))
    with pytest.raises(ConfigValidationError) as raised:
        slurm_service.start_job(job.job_id)
    assert f"num_threads: {cores * 8} threads x 1 process = {cores * 8} CPU threads" in str(
        raised.value
    )
    assert f"has {cores} cores" in str(raised.value)
    assert slurm_service.require_job(job.job_id).cluster_job_id is None


def test_a_node_failure_requeues_the_job_and_it_resumes_from_its_checkpoint(
    slurm_service: TrainingService, slurm: SlurmCluster
) -> None:
    """The node a job runs on goes down (set DOWN, as slurmctld does when a node stops
    answering): Slurm kills the job there and requeues it, and flextrain shows it
    queued with Slurm's reason; run again, it continues from its latest checkpoint."""
    job = slurm_service.create_job(_config(max_steps=60, save_steps=4))
    slurm_service.start_job(job.job_id)
    _until(slurm_service, job.job_id, lambda j: j.current_step >= 9, timeout=240)
    cluster_id = slurm_service.require_job(job.job_id).cluster_job_id
    assert cluster_id
    node = _squeue_field(slurm, cluster_id, "%N")
    assert node in slurm.nodes
    down = ["scontrol", "update", f"NodeName={node}"]
    subprocess.run([*down, "State=DOWN", "Reason=flextrain-test"], check=True, env=slurm.env)
    reasons: set[str] = set()
    deadline = time.monotonic() + 300
    try:
        current = slurm_service.require_job(job.job_id)
        while current.status != TrainingStatus.COMPLETED and time.monotonic() < deadline:
            if current.status == TrainingStatus.QUEUED and current.wait_reason:
                reasons.add(current.wait_reason)
            # As an operator would: release a job Slurm held after its failed launch,
            # and let a requeued one start without its begin-time delay.
            state = _squeue_field(slurm, cluster_id, "%T|%r")
            if "held" in state.lower():
                subprocess.run(["scontrol", "release", cluster_id], env=slurm.env, check=False)
            elif "BeginTime" in state:
                update = ["scontrol", "update", f"JobId={cluster_id}", "StartTime=now"]
                subprocess.run(update, env=slurm.env, check=False)
            time.sleep(1)
            current = slurm_service.require_job(job.job_id)
    finally:
        subprocess.run([*down, "State=RESUME"], env=slurm.env, check=False)
    assert current.status == TrainingStatus.COMPLETED, slurm_service.read_log(job.job_id, 40)
    assert any(r.startswith(f"slurm job {cluster_id} is pending") for r in reasons), reasons
    assert current.resume_count >= 1
    resumed = next(e for e in slurm_service.events(job.job_id) if e.kind == "resumed")
    assert int(resumed.data["step"]) >= 8
    assert _loss_steps(slurm_service, job.job_id) == list(range(1, 61))


def _squeue_field(slurm: SlurmCluster, cluster_job_id: str, field: str) -> str:
    return subprocess.run(
        ["squeue", "-h", "-j", cluster_job_id, "-o", field],
        capture_output=True,
        text=True,
        env=slurm.env,
    ).stdout.strip()
