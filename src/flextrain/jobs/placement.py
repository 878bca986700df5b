"""Where a job fits on this machine: the scheduler's pure decisions, tested on data.

Nothing here reads the machine or the store: the scheduler passes the hardware
(HardwareConstraints, real or made up in a test), what each running job holds,
and one queued job's demand; `place` answers with an Allocation or, in words,
why the job must wait. `never_fits` names requests this machine cannot meet
however long the job waits, so they fail instead of blocking the queue.

The accounting is deliberately simple and predictable:

- CPU threads are slots, one per core. A job reserves threads per process x
  processes. A CPU job's threads default to all cores divided by its processes,
  so by default CPU jobs run one at a time (two trainings sharing 2 cores ran
  ~9x slower than one alone); jobs that set num_threads=1 run side by side.
- A GPU job (any job on a machine with GPUs) needs one GPU per process, each
  not held by a running job and with free memory at least the estimator's
  per-GPU peak, and reserves max(1, cores // GPUs) threads per process.
- A multi-node job is placed like its share on this node (node 0); the other
  nodes join by hand.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from flextrain.config.validation import ValidationIssue
from flextrain.hardware.detect import HardwareConstraints
from flextrain.jobs.resources import Allocation, Layout


@dataclass(frozen=True)
class Demand:
    """What one job needs on this node."""

    processes: int
    threads: int  # per process
    slots: int  # CPU threads reserved in all (threads x processes, at most the cores by default)
    gpus: int  # GPUs on this node; 0 for a CPU run
    gpu_memory_gb: float | None = None  # estimated peak per GPU; None when unknown
    threads_given: bool = False  # num_threads was set by the user


@dataclass(frozen=True)
class Reservation:
    """What a running job holds."""

    job_id: str
    slots: int
    gpus: tuple[int, ...] = ()


@dataclass(frozen=True)
class GPUSlot:
    index: int
    free_gb: float
    total_gb: float


def gpu_slots(hardware: HardwareConstraints) -> list[GPUSlot]:
    """The machine's GPUs by index; made up evenly from the totals when only counts
    are known (a HardwareConstraints built by hand)."""
    if hardware.gpus:
        return sorted(
            (GPUSlot(g.index, g.free_memory_gb, g.total_memory_gb) for g in hardware.gpus),
            key=lambda g: g.index,
        )
    count = hardware.gpu_count
    if count <= 0:
        return []
    each = hardware.available_gpu_memory_gb / count
    return [GPUSlot(i, each, each) for i in range(count)]


def demand_of(
    layout: Layout,
    hardware: HardwareConstraints,
    gpu_memory_gb: float | None = None,
) -> Demand:
    """The demand of a job laid out as `layout` on `hardware`."""
    processes = layout.processes
    given = layout.threads
    cores = max(1, hardware.cpu_cores)
    gpu_count = len(gpu_slots(hardware))
    if gpu_count:
        threads = given or max(1, cores // gpu_count)
        return Demand(
            processes=processes,
            threads=threads,
            slots=threads * processes,
            gpus=processes,
            gpu_memory_gb=gpu_memory_gb,
            threads_given=given is not None,
        )
    threads = given or max(1, cores // processes)
    slots = threads * processes if given else min(threads * processes, cores)
    return Demand(processes, threads, slots, 0, None, given is not None)


def reservation_of(
    job_id: str,
    layout: Layout,
    allocation: Mapping[str, Any] | None,
    hardware: HardwareConstraints,
) -> Reservation:
    """What a running job holds: its recorded allocation, else what it would have been
    given (a job launched without one sees every GPU and uses the first ones)."""
    processes = layout.processes
    fallback = demand_of(layout, hardware)
    recorded = Allocation.from_dict(dict(allocation)) if allocation else None
    if recorded is None:
        return Reservation(job_id, fallback.slots, tuple(range(fallback.gpus)))
    slots = recorded.threads * processes if recorded.threads else fallback.slots
    return Reservation(job_id, slots, recorded.gpus)


def never_fits(demand: Demand, hardware: HardwareConstraints) -> list[ValidationIssue]:
    """Requests this machine cannot meet even when idle, each with its field and fix."""
    issues: list[ValidationIssue] = []
    cores = max(1, hardware.cpu_cores)
    gpus = gpu_slots(hardware)
    if gpus and demand.gpus > len(gpus):
        issues.append(
            ValidationIssue(
                "num_processes",
                f"{demand.processes} processes need {demand.gpus} GPUs (one each); this "
                f"machine has {len(gpus)}, so the job could never start.",
                f"set num_processes to at most {len(gpus)}, or run it where there are "
                f"{demand.gpus} GPUs.",
            )
        )
    if demand.threads_given and demand.slots > cores:
        if demand.processes > cores:
            issues.append(
                ValidationIssue(
                    "num_processes",
                    f"{demand.processes} processes of at least one thread each need more "
                    f"than the {cores} CPU cores of this machine, so the job could never start.",
                    f"set num_processes to at most {cores}.",
                )
            )
        else:
            issues.append(
                ValidationIssue(
                    "num_threads",
                    f"{demand.threads} threads x {demand.processes} process"
                    f"{'es' if demand.processes > 1 else ''} = {demand.slots} CPU threads; "
                    f"this machine has {cores} cores, so the job could never start.",
                    f"set num_threads to at most {cores // demand.processes}, or leave it "
                    "empty to use every core.",
                )
            )
    if gpus and demand.gpus and demand.gpu_memory_gb is not None:
        largest = max(g.total_gb for g in gpus)
        if demand.gpu_memory_gb > largest:
            issues.append(
                ValidationIssue(
                    "batch_size",
                    f"the run needs about {demand.gpu_memory_gb:.1f} GB per GPU; the largest "
                    f"GPU here has {largest:.1f} GB in all, so the job could never start.",
                    "run `flextrain check` for a setting that fits (smaller batch_size or "
                    "max_length, LoRA, gradient_checkpointing).",
                )
            )
    return issues


def place(
    demand: Demand,
    hardware: HardwareConstraints,
    running: Sequence[Reservation],
    max_concurrent_jobs: int | None = None,
) -> Allocation | str:
    """An allocation for `demand` next to the `running` jobs, or why it has to wait."""
    if max_concurrent_jobs is not None and len(running) >= max_concurrent_jobs:
        names = ", ".join(r.job_id for r in running)
        noun = "jobs" if len(running) > 1 else "job"
        return f"max_concurrent_jobs {max_concurrent_jobs} reached: {noun} {names} running"
    cores = max(1, hardware.cpu_cores)
    free_threads = max(0, cores - sum(r.slots for r in running))
    if demand.slots > free_threads:
        users = ", ".join(f"job {r.job_id} uses {r.slots}" for r in running if r.slots)
        noun = "thread" if demand.slots == 1 else "threads"
        return f"needs {demand.slots} CPU {noun}, {free_threads} free ({users or 'none running'})"
    if demand.gpus == 0:
        return Allocation(threads=demand.threads)
    held = {g: r.job_id for r in running for g in r.gpus}
    need = demand.gpu_memory_gb or 0.0
    unheld = [g for g in gpu_slots(hardware) if g.index not in held]
    fitting = [g for g in unheld if g.free_gb >= need]
    if len(fitting) >= demand.gpus:
        return Allocation(
            gpus=tuple(g.index for g in fitting[: demand.gpus]), threads=demand.threads
        )
    wanted = f"{demand.gpus} GPU{'s' if demand.gpus > 1 else ''}"
    if demand.gpu_memory_gb is not None:
        wanted += f" with {need:.1f} GB free"
    free = ", ".join(f"GPU {g.index} {g.free_gb:.1f} GB" for g in unheld) or "none"
    reason = f"needs {wanted}; free: {free}"
    if held:
        reason += "; held: " + ", ".join(f"GPU {g} by job {j}" for g, j in sorted(held.items()))
    return reason
