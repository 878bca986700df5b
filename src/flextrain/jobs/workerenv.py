"""How a worker process is started on this machine: its command and environment.

Apart from jobs/launch.py (which needs the job's layout and settings) so that the
`flextrain` entry point can start a warm worker before it imports anything heavier
(flextrain/entry.py): this module imports only the standard library.
"""

from __future__ import annotations

import os
import sys

WORKER_MODULE = "flextrain.train.worker"


# tcmalloc (Debian's libtcmalloc-minimal4; `make install` adds it) keeps freed blocks for
# the next step, where glibc hands blocks over 32 MB back to the kernel and page-faults
# them in again (a MiniLM's embedding gradient, every step). Measured on this project's
# 2-core Xeon: training steps 7-12% faster, peak memory no higher (docs/benchmarks.md).
TCMALLOC_NAMES = ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4")
TCMALLOC_DIRS = (
    "/usr/lib/x86_64-linux-gnu",
    "/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/lib/aarch64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
)
# FLEXTRAIN_MALLOC=system keeps glibc's allocator.
MALLOC_VARIABLE = "FLEXTRAIN_MALLOC"


def tcmalloc_path(dirs: tuple[str, ...] = TCMALLOC_DIRS) -> str | None:
    """Where this machine's tcmalloc is, if it has one."""
    for folder in dirs:
        for name in TCMALLOC_NAMES:
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                return path
    return None


def preload_allocator(env: dict[str, str], library: str | None) -> dict[str, str]:
    """`env` with `library` preloaded (LD_PRELOAD is read when a process starts, so it is
    set for the worker, not in this process), unless the user chose the system allocator
    or already preloads an allocator of their own."""
    preload = env.get("LD_PRELOAD", "")
    if library is None or env.get(MALLOC_VARIABLE, "").lower() == "system" or "malloc" in preload:
        return env
    env["LD_PRELOAD"] = f"{library}:{preload}" if preload else library
    # tcmalloc reports each allocation over 1 GiB on stderr: a large model's would
    # flood the job log.
    env.setdefault("TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD", str(1 << 50))
    return env


def worker_environment(
    base_env: dict[str, str] | None = None, *, this_machine: bool = True
) -> dict[str, str]:
    """What every worker process runs with, whatever its job: `base_env` (default this
    process's environment) plus the settings below, some of which only act when the
    interpreter starts. A worker on `this_machine` also gets its faster allocator; a
    cluster's machines may lack the library this one has."""
    env = dict(os.environ if base_env is None else base_env)
    if this_machine:
        preload_allocator(env, tcmalloc_path())
    env.update(
        {
            "PYTHONUNBUFFERED": "1",
            # The tokenizer's thread pool would compete with torch for the same cores.
            "TOKENIZERS_PARALLELISM": "false",
            "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
            # Progress bars of file writes only clutter the job log.
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        }
    )
    return env


def warm_worker_command(python: str | None = None) -> list[str]:
    """A worker started before it has a job (`flextrain.jobs.process.WarmWorker`)."""
    return [python or sys.executable, "-m", WORKER_MODULE, "--warm"]


def fork_server_command(python: str | None = None) -> list[str]:
    """A worker that forks one process per job (`flextrain.jobs.process.ForkServer`)."""
    return [python or sys.executable, "-m", WORKER_MODULE, "--fork-server"]
