"""The command that starts a job: one worker process, or torchrun for several.

`build_launch_command` is a pure function of the job, the settings and the
scheduler's allocation, so every strategy's argv and environment is tested
without launching anything, and the command a second machine runs to join a
multi-node job is the same function with `join=True`.

Several processes always go through PyTorch's own launcher (torch.distributed.run,
i.e. torchrun: c10d rendezvous, elastic agent, per-rank logs and error files);
flextrain adds no process protocol of its own.
"""

from __future__ import annotations

import sys
from pathlib import Path

from flextrain.jobs.resources import Allocation, Layout
from flextrain.jobs.workerenv import WORKER_MODULE, worker_environment
from flextrain.settings import Settings

# Seconds torchrun gives the ranks to finish a step and save a checkpoint after
# SIGTERM (a cancel) before it kills them; the service's cancel grace is the same.
SHUTDOWN_GRACE = 30

# How often the elastic agent checks its ranks: a rank that dies is noticed, and the
# others stopped, within this many seconds.
MONITOR_INTERVAL = 0.5


def worker_arguments(job_id: str, settings: Settings) -> list[str]:
    """What the worker is told on its command line: the job, and the store and home it
    belongs to (a worker reads no environment for them, so it always reports to the
    store that created the job)."""
    return [
        "--job-id",
        job_id,
        "--database-url",
        settings.resolved_database_url,
        "--home",
        str(settings.home),
    ]


def cluster_command(
    job_id: str, settings: Settings, python: str | None = None
) -> tuple[list[str], dict[str, str]]:
    """The one-process worker command a cluster executor wraps in its own launcher
    (srun and torchrun, or a Ray job); it reads the worker's arguments from it."""
    python = python or sys.executable
    command = [python, "-m", WORKER_MODULE, *worker_arguments(job_id, settings)]
    return command, worker_environment(this_machine=False)


def build_launch_command(
    job_id: str,
    layout: Layout,
    settings: Settings,
    allocation: Allocation | None = None,
    *,
    rdzv_endpoint: str | None = None,
    join: bool = False,
    python: str | None = None,
    base_env: dict[str, str] | None = None,
) -> tuple[list[str], dict[str, str]]:
    """Argument vector and environment that run job `job_id`, laid out as `layout`, on
    this machine.

    One process: `python -m flextrain.train.worker ...`. Several (num_processes x
    num_nodes > 1): `python -m torch.distributed.run ... -m flextrain.train.worker ...`
    with `--standalone` on one machine, or a c10d rendezvous at `rdzv_endpoint` that
    the first node hosts and the others (`join=True`) connect to. Every rank's output
    goes to files under the job's logs folder and, prefixed with its rank, to the
    job's log. `allocation` fixes the GPUs this node's processes see and their CPU
    threads.
    """
    allocation = allocation or Allocation()
    python = python or sys.executable
    processes, nodes = layout.processes, layout.nodes
    worker = ["-m", WORKER_MODULE, *worker_arguments(job_id, settings)]
    env = worker_environment(base_env)
    if allocation.gpus:
        # NVML (which the scheduler reads) numbers GPUs in PCI bus order; CUDA's default
        # is fastest first. Same order, so the indices name the GPUs that were allocated.
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in allocation.gpus)
    threads = allocation.threads or layout.threads
    if threads:
        # Read by OpenMP/MKL at import; the worker also calls torch.set_num_threads.
        env["OMP_NUM_THREADS"] = str(threads)
    if processes * nodes == 1:
        return [python, *worker], env

    timeout = layout.timeout_s
    # NCCL: a failed collective aborts the process instead of hanging until the timeout.
    env["TORCH_NCCL_ASYNC_ERROR_HANDLING"] = "1"
    logs = settings.jobs_dir / job_id / "logs" / "ranks"
    argv = [
        python,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        str(nodes),
        "--nproc-per-node",
        str(processes),
        "--max-restarts",
        "0",
        "--monitor-interval",
        str(MONITOR_INTERVAL),
        "--shutdown-timeout",
        str(SHUTDOWN_GRACE),
        "--log-dir",
        str(logs),
        "--redirects",
        "3",
        "--tee",
        "3",
    ]
    if nodes == 1:
        argv += ["--standalone"]
    else:
        if not rdzv_endpoint:
            raise ValueError(
                "A multi-node job needs rdzv_endpoint (HOST:PORT where the nodes meet)."
            )
        conf = f"join_timeout={timeout},is_host={'false' if join else 'true'}"
        argv += [
            "--rdzv-backend",
            "c10d",
            "--rdzv-endpoint",
            rdzv_endpoint,
            "--rdzv-id",
            job_id,
            "--rdzv-conf",
            conf,
        ]
    return [*argv, *worker], env


def supervised(
    argv: list[str], *, job_id: str, settings: Settings, python: str | None = None
) -> list[str]:
    """`argv` run under flextrain's supervisor, which records how torchrun ended.

    torchrun knows which rank failed and why but exits with a generic code; the
    supervisor turns its report into the job's status (FAILED with that rank's
    error, INTERRUPTED after a shutdown) and starts the next queued job.
    """
    return [
        python or sys.executable,
        "-m",
        "flextrain.jobs.supervise",
        *worker_arguments(job_id, settings),  # the supervisor takes the worker's own
        "--",
        *argv,
    ]


def rank_logs_dir(settings: Settings, job_id: str) -> Path:
    """Where torchrun writes each rank's stdout, stderr and error file."""
    return settings.jobs_dir / job_id / "logs" / "ranks"
