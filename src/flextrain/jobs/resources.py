"""What the scheduler gives a job to run on: GPUs and CPU threads.

Kept apart from the scheduler so that the launch builder (a pure function) and
the service can name an allocation without importing the scheduling logic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Allocation:
    """Resources reserved for one job on this machine.

    `gpus`: indices the job may see (CUDA_VISIBLE_DEVICES), one per process on this
    node; empty on a CPU run. `threads`: CPU threads per process, so that jobs and
    processes running side by side never ask for more threads than there are cores
    (two 2-thread trainings on 2 cores ran ~9x slower than one alone).
    """

    gpus: tuple[int, ...] = field(default_factory=tuple)
    threads: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"gpus": list(self.gpus), "threads": self.threads}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Allocation:
        if not data:
            return cls()
        threads = data.get("threads")
        return cls(
            gpus=tuple(int(g) for g in data.get("gpus") or []),
            threads=int(threads) if threads is not None else None,
        )
