"""The kernel's out-of-memory killer, seen from the service.

On CPU a run that outgrows the machine's memory rarely gets a `MemoryError`:
Linux overcommits, and when pages run out the kernel's OOM killer ends the
process with SIGKILL. The worker cannot report that (it is dead), so the
service has to recognise it afterwards, from what the kernel counts:

- each job's worker may run in its own memory cgroup (`job_memory_limit_gb`,
  where this process may create cgroups: root, or a delegated cgroup v2
  subtree). Then the limit is the job's and not the machine's, one job's
  overflow never kills another job or the server, and the cgroup's own
  `oom_kill` count says exactly whether the kernel killed this job;
- otherwise the machine-wide count in /proc/vmstat, read when the worker was
  launched and again when it was found dead, together with how it died
  (SIGKILL, when the process that launched it saw the exit).

Workers also raise their own `oom_score_adj`, so that when the machine runs
out, the kernel picks the training process rather than the API server, the
scheduler or the user's other programs.

The evidence is written to the job's folder (`launch.json`, `exit.json`), so a
service restarted after the kill can still tell what happened.
"""

from __future__ import annotations

import contextlib
import json
import signal
from dataclasses import asdict, dataclass
from pathlib import Path

from flextrain.config.enums import TrainingType
from flextrain.config.schemas import AdvancedTrainingConfig

LAUNCH_FILE = "launch.json"
EXIT_FILE = "exit.json"
_CGROUP_ROOT = Path("/sys/fs/cgroup")
_PREFIX = "flextrain-"
# How much more willing the kernel is to kill a worker than an ordinary process
# (-1000..1000; an unprivileged process may raise its own score, never lower it).
WORKER_OOM_SCORE_ADJ = 800


def vmstat_oom_kills() -> int | None:
    """How many processes the kernel's OOM killer has ended since boot (Linux 4.13+)."""
    try:
        for line in Path("/proc/vmstat").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
    except (OSError, ValueError):
        return None
    return None


def prefer_as_oom_victim(score: int = WORKER_OOM_SCORE_ADJ) -> None:
    """Make this process the kernel's first choice when memory runs out (best effort)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/oom_score_adj").write_text(str(score))


@dataclass(frozen=True)
class MemoryCgroup:
    """A memory cgroup of one job: v1 (`memory.limit_in_bytes`, `memory.oom_control`)
    or v2 (`memory.max`, `memory.events`), whichever this machine mounts."""

    path: Path
    version: int

    @classmethod
    def create(cls, job_id: str, limit_bytes: int) -> MemoryCgroup:
        """The job's cgroup with `limit_bytes`, beside this process's own (so it lands
        inside whatever container or slice the service runs in). OSError when this
        process may not create cgroups; the caller runs the job unconfined and says so."""
        parent = _own_memory_cgroup()
        if parent is None:
            raise OSError("no memory cgroup controller is mounted")
        folder, version = parent
        path = folder / f"{_PREFIX}{job_id}"
        if version == 2:
            # The memory controller must be enabled for children; fails (EBUSY) when
            # the parent holds processes itself, v2's "no internal processes" rule.
            subtree = folder / "cgroup.subtree_control"
            if "memory" not in subtree.read_text().split():
                subtree.write_text("+memory")
        path.mkdir(exist_ok=True)
        group = cls(path, version)
        limit_file = "memory.max" if version == 2 else "memory.limit_in_bytes"
        (path / limit_file).write_text(str(limit_bytes))
        if version == 1:
            # No swap for the job either: otherwise the limit only moves it to swap.
            with contextlib.suppress(OSError):
                (path / "memory.memsw.limit_in_bytes").write_text(str(limit_bytes))
        return group

    def add(self, pid: int) -> None:
        """Move `pid` in; the children it starts afterwards are born inside."""
        (self.path / "cgroup.procs").write_text(str(pid))

    def oom_kills(self) -> int:
        """Processes of this cgroup the OOM killer has ended."""
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        try:
            text = (self.path / name).read_text()
        except OSError:
            return 0
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def remove(self) -> bool:
        """Remove the cgroup once no process is left in it (rmdir of an empty group)."""
        try:
            self.path.rmdir()
            return True
        except OSError:
            return False


def _own_memory_cgroup() -> tuple[Path, int] | None:
    """The folder of this process's memory cgroup and the cgroup version."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, rel = line.split(":", 2)
        if "memory" in controllers.split(","):
            folder = _CGROUP_ROOT / "memory" / rel.lstrip("/")
            if folder.is_dir():
                return folder, 1
    for line in lines:
        hierarchy, controllers, rel = line.split(":", 2)
        if hierarchy == "0" and controllers == "":
            for mount in (_CGROUP_ROOT, _CGROUP_ROOT / "unified"):
                controllers_file = mount / "cgroup.controllers"
                if controllers_file.exists() and "memory" in controllers_file.read_text().split():
                    return mount / rel.lstrip("/"), 2
    return None


@dataclass(frozen=True)
class LaunchRecord:
    """What the service knew when it launched a worker: the kernel's OOM count then and
    the job's cgroup (None: unconfined, with `cgroup_error` saying why)."""

    vmstat_oom_kills: int | None
    cgroup: str | None = None
    cgroup_version: int | None = None
    limit_bytes: int | None = None
    cgroup_error: str | None = None

    def save(self, job_dir: Path) -> None:
        (job_dir / LAUNCH_FILE).write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, job_dir: Path) -> LaunchRecord | None:
        try:
            return cls(**json.loads((job_dir / LAUNCH_FILE).read_text()))
        except (OSError, ValueError, TypeError):
            return None

    @property
    def memory_cgroup(self) -> MemoryCgroup | None:
        if self.cgroup is None or self.cgroup_version is None:
            return None
        return MemoryCgroup(Path(self.cgroup), self.cgroup_version)


def confine(job_id: str, job_dir: Path, limit_gb: float | None) -> LaunchRecord:
    """Before launching: the kernel's count, and the job's cgroup when a limit is set."""
    count = vmstat_oom_kills()
    if not limit_gb:
        return LaunchRecord(count)
    limit = int(limit_gb * 1024**3)
    try:
        group = MemoryCgroup.create(job_id, limit)
    except OSError as exc:
        why = f"cannot create a memory cgroup for the job ({exc}); it runs without its own limit"
        return LaunchRecord(count, limit_bytes=limit, cgroup_error=why)
    return LaunchRecord(count, str(group.path), group.version, limit)


def record_exit(job_dir: Path, returncode: int) -> None:
    """Called by the launching process when its worker exits: how it ended."""
    with contextlib.suppress(OSError):
        (job_dir / EXIT_FILE).write_text(json.dumps({"returncode": returncode}))


def recorded_exit(job_dir: Path) -> int | None:
    try:
        return int(json.loads((job_dir / EXIT_FILE).read_text())["returncode"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def clear_exit(job_dir: Path) -> None:
    (job_dir / EXIT_FILE).unlink(missing_ok=True)


def killed_by_oom(job_dir: Path) -> str | None:
    """Why we think the kernel's OOM killer ended this job's worker, or None.

    With the job's own cgroup the answer is exact. Without it, the machine-wide count
    must have grown since the launch and the worker must not be known to have ended
    any other way than SIGKILL; another process killed at the same time would be
    mistaken for this one, which is why the message says "most likely".
    """
    record = LaunchRecord.load(job_dir)
    if record is None:
        return None
    returncode = recorded_exit(job_dir)
    if returncode is not None and returncode != -signal.SIGKILL:
        return None
    group = record.memory_cgroup
    if group is not None:
        if group.oom_kills() > 0:
            limit = (record.limit_bytes or 0) / 1024**3
            return (
                "the kernel's out-of-memory killer ended the worker at the job's "
                f"{limit:.2f} GB memory limit (job_memory_limit_gb)"
            )
        return None
    now = vmstat_oom_kills()
    if record.vmstat_oom_kills is not None and now is not None and now > record.vmstat_oom_kills:
        return (
            "the kernel's out-of-memory killer most likely ended the worker "
            "(the machine ran out of memory)"
        )
    return None


def sweep(keep: set[str]) -> list[Path]:
    """Remove the empty cgroups of jobs not in `keep` (a job that ended normally leaves
    its group behind: a process cannot remove the cgroup it is in). A group still
    holding a process is never removed: the kernel refuses (EBUSY)."""
    own = _own_memory_cgroup()
    if own is None:
        return []
    removed = []
    for path in own[0].glob(f"{_PREFIX}*"):
        if path.name.removeprefix(_PREFIX) not in keep and MemoryCgroup(path, own[1]).remove():
            removed.append(path)
    return removed


def release(job_dir: Path) -> None:
    """Remove the job's cgroup once its processes are gone (safe to call repeatedly)."""
    record = LaunchRecord.load(job_dir)
    group = record.memory_cgroup if record else None
    if group is not None:
        group.remove()


def out_of_memory_advice(
    config: AdvancedTrainingConfig, micro: int, accumulation: int, why: str
) -> str:
    """The message a user can act on, instead of an allocator's stack trace or a bare
    "killed": the settings that lower memory, the effective batch kept."""
    steps = [f"max_length (now {config.max_length})"]
    if micro > 1:
        steps.insert(
            0,
            f"batch_size {micro // 2} with gradient_accumulation_steps {accumulation * 2} "
            "(the same examples per optimizer step)",
        )
    if not config.gradient_checkpointing:
        steps.append("gradient_checkpointing: true")
    full = (
        TrainingType.FINE_TUNING,
        TrainingType.FULL_TRAINING,
        TrainingType.CONTINUED_PRETRAINING,
    )
    if config.training_type in full:
        steps.append("training_type lora_adaptation")
    return (
        f"Out of memory at micro-batch {micro} ({why}). Fix: lower "
        + "; or ".join(steps)
        + ". `flextrain check` estimates each option."
    )
