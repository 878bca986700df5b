"""Resource use while a job runs: what the worker's monitor samples.

"Memory available" is the container's limit when there is one (cgroup v2 or
v1): a job in a 16 GiB container on a 512 GiB host is killed at 16 GiB, and a
warning computed against the host's RAM would come too late.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

_GIB = 1024**3
_CGROUP_FILES = (
    (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory.current")),
    (
        Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
        Path("/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ),
)


@dataclass(frozen=True)
class GPUUsage:
    index: int
    utilisation_percent: float
    memory_used_gb: float
    memory_total_gb: float

    @property
    def memory_fraction(self) -> float:
        return self.memory_used_gb / self.memory_total_gb if self.memory_total_gb else 0.0


@dataclass(frozen=True)
class UsageSample:
    cpu_percent: float  # the whole machine, 0-100
    process_cpu_percent: float  # the worker; 100 per fully used core
    memory_used_gb: float
    memory_total_gb: float  # the container's limit when lower than the host's RAM
    process_rss_gb: float
    gpus: list[GPUUsage] = field(default_factory=list)

    @property
    def memory_fraction(self) -> float:
        return self.memory_used_gb / self.memory_total_gb if self.memory_total_gb else 0.0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["memory_percent"] = round(100 * self.memory_fraction, 1)
        return out


def _cgroup_memory() -> tuple[int, int] | None:
    """(used, limit) bytes of this process's memory cgroup, if it has a real limit."""
    for limit_file, usage_file in _CGROUP_FILES:
        with contextlib.suppress(OSError, ValueError):
            raw = limit_file.read_text().strip()
            if raw == "max":
                return None
            limit = int(raw)
            if limit < psutil.virtual_memory().total:
                return int(usage_file.read_text().strip()), limit
    return None


class UsageSampler:
    """Takes samples of one process; keeps NVML open between samples (init is slow)."""

    def __init__(self, pid: int | None = None) -> None:
        self.process = psutil.Process(pid)
        # cpu_percent measures since the previous call: prime both counters.
        psutil.cpu_percent(interval=None)
        self.process.cpu_percent(interval=None)
        self._nvml: Any = None
        with contextlib.suppress(Exception):  # no package, driver or GPU: CPU only
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml

    def sample(self) -> UsageSample:
        memory = psutil.virtual_memory()
        used, total = memory.total - memory.available, memory.total
        cgroup = _cgroup_memory()
        if cgroup is not None:
            used, total = cgroup
        try:
            rss = self.process.memory_info().rss
            process_cpu = self.process.cpu_percent(interval=None)
        except psutil.Error:
            rss, process_cpu = 0, 0.0
        return UsageSample(
            cpu_percent=psutil.cpu_percent(interval=None),
            process_cpu_percent=process_cpu,
            memory_used_gb=used / _GIB,
            memory_total_gb=total / _GIB,
            process_rss_gb=rss / _GIB,
            gpus=self._gpus(),
        )

    def _gpus(self) -> list[GPUUsage]:
        if self._nvml is None:
            return []
        nvml = self._nvml
        out = []
        with contextlib.suppress(Exception):
            for index in range(nvml.nvmlDeviceGetCount()):
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                util = nvml.nvmlDeviceGetUtilizationRates(handle)
                out.append(
                    GPUUsage(
                        index=index,
                        utilisation_percent=float(util.gpu),
                        memory_used_gb=memory.used / _GIB,
                        memory_total_gb=memory.total / _GIB,
                    )
                )
        return out

    def close(self) -> None:
        if self._nvml is not None:
            with contextlib.suppress(Exception):
                self._nvml.nvmlShutdown()
            self._nvml = None


def peak_rss_bytes() -> int:
    """This process's peak resident memory (VmHWM), counted from its own start.

    Not `getrusage().ru_maxrss`: Linux carries the pre-exec high-water mark over
    an exec, so a worker forked from a 700 MB parent (a test runner, the API
    server) reports at least 700 MB whatever it used itself. VmHWM belongs to
    the new address space only, and `clear_refs` can reset it.
    """
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    import resource  # not Linux: the best there is

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
