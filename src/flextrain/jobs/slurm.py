"""The Slurm executor: one batch job per flextrain job, placed and signalled by Slurm.

Slurm does the queueing, the placing, the starting (`srun` on every node of the
allocation, torchrun on each for several processes), the signalling and the
requeueing; flextrain writes the batch script (`batch_script`, a pure function),
calls `sbatch --parsable`, and reads the job's state back from `squeue` and
`scontrol`. The workers report to the job store as they do locally, so every
other door (API, CLI, web page, metrics, cancel, resume) is unchanged.

Preemption and time limits: jobs are submitted with `--requeue` and
`--signal=B:USR1@<slurm_signal_seconds>`. The batch script turns USR1 into SIGTERM
for the step (the worker saves a checkpoint and stops, INTERRUPTED), then requeues
the job itself; a preemption or `scontrol requeue` sends SIGTERM to the step
directly and requeues it. Either way the requeued run starts its worker with
`--resume-latest`, which continues from the latest checkpoint and records it.
"""

from __future__ import annotations

import contextlib
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from flextrain.config.cluster import ClusterOptions
from flextrain.config.issues import ValidationIssue
from flextrain.errors import UnavailableError
from flextrain.hardware.detect import HardwareConstraints
from flextrain.jobs.cluster import ClusterExecutorBase, node_constraints
from flextrain.jobs.executor import ClusterState, Submission, Submitted
from flextrain.jobs.launch import SHUTDOWN_GRACE
from flextrain.jobs.resources import Layout
from flextrain.jobs.store import TrainingJob

# Slurm states in which the job still holds or waits for a place.
ACTIVE_STATES = frozenset(
    {
        "PENDING",
        "CONFIGURING",
        "RUNNING",
        "COMPLETING",
        "REQUEUED",
        "REQUEUE_FED",
        "REQUEUE_HOLD",
        "RESIZING",
        "SUSPENDED",
        "STAGE_OUT",
        "SIGNALING",
        "STOPPED",
    }
)
# The port a multi-node job's nodes meet on: fixed per Slurm job id, so every node
# computes the same one without talking.
RDZV_PORT_BASE = 29_500
_SLURM_ID = re.compile(r"^\d+(_\d+)?$")
_OPTION = re.compile(r"^--[a-z][a-z0-9-]*(=[^\s'\"`$\\;&|<>]+)?$")


class SlurmError(UnavailableError, RuntimeError):
    """A Slurm command failed or is missing; the message is Slurm's own, with the command."""

    code = "slurm_error"


@dataclass(frozen=True)
class BatchJob:
    """Everything the batch script of one job needs, beside the worker's arguments."""

    job_id: str
    layout: Layout
    worker_args: list[str]  # after `-m flextrain.train.worker`
    python: str
    job_dir: Path
    log_file: Path
    rank_logs: Path
    options: ClusterOptions
    extra_sbatch: tuple[str, ...] = ()
    gpus_per_node: int = 0
    cpus_per_node: int | None = None
    signal_seconds: int = 120
    timeout_s: int = 600


def output_file(job_dir: Path) -> Path:
    """Slurm's own output of the batch script (srun errors, node messages); %j is
    Slurm's job id, so each submission keeps its own."""
    return job_dir / "slurm-%j.out"


def batch_script(batch: BatchJob) -> str:
    """The sbatch script for one job: a pure function of `batch`, tested without Slurm.

    One `srun` task per node runs the worker (one process) or torchrun (several per
    node, c10d rendezvous on the first node of the allocation at a port fixed by the
    Slurm job id). The script waits for the step, turns USR1 (time limit or
    preemption ahead) into SIGTERM for the step, and requeues itself after USR1 once
    the step has saved its checkpoint.
    """
    layout = batch.layout
    opts = batch.options
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name=flextrain-{batch.job_id}",
        f"#SBATCH --output={output_file(batch.job_dir)}",
        "#SBATCH --open-mode=append",
        f"#SBATCH --nodes={layout.nodes}",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --requeue",
        f"#SBATCH --signal=B:USR1@{batch.signal_seconds}",
    ]
    if batch.cpus_per_node:
        lines.append(f"#SBATCH --cpus-per-task={batch.cpus_per_node}")
    if batch.gpus_per_node:
        lines.append(f"#SBATCH --gpus-per-node={batch.gpus_per_node}")
    for flag, value in (
        ("partition", opts.partition),
        ("account", opts.account),
        ("qos", opts.qos),
        ("time", opts.time_limit),
    ):
        if value:
            lines.append(f"#SBATCH --{flag}={value}")
    for option in (*batch.extra_sbatch, *opts.extra_sbatch):
        if not _OPTION.match(option):
            raise ValueError(
                f"slurm_extra_sbatch: {option!r} is not an sbatch long option. Fix: write "
                "it as --name or --name=value, without spaces, quotes or shell characters."
            )
        lines.append(f"#SBATCH {option}")
    worker = [batch.python, "-m", "flextrain.train.worker", *batch.worker_args]
    if layout.processes * layout.nodes > 1:
        torchrun = [
            batch.python,
            "-m",
            "torch.distributed.run",
            "--nnodes",
            str(layout.nodes),
            "--nproc-per-node",
            str(layout.processes),
            "--max-restarts",
            "0",
            "--monitor-interval",
            "0.5",
            "--shutdown-timeout",
            str(SHUTDOWN_GRACE),
            "--log-dir",
            str(batch.rank_logs),
            "--redirects",
            "3",
            "--tee",
            "3",
        ]
        if layout.nodes == 1:
            torchrun.append("--standalone")  # a free port on the node, no endpoint
        else:
            # Node 0 of the allocation hosts the rendezvous; each task knows its node.
            torchrun += [
                "--rdzv-backend",
                "c10d",
                "--rdzv-endpoint",
                "@ENDPOINT@",
                "--rdzv-id",
                batch.job_id,
                "--rdzv-conf",
                "@RDZV_CONF@",
            ]
        supervise = [batch.python, "-m", "flextrain.jobs.supervise", *batch.worker_args, "--"]
        inner = (
            'is_host=false; [ "${SLURM_NODEID:-0}" = 0 ] && is_host=true; exec '
            + shlex.join([*supervise, *torchrun, *worker[1:]])
            .replace("@ENDPOINT@", '"$FLEXTRAIN_RDZV_ENDPOINT"')
            .replace("@RDZV_CONF@", f'"join_timeout={batch.timeout_s},is_host=$is_host"')
            + ' "$@"'
        )
        run = f"bash -c {shlex.quote(inner)} flextrain"
    else:
        run = shlex.join(worker)
    body = f"""
set -u
# A requeued run (preemption, time limit, node failure) continues from the latest
# checkpoint; the worker records the restart.
resume=""
if [ "${{SLURM_RESTART_COUNT:-0}}" -gt 0 ]; then resume="--resume-latest"; fi
# Several nodes meet at the first node's address (its NodeAddr: a node's name need
# not resolve) on a port fixed by the Slurm job id.
head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
addr=$(scontrol show node -o "$head" | grep -o 'NodeAddr=[^ ]*' | cut -d= -f2)
export FLEXTRAIN_RDZV_ENDPOINT="${{addr:-$head}}:$(( {RDZV_PORT_BASE} + SLURM_JOB_ID % 10000 ))"
# USR1 (time limit or preemption ahead, to this shell only): SIGTERM to every process
# of the step, as Slurm's own cancel does; each rank saves a checkpoint and stops.
# TERM (scancel, requeue): Slurm signals the step's processes itself; just wait.
signalled=""
trap 'signalled=USR1; scancel --signal=TERM "$SLURM_JOB_ID"' USR1
trap 'signalled=${{signalled:-TERM}}' TERM
srun --kill-on-bad-exit=1 --ntasks-per-node=1 --nodes={layout.nodes} \\
  {run} $resume >> {shlex.quote(str(batch.log_file))} 2>&1 &
step=$!
wait "$step"; code=$?
while kill -0 "$step" 2>/dev/null; do wait "$step"; code=$?; done
if [ "$signalled" = USR1 ]; then
  echo "flextrain: time limit or preemption ahead; checkpoint saved, requeueing"
  scontrol requeue "$SLURM_JOB_ID"
fi
exit "$code"
"""
    return "\n".join(lines) + "\n" + body


def _run(argv: list[str], *, timeout: float = 30.0, env: dict[str, str] | None = None) -> str:
    """A Slurm command's stdout; SlurmError with its stderr when it fails."""
    if shutil.which(argv[0]) is None:
        raise SlurmError(
            f"{argv[0]} was not found. Fix: run flextrain where the Slurm client commands "
            "are installed (a login node), or set FLEXTRAIN_EXECUTOR=local."
        )
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
    if result.returncode != 0:
        message = (result.stderr or result.stdout).strip().replace("\n", "; ")
        raise SlurmError(f"{argv[0]} failed: {message}")
    return result.stdout


class SlurmExecutor(ClusterExecutorBase):
    """Runs each job as a Slurm batch job (see the module's docstring)."""

    name = "slurm"

    # -- before submission -------------------------------------------------------------
    def options(self, job: TrainingJob) -> ClusterOptions:
        """The job's cluster options, unset values filled from the settings."""
        given = job.pinned_config().cluster or ClusterOptions()
        s = self.settings
        return given.model_copy(
            update={
                "partition": given.partition or s.slurm_partition,
                "account": given.account or s.slurm_account,
                "qos": given.qos or s.slurm_qos,
                "time_limit": given.time_limit or s.slurm_time_limit,
            }
        )

    def partitions(self) -> dict[str, str]:
        """Partition -> its nodes' "CPUS MEMORY_MB GRES" as sinfo reports them; the
        default partition's name keeps sinfo's trailing '*' off, under key '*' too."""
        found: dict[str, str] = {}
        for line in _run(["sinfo", "-h", "-o", "%P %c %m %G"]).splitlines():
            parts = line.split()
            if len(parts) < 4:
                continue
            name = parts[0]
            if name.endswith("*"):
                name = name[:-1]
                found["*"] = name
            found.setdefault(name, " ".join(parts[1:]))
        return found

    def node_hardware(self, job: TrainingJob | None = None) -> HardwareConstraints | None:
        """One node of the job's partition as the estimates see it: its CPUs, memory
        and GPUs (GRES gpu:N, each of `cluster_gpu_memory_gb`). None when sinfo cannot
        tell (the partition is checked by `preflight`)."""
        partition = self.options(job).partition if job else self.settings.slurm_partition
        try:
            parts = self.partitions()
        except (SlurmError, OSError, subprocess.TimeoutExpired):
            return None
        name = partition or parts.get("*")
        if not name or name not in parts:
            return None
        cpus, memory_mb, gres = parts[name].split()[:3]
        return node_constraints(
            cpus=int(_number(cpus)),
            memory_gb=_number(memory_mb) / 1024,
            gpus=_gres_gpus(gres),
            gpu_memory_gb=self.settings.cluster_gpu_memory_gb or 0.0,
            bf16=self.settings.cluster_gpu_bf16,
            platform=f"slurm partition {name}",
        )

    def preflight(self, job: TrainingJob) -> list[ValidationIssue]:
        """What Slurm would refuse, or the job could not do there, said before sbatch:
        an unknown partition, and a multi-node job whose nodes cannot reach the store."""
        issues: list[ValidationIssue] = []
        try:
            parts = self.partitions()
        except (SlurmError, OSError, subprocess.TimeoutExpired) as exc:
            return [
                ValidationIssue(
                    "executor",
                    f"Slurm cannot be asked about its partitions: {exc}",
                    "check that slurmctld runs and `sinfo` works here, or set "
                    "FLEXTRAIN_EXECUTOR=local.",
                )
            ]
        partition = self.options(job).partition
        if partition and partition not in parts:
            known = ", ".join(sorted(p for p in parts if p != "*")) or "none"
            issues.append(
                ValidationIssue(
                    "cluster.partition",
                    f"Slurm has no partition '{partition}' (it has: {known}).",
                    "give one of those partitions, or leave it out for the default.",
                )
            )
        if job.layout.nodes > 1 and self.settings.resolved_database_url.startswith("sqlite"):
            issues.append(
                ValidationIssue(
                    "num_nodes",
                    f"A {job.layout.nodes}-node job reports from every node to the job "
                    "store, and this store is a SQLite file "
                    f"({self.settings.resolved_database_url}) that other machines cannot "
                    "share safely.",
                    "set FLEXTRAIN_DATABASE_URL to a PostgreSQL database the nodes reach, "
                    "or run the job on one node (num_nodes 1).",
                )
            )
        return issues

    # -- the Executor seam ------------------------------------------------------------
    def submit(self, submission: Submission) -> Submitted:
        job = self.job_of(submission)
        layout = job.layout
        hardware = self.node_hardware(job)
        threads = layout.threads or (
            max(1, hardware.cpu_cores // layout.processes) if hardware else None
        )
        worker_at = submission.argv.index("flextrain.train.worker")
        batch = BatchJob(
            job_id=job.job_id,
            layout=layout,
            worker_args=submission.argv[worker_at + 1 :],
            python=self.settings.slurm_python or sys.executable,
            job_dir=submission.job_dir,
            log_file=submission.log_file,
            rank_logs=submission.job_dir / "logs" / "ranks",
            options=self.options(job),
            extra_sbatch=tuple(self.settings.slurm_extra_sbatch),
            gpus_per_node=layout.processes if hardware and hardware.gpu_count else 0,
            cpus_per_node=threads * layout.processes if threads else None,
            signal_seconds=self.settings.slurm_signal_seconds,
            timeout_s=layout.timeout_s,
        )
        script = submission.job_dir / "slurm.sbatch"
        script.write_text(batch_script(batch))
        # Not the variables of an allocation flextrain itself may run in: they would
        # make sbatch's job a step of it. SLURM_CONF says where the cluster is.
        env = {
            k: v
            for k, v in submission.env.items()
            if not k.startswith("SLURM_") or k == "SLURM_CONF"
        }
        out = _run(["sbatch", "--parsable", str(script)], env=env)
        slurm_id = out.strip().split(";")[0]
        if not _SLURM_ID.match(slurm_id):
            raise SlurmError(f"sbatch answered {out.strip()!r}, not a job id.")
        return Submitted(pid=None, pid_started_at=None, host=None, cluster_job_id=slurm_id)

    def cluster_state(self, job: TrainingJob) -> ClusterState:
        """The Slurm job's state and reason, from squeue (scontrol for a job that just
        ended, sacct where accounting keeps older ones; a job none of them knows is
        reported as GONE)."""
        slurm_id = job.cluster_job_id or ""
        try:
            out = _run(["squeue", "-h", "-j", slurm_id, "-o", "%T|%r|%N"], timeout=15)
        except SlurmError:
            out = ""  # squeue refuses an id it no longer knows
        line = out.strip().splitlines()[0] if out.strip() else ""
        if not line:
            try:
                shown = _run(["scontrol", "show", "job", "-o", slurm_id], timeout=15)
            except SlurmError:
                return _accounted_state(slurm_id)
            fields = dict(
                item.split("=", 1) for item in shown.split() if "=" in item and item[0].isupper()
            )
            state = fields.get("JobState", "GONE")
            return ClusterState(
                active=state in ACTIVE_STATES, state=state, reason=fields.get("Reason")
            )
        state, reason, nodes = [*line.split("|"), "", ""][:3]
        return ClusterState(
            active=state in ACTIVE_STATES,
            state=state,
            reason=None if reason in ("", "None") else reason,
            nodes=nodes or None,
        )

    def read_log(self, job: TrainingJob, tail: int = 200) -> str:
        """The job's log, then what Slurm itself wrote for it (srun and node errors)."""
        lines = self.own_log(job)
        for path in sorted((self.settings.jobs_dir / job.job_id).glob("slurm-*.out")):
            slurm_id = path.stem.removeprefix("slurm-")
            text = path.read_text(errors="replace").strip()
            lines += [f"[slurm {slurm_id}] {line}" for line in text.splitlines()]
        return "\n".join(lines[-tail:])

    def cancel(self, job: TrainingJob, timeout: float = 30.0) -> None:
        """SIGTERM to the job's steps only (`scancel --signal=TERM`): every task on every
        node saves its checkpoint and stops, and the batch script ends with them. Only
        what is left after `timeout` s is cancelled outright. (A plain scancel would
        also signal srun in the batch script, which then kills the step at once.)"""
        if not job.cluster_job_id:
            return
        slurm_id = job.cluster_job_id
        if self.cluster_state(job).state == "RUNNING":
            with contextlib.suppress(SlurmError):
                _run(["scancel", "--signal=TERM", slurm_id])
            if self.wait_gone(job, timeout):
                return
        _run(["scancel", slurm_id])
        self.wait_gone(job, 60)


def _accounted_state(slurm_id: str) -> ClusterState:
    """A finished job's state from Slurm's accounting (sacct), where it is kept; GONE
    where accounting is off or has no record."""
    try:
        out = _run(["sacct", "-n", "-X", "-P", "-j", slurm_id, "-o", "State"], timeout=15)
    except (SlurmError, OSError, subprocess.TimeoutExpired):
        return ClusterState(active=False, state="GONE")
    words = out.strip().split()
    state = words[0] if words else "GONE"
    return ClusterState(active=state in ACTIVE_STATES, state=state)


def _gres_gpus(gres: str) -> int:
    """GPUs per node in a GRES string such as 'gpu:a100:4(S:0-1)' or '(null)'."""
    total = 0
    for item in gres.split(","):
        match = re.match(r"^gpu(?::[^:(]+)?:(\d+)", item.strip())
        if match:
            total += int(match.group(1))
    return total


def _number(text: str) -> float:
    """sinfo's numbers may end in '+' (nodes differ): the smallest is what is certain."""
    match = re.match(r"^\d+(\.\d+)?", text)
    return float(match.group(0)) if match else 0.0
