"""The Ray executor: one Ray job per flextrain job, through the Ray Jobs API.

Ray places the job's entrypoint (the worker, or torchrun for several processes) on
a node with the CPUs and GPUs it asks for, keeps its logs, and stops it; flextrain
submits with `JobSubmissionClient.submit_job` and reads the state back with
`get_job_status`. The workers report to the job store as they do locally. Ray is an
optional extra: `pip install 'flextrain[ray]'`.
"""

from __future__ import annotations

import shlex
from typing import Any

from flextrain.config.issues import ValidationIssue
from flextrain.errors import InvalidInputError
from flextrain.hardware.detect import HardwareConstraints
from flextrain.jobs.cluster import ClusterExecutorBase, node_constraints
from flextrain.jobs.executor import ClusterState, Submission, Submitted
from flextrain.jobs.launch import SHUTDOWN_GRACE
from flextrain.jobs.store import JobStore, TrainingJob
from flextrain.settings import Settings

ACTIVE = frozenset({"PENDING", "RUNNING"})
# Environment a job takes from this process: what the worker needs, not the caller's
# whole environment (which would leak its tokens and paths into the cluster).
_PASSED = ("HF_", "FLEXTRAIN_", "TRANSFORMERS_", "TOKENIZERS_", "PYTHON", "OMP_", "CUDA_")


class RayNotInstalledError(InvalidInputError, RuntimeError):
    """FLEXTRAIN_EXECUTOR=ray without Ray installed: a setting to change, or a package
    to install."""

    code = "ray_not_installed"
    field = "executor"


def _client(address: str) -> Any:
    try:
        from ray.job_submission import JobSubmissionClient
    except ImportError as exc:
        raise RayNotInstalledError(
            "FLEXTRAIN_EXECUTOR=ray needs Ray. Fix: pip install 'flextrain[ray]' (or "
            "'ray[default]'), or set FLEXTRAIN_EXECUTOR=local."
        ) from exc
    return JobSubmissionClient(None if address == "auto" else address)


def submission_id(job_id: str, resume_count: int) -> str:
    """Ray's id for one run of a job: a resumed job is a new Ray job."""
    return f"flextrain-{job_id}-{resume_count}"


def entrypoint(argv: list[str], processes: int) -> str:
    """The shell command Ray runs: the worker, or torchrun with `processes` workers on
    the node Ray chose (a standalone rendezvous: one node)."""
    if processes <= 1:
        return shlex.join(argv)
    python, worker = argv[0], argv[1:]
    return shlex.join(
        [
            python,
            "-m",
            "flextrain.jobs.supervise",
            *argv[3:],
            "--",
            python,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            str(processes),
            "--max-restarts",
            "0",
            "--shutdown-timeout",
            str(SHUTDOWN_GRACE),
            *worker,
        ]
    )


class RayExecutor(ClusterExecutorBase):
    """Runs each job as a Ray job on the cluster at `settings.ray_address`."""

    name = "ray"

    def __init__(self, settings: Settings, store: JobStore) -> None:
        super().__init__(settings, store)
        self._ray: Any = None

    @property
    def client(self) -> Any:
        if self._ray is None:
            self._ray = _client(self.settings.ray_address)
        return self._ray

    def node_hardware(self, job: TrainingJob | None = None) -> HardwareConstraints | None:
        """The largest of the cluster's live nodes (by CPUs) as the estimates see it,
        from Ray's state API; None when Ray cannot be asked."""
        try:
            from ray.util.state import list_nodes
        except ImportError:
            return None
        address = None if self.settings.ray_address == "auto" else self.settings.ray_address
        try:
            nodes = [n for n in list_nodes(address=address, detail=True) if n.state == "ALIVE"]
        except Exception:
            return None
        if not nodes:
            return None
        best = max(nodes, key=lambda n: (n.resources_total or {}).get("CPU", 0))
        res = best.resources_total or {}
        return node_constraints(
            cpus=int(res.get("CPU", 1)),
            memory_gb=float(res.get("memory", 0)) / 1024**3,
            gpus=int(res.get("GPU", 0)),
            gpu_memory_gb=self.settings.cluster_gpu_memory_gb or 0.0,
            bf16=self.settings.cluster_gpu_bf16,
            platform=f"ray node {best.node_ip}",
        )

    def preflight(self, job: TrainingJob) -> list[ValidationIssue]:
        issues: list[ValidationIssue] = []
        try:
            self.client.list_jobs()
        except RayNotInstalledError as exc:
            problem, _, fix = str(exc).partition(" Fix: ")
            return [ValidationIssue("executor", problem, fix)]
        except Exception as exc:
            return [
                ValidationIssue(
                    "executor",
                    f"The Ray cluster at {self.settings.ray_address} does not answer: {exc}",
                    "start it (`ray start --head`) or set FLEXTRAIN_RAY_ADDRESS to its "
                    "dashboard address, http://HEAD:8265.",
                )
            ]
        if job.layout.nodes > 1:
            issues.append(
                ValidationIssue(
                    "num_nodes",
                    "The Ray executor runs a job on one node (torchrun with num_processes "
                    "workers there).",
                    "use num_nodes 1 with Ray, or the slurm executor for several nodes.",
                )
            )
        return issues

    def submit(self, submission: Submission) -> Submitted:
        job = self.job_of(submission)
        layout = job.layout
        hardware = self.node_hardware(job)
        gpus = layout.processes if hardware and hardware.gpu_count else 0
        cpus = (layout.threads or 1) * layout.processes
        env = {k: v for k, v in submission.env.items() if k.startswith(_PASSED)}
        # How long Ray's job supervisor waits after SIGTERM before SIGKILL on a stop
        # (default 3 s): the ranks' grace to finish the step and save a checkpoint.
        env["RAY_JOB_STOP_WAIT_TIME_S"] = str(SHUTDOWN_GRACE + 15)
        ray_id = submission_id(job.job_id, job.resume_count)
        command = entrypoint(submission.argv, layout.processes)
        self.client.submit_job(
            entrypoint=f"{command} >> {shlex.quote(str(submission.log_file))} 2>&1",
            submission_id=ray_id,
            runtime_env={"env_vars": env},
            entrypoint_num_cpus=cpus,
            entrypoint_num_gpus=gpus,
            metadata={"flextrain_job": job.job_id},
        )
        return Submitted(pid=None, pid_started_at=None, host=None, cluster_job_id=ray_id)

    def cluster_state(self, job: TrainingJob) -> ClusterState:
        try:
            info = self.client.get_job_info(job.cluster_job_id)
        except Exception:
            return ClusterState(active=False, state="GONE")
        state = str(getattr(info.status, "value", info.status))
        reason = info.message if state == "PENDING" else None
        node = getattr(info, "driver_node_id", None)
        return ClusterState(
            active=state in ACTIVE, state=state, reason=reason, nodes=node[:12] if node else None
        )

    def read_log(self, job: TrainingJob, tail: int = 200) -> str:
        """The job's log (the entrypoint appends to it), then what Ray kept of the
        entrypoint's own output (errors before the worker started)."""
        lines = self.own_log(job)
        if job.cluster_job_id:
            try:
                extra = self.client.get_job_logs(job.cluster_job_id).strip()
            except Exception:
                extra = ""
            lines += [f"[ray] {line}" for line in extra.splitlines()]
        return "\n".join(lines[-tail:])

    def cancel(self, job: TrainingJob, timeout: float = 30.0) -> None:
        """stop_job: Ray sends SIGTERM to the entrypoint's process group (every rank
        saves a checkpoint), then SIGKILL after RAY_JOB_STOP_WAIT_TIME_S."""
        if not job.cluster_job_id:
            return
        self.client.stop_job(job.cluster_job_id)
        self.wait_gone(job, timeout)
