"""The `flextrain` console script: start the job's worker first, then the command.

`flextrain train` spends about 4 s of its first job's start in the worker importing
torch and transformers, while it validates the job itself (a warm worker,
jobs/process.py). Started here, before the command line code is imported, the worker
begins those imports about 0.5 s sooner. Only for commands about to start one local job
on this CPU: with GPUs the job's devices are only known at launch, and a command that
only creates a job, or asks for help, has no use for a worker.
"""

from __future__ import annotations

import os
import sys

# Commands that create and start one job, and the flags after which they do not.
STARTS_A_JOB = frozenset({"train", "demo"})
NO_JOB_FLAGS = frozenset({"--help", "-h", "--no-start"})


def wants_warm_worker(argv: list[str], env: dict[str, str] | os._Environ[str]) -> bool:
    """Whether the command line `argv` (without the program name) will start a job here."""
    if not argv or argv[0] not in STARTS_A_JOB or NO_JOB_FLAGS & set(argv[1:]):
        return False
    if env.get("FLEXTRAIN_EXECUTOR", "local").lower() != "local":
        return False  # a cluster runs it
    return not os.path.exists("/dev/nvidiactl")  # no NVIDIA GPU here


def main() -> None:
    """Entry point of the `flextrain` command."""
    if wants_warm_worker(sys.argv[1:], os.environ):
        from flextrain.jobs.process import prestart_warm_worker
        from flextrain.jobs.workerenv import warm_worker_command, worker_environment

        prestart_warm_worker(warm_worker_command(), worker_environment())
    from flextrain.main import app

    app(prog_name="flextrain")
