"""Which CPUs training and the API server run on, as this machine or container allows.

Pure reads of the kernel's cpuset (no flextrain imports): the scheduler pins each job's
threads to `training_cpus` and `flextrain serve` keeps the server on `server_cpus`, so a
busy training run does not starve the API of the cores reserved for it.
"""

from __future__ import annotations

import os
from pathlib import Path


def training_cpus(reserved: int) -> list[int] | None:
    """The CPUs training runs on when `reserved` are kept for the server: all usable
    CPUs but the first `reserved` (None: no reservation, or too few CPUs)."""
    cpus = _usable_cpus()
    return cpus[reserved:] if reserved and len(cpus) > reserved else None


def server_cpus(reserved: int) -> list[int] | None:
    """The CPUs kept for the API server (the complement of `training_cpus`)."""
    cpus = _usable_cpus()
    return cpus[:reserved] if reserved and len(cpus) > reserved else None


def _usable_cpus() -> list[int]:
    """The CPUs this machine (or container) lets flextrain use: its cpuset cgroup's, not
    this process's own affinity, which the server and the workers narrow when they pin
    themselves (a worker ticking the scheduler must still see every CPU)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        _, controllers, rel = line.split(":", 2)
        if "cpuset" in controllers.split(",") or controllers == "":
            for name in ("cpuset.effective_cpus", "cpuset.cpus.effective"):
                folder = Path("/sys/fs/cgroup", "cpuset" if controllers else "", rel.lstrip("/"))
                cpus = cpu_list(folder / name)
                if cpus:
                    return cpus
    return list(range(os.cpu_count() or 1))


def cpu_list(path: Path) -> list[int]:
    """A kernel CPU list ("0-3,6") as numbers; [] when unreadable."""
    try:
        text = path.read_text().strip()
    except OSError:
        return []
    cpus: list[int] = []
    for part in filter(None, text.split(",")):
        first, _, last = part.partition("-")
        cpus.extend(range(int(first), int(last or first) + 1))
    return cpus
