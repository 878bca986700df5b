"""What the scheduler gives a job to run on: GPUs and CPU threads.

Kept apart from the scheduler so that the launch builder (a pure function) and
the service can name an allocation without importing the scheduling logic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flextrain.config.schemas import AdvancedTrainingConfig, BasicTrainingConfig


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


@dataclass(frozen=True)
class Layout:
    """How a job's processes are laid out, read from its typed config: what the
    launch command, the scheduler's placement and the join command need of it.

    `processes` per node and `nodes` (torchrun when their product is above 1),
    `threads` per process as the user fixed them (None: the scheduler chooses), and
    `timeout_s`, how long the ranks wait for each other.
    """

    processes: int = 1
    nodes: int = 1
    threads: int | None = None
    timeout_s: int = 600

    @classmethod
    def of(cls, config: BasicTrainingConfig) -> Layout:
        advanced = AdvancedTrainingConfig.from_basic(config)
        return cls(
            processes=max(1, advanced.num_processes),
            nodes=max(1, advanced.num_nodes),
            threads=advanced.num_threads or None,
            timeout_s=advanced.distributed_timeout,
        )

    @property
    def distributed(self) -> bool:
        return self.processes * self.nodes > 1
