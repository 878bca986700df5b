"""The store against reality: a job that claims to run but whose worker is gone.

A worker killed by the kernel, by a user, or with its machine reports nothing. The
executor says whether the job's workers still run; a job whose workers are gone is
INTERRUPTED (resume continues it from its latest checkpoint), or, when the kernel
killed it for memory, queued again with half the micro-batch (`oom_recovery`) or
FAILED with what to change.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from flextrain.config.enums import TrainingStatus
from flextrain.config.schemas import AdvancedTrainingConfig
from flextrain.jobs import oom
from flextrain.jobs.checkpoints import latest_checkpoint
from flextrain.jobs.environment import TrainingEnvironmentManager
from flextrain.jobs.executor import ClusterExecutor, Executor
from flextrain.jobs.resume import requeue_from_checkpoint
from flextrain.jobs.spec import RunSpec
from flextrain.jobs.store import JobStore, TrainingJob

EventLevel = Literal["info", "warning", "error"]

# How long after a cluster job was interrupted flextrain still asks the cluster whether
# it requeued it (a preemption requeues at once; later, nobody will).
CLUSTER_REQUEUE_WINDOW_S = 15 * 60
# How long a cluster job must have been quiet before an ended state is believed.
CLUSTER_END_GRACE_S = 30.0
# The states in which a cluster has queued a job again (Slurm's after a requeue).
REQUEUED_STATES = frozenset({"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED"})


class Reconciler:
    """Marks jobs whose workers are gone, and recovers those the kernel killed for memory."""

    def __init__(
        self,
        store: JobStore,
        environments: TrainingEnvironmentManager,
        executor: Executor,
        requeue: Callable[[TrainingJob], None],
        *,
        cluster_restarts: int = 0,
    ) -> None:
        self.store = store
        self.environments = environments
        self.executor = executor
        self.requeue = requeue
        self.cluster_restarts = cluster_restarts

    def watches(self, job: TrainingJob) -> bool:
        """Whether `job` is one to check against its executor when it is read: an active
        job with a worker (or handed to a cluster), and a job a cluster interrupted
        lately, which the cluster may have requeued."""
        if job.status.is_active:
            return job.pid is not None or job.cluster_job_id is not None
        if job.cluster_job_id is None:
            return False
        if job.status == TrainingStatus.QUEUED:
            return True  # waiting in the cluster's queue
        if job.status != TrainingStatus.INTERRUPTED:
            return False
        ended = job.completed_at or job.updated_at
        return (datetime.now(UTC) - ended).total_seconds() < CLUSTER_REQUEUE_WINDOW_S

    def reconcile(self, job: TrainingJob) -> TrainingJob:
        """A job that claims to run but whose worker is gone was interrupted.

        The executor says whether its workers still run (locally: the pid and its start
        time, against pid reuse; a worker on another host: its heartbeat; a cluster's
        job: the cluster's state).
        """
        if job.cluster_job_id is not None and isinstance(self.executor, ClusterExecutor):
            if job.executor != self.executor.name:
                return job  # another executor's job: this one cannot judge it
            return self._reconcile_cluster_job(job, self.executor)
        if self.executor.is_running(job):
            return job
        job_dir = self.environments.layout(job.job_id, job.settings.output_dir).root
        killed_by_oom = oom.killed_by_oom(job_dir)
        oom.release(job_dir)
        if killed_by_oom:
            return self._after_oom_kill(job, job_dir, killed_by_oom)
        message = (
            "The worker process stopped without reporting a result (killed, out of memory, "
            f"machine restart?); resume continues from the latest checkpoint. Log: {job.log_path}"
        )
        changed = self.store.transition(
            job.job_id,
            [job.status],
            status=TrainingStatus.INTERRUPTED.value,
            error_message=message,
            completed_at=datetime.now(UTC),
        )
        if changed:
            self.store.add_event(job.job_id, "interrupted", message, level="warning")
        return self.store.get(job.job_id) or job

    def _reconcile_cluster_job(self, job: TrainingJob, executor: ClusterExecutor) -> TrainingJob:
        """A job in a cluster's hands: while it waits there, its wait reason is the
        cluster's; requeued after a preemption, it is queued again (it continues from
        its checkpoint when the cluster restarts it); gone without its worker's word,
        it was interrupted (or failed, if it never started)."""
        cluster_id = job.cluster_job_id or ""
        state = executor.cluster_state(job)
        described = state.describe(executor.name, cluster_id)
        if job.status == TrainingStatus.INTERRUPTED:
            # Queued again by the cluster (not still the old run winding down: its
            # worker, restarted, moves the job on itself if this is missed).
            if state.active and state.state in REQUEUED_STATES:
                requeue_from_checkpoint(
                    self.store,
                    self.environments,
                    job,
                    sources=[TrainingStatus.INTERRUPTED],
                    wait_reason=described,
                    by=f"{executor.name} (requeued)",
                    keep_cluster_job=True,
                )
            return self.store.get(job.job_id) or job
        if state.active:
            if job.status == TrainingStatus.QUEUED and job.wait_reason != described:
                self.store.transition(job.job_id, [TrainingStatus.QUEUED], wait_reason=described)
                return self.store.get(job.job_id) or job
            return job
        # A requeue passes through ended states for a moment (Slurm shows the old run
        # FAILED or CANCELLED before it is pending again): a job is only given up once
        # nothing has changed on it for a while.
        if (datetime.now(UTC) - job.updated_at).total_seconds() < CLUSTER_END_GRACE_S:
            return job
        # Queued again after a requeue, the job has run before and has its checkpoints:
        # Slurm refusing to start it again (a revoked credential, a node gone) leaves it
        # resumable, not failed.
        never_started = (
            job.status in (TrainingStatus.QUEUED, TrainingStatus.VALIDATING)
            and job.resume_count == 0
            and job.current_step == 0
        )
        status = TrainingStatus.FAILED if never_started else TrainingStatus.INTERRUPTED
        message = (
            f"{executor.name} job {cluster_id} ended ({state.state}) without its worker "
            "reporting a result"
            + (" (it never started)." if never_started else "; resume continues it.")
            + f" Log: {job.log_path}"
        )
        if not self.store.transition(
            job.job_id,
            [job.status],
            status=status.value,
            error_message=message,
            completed_at=datetime.now(UTC),
        ):
            return self.store.get(job.job_id) or job
        self.store.add_event(job.job_id, status.value, message, level="warning")
        updated = self.store.get(job.job_id) or job
        # A worker or node lost: the cluster's job ended under it. Like Ray Train's
        # FailureConfig(max_failures), submit it again from its checkpoint, a few times.
        if status == TrainingStatus.INTERRUPTED and job.resume_count < self.cluster_restarts:
            self.requeue(updated)  # submitted again by the next scheduler tick
            return self.store.get(job.job_id) or updated
        return updated

    def _after_oom_kill(self, job: TrainingJob, job_dir: Path, why: str) -> TrainingJob:
        """The kernel killed the worker for memory: with `oom_recovery` (and micro-batch
        left to halve, one process) queue it again from its last checkpoint with half the
        micro-batch and twice the accumulation, the same back-off the worker does for a
        MemoryError it survives; otherwise FAILED with what to change."""
        micro, accumulation = self._batch_in_use(job, job_dir)
        config = job.settings
        recover = config.oom_recovery and micro > 1
        if recover and not job.layout.distributed:
            checkpoint = latest_checkpoint(
                self.environments.layout(job.job_id, config.output_dir).checkpoint_dir
            )
            smaller = {"batch_size": micro // 2, "gradient_accumulation_steps": accumulation * 2}
            if config.per_device_train_batch_size:  # it wins over batch_size
                smaller["per_device_train_batch_size"] = micro // 2
            message = (
                f"Out of memory at micro-batch {micro}: {why}. Continuing with micro-batch "
                f"{micro // 2} x {accumulation * 2} accumulation (same {micro * accumulation} "
                "examples per optimizer step) from "
                f"{checkpoint.name if checkpoint else 'the start'}."
            )
            level: EventLevel = "warning"
            status = TrainingStatus.INTERRUPTED
            given = sorted({*(job.config_fields or []), *smaller})
            values: dict[str, Any] = {
                "config_json": job.typed_config().model_copy(update=smaller).model_dump_json(),
                "config_fields_json": json.dumps(given) if job.config_fields is not None else None,
            }
        else:
            reason = (
                "already at micro-batch 1"
                if micro <= 1
                else "oom_recovery is off"
                if not recover
                else "recovery is not done with several processes"
            )
            message = "OutOfMemoryAdvice: " + oom.out_of_memory_advice(
                config, micro, accumulation, f"{why}; {reason}"
            )
            status, level, values, smaller = (
                TrainingStatus.FAILED,
                "error",
                {},
                {},
            )
        if self.store.transition(
            job.job_id,
            [job.status],
            status=status.value,
            error_message=message,
            completed_at=datetime.now(UTC),
            **values,
        ):
            self.store.add_event(job.job_id, "oom_killed", message, level=level, data=smaller)
            updated = self.store.get(job.job_id)
            if updated is not None and status == TrainingStatus.INTERRUPTED:
                self.requeue(updated)  # started by the next scheduler tick
        return self.store.get(job.job_id) or job

    def _batch_in_use(self, job: TrainingJob, job_dir: Path) -> tuple[int, int]:
        """The micro-batch and accumulation the dead worker ran with: a back-off it made
        itself after its last (re)start, else what it was launched with (`job.json`,
        where batch_size "auto" is already resolved)."""
        for event in reversed(self.store.events(job.job_id)):
            if event.kind == "oom_backoff" and event.data:
                return int(event.data["batch_size"]), int(event.data["gradient_accumulation_steps"])
            if event.kind in ("resumed", "oom_killed"):
                break
        try:
            launched: AdvancedTrainingConfig = RunSpec.read(job_dir).config
        except (OSError, ValueError):
            launched = job.pinned_config()
        batch = launched.batch_size
        micro = batch if isinstance(batch, int) else 1
        return micro, int(launched.gradient_accumulation_steps or 1)
