"""What this machine offers for training, read without initialising CUDA.

GPUs are read through NVML (nvidia-ml-py) rather than torch.cuda so that the
parent process (CLI, API server) never creates a CUDA context: that context
costs hundreds of MB per process and would break forked workers.
"""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path
from typing import Any

import psutil
from pydantic import BaseModel, Field, model_validator

from flextrain.config.positional import positional_fields

_GIB = 1024**3


class GPUInfo(BaseModel):
    index: int
    name: str
    total_memory_gb: float
    free_memory_gb: float
    compute_capability: tuple[int, int] | None = None

    @property
    def supports_bf16(self) -> bool:
        # bf16 tensor-core math arrived with Ampere (compute capability 8.0).
        return self.compute_capability is not None and self.compute_capability >= (8, 0)


# The original module's HardwareConstraints was a dataclass: its fields in order.
_ORIGINAL_ORDER = (
    "available_memory_gb",
    "available_gpu_memory_gb",
    "gpu_count",
    "cpu_cores",
    "supports_mixed_precision",
    "supports_gradient_checkpointing",
    "max_batch_size",
    "recommended_precision",
)


class HardwareConstraints(BaseModel):
    """The seed's hardware fields plus disk, GPU names and bf16 support.

    Constructible from the original module's four required fields alone (memory, GPU
    memory, GPU count, CPU cores), as programs written for it do: the rest is filled
    from those (total memory as the available, mixed precision and fp16 with a GPU,
    no bf16, disk unknown: 0). Its two other fields are kept as given."""

    available_memory_gb: float = Field(description="System RAM available now.")
    total_memory_gb: float = Field(0.0, description="System RAM; default: the available.")
    available_gpu_memory_gb: float = Field(description="Free GPU memory, summed over GPUs.")
    gpu_count: int
    cpu_cores: int
    supports_mixed_precision: bool = Field(False, description="Default: a GPU is present.")
    recommended_precision: str = Field("fp32", description="bf16, fp16 or fp32.")
    supports_bf16: bool = False
    disk_free_gb: float = Field(0.0, description="Free disk where output goes (0: unknown).")
    gpus: list[GPUInfo] = Field(default_factory=list)
    platform: str = ""
    # The original module's, for programs that pass or read them.
    supports_gradient_checkpointing: bool = True
    max_batch_size: int | None = None

    def __init__(self, *args: Any, **data: Any) -> None:
        """Keywords, or the original module's dataclass order given positionally."""
        super().__init__(**positional_fields(type(self).__name__, _ORIGINAL_ORDER, args, data))

    @model_validator(mode="before")
    @classmethod
    def _fill_from_the_four(cls, data: Any) -> Any:
        """The fields the original's four-field construction leaves out, from those."""
        if not isinstance(data, dict):
            return data
        filled = dict(data)
        if "total_memory_gb" not in filled and "available_memory_gb" in filled:
            filled["total_memory_gb"] = filled["available_memory_gb"]
        gpu = bool(filled.get("gpu_count"))
        filled.setdefault("supports_mixed_precision", gpu)
        filled.setdefault("recommended_precision", "fp16" if gpu else "fp32")
        return filled

    @property
    def gpu_names(self) -> list[str]:
        return [g.name for g in self.gpus]

    def restricted_to(self, indices: tuple[int, ...] | list[int]) -> HardwareConstraints:
        """This machine as a job sees it when it may use only the GPUs `indices` (the
        scheduler's allocation): validation then checks the memory of those GPUs, not the
        least free GPU of the machine."""
        if not indices or not self.gpus:
            return self
        chosen = [g for g in self.gpus if g.index in set(indices)]
        if not chosen:
            return self
        return self.model_copy(
            update={
                "gpus": chosen,
                "gpu_count": len(chosen),
                "available_gpu_memory_gb": sum(g.free_memory_gb for g in chosen),
            }
        )

    @classmethod
    def detect_current(cls, disk_path: str | Path | None = None) -> HardwareConstraints:
        """Read the machine now. `disk_path` is where training output will go."""
        mem = psutil.virtual_memory()
        gpus = detect_gpus()
        supports_bf16 = bool(gpus) and all(g.supports_bf16 for g in gpus)
        if supports_bf16:
            precision = "bf16"
        elif gpus:
            precision = "fp16"
        else:
            precision = "fp32"
        path = Path(disk_path) if disk_path else Path.home()
        while not path.exists() and path != path.parent:
            path = path.parent
        return cls(
            available_memory_gb=mem.available / _GIB,
            total_memory_gb=mem.total / _GIB,
            available_gpu_memory_gb=sum(g.free_memory_gb for g in gpus),
            gpu_count=len(gpus),
            cpu_cores=_usable_cores(),
            supports_mixed_precision=bool(gpus),
            recommended_precision=precision,
            supports_bf16=supports_bf16,
            disk_free_gb=psutil.disk_usage(str(path)).free / _GIB,
            gpus=gpus,
            platform=f"{platform.system()} {platform.machine()}",
        )


def _usable_cores() -> int:
    # Respect CPU affinity (containers, taskset) rather than the host's core count.
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def detect_gpus() -> list[GPUInfo]:
    """List NVIDIA GPUs through NVML; an empty list when there is no driver or GPU."""
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except Exception:  # NVMLError: no driver / library on this machine
        return []
    try:
        gpus = []
        visible = _visible_indices(pynvml.nvmlDeviceGetCount())
        for index in visible:
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            gpus.append(
                GPUInfo(
                    index=index,
                    name=_text(pynvml.nvmlDeviceGetName(handle)),
                    total_memory_gb=memory.total / _GIB,
                    free_memory_gb=memory.free / _GIB,
                    compute_capability=_capability(pynvml, handle),
                )
            )
        return gpus
    except Exception:
        return []
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def _visible_indices(count: int) -> list[int]:
    """Honour CUDA_VISIBLE_DEVICES when it lists plain indices, as torch would."""
    raw = os.environ.get("CUDA_VISIBLE_DEVICES")
    if raw is None:
        return list(range(count))
    indices: list[int] = []
    for part in raw.split(","):
        part = part.strip()
        if not part.isdigit():
            return list(range(count)) if part.startswith(("GPU-", "MIG-")) else indices
        index = int(part)
        if index >= count:
            break  # CUDA stops enumerating at the first invalid ordinal
        if index in indices:
            return []  # a repeated ordinal makes CUDA see no device at all
        indices.append(index)
    return indices


def _capability(pynvml: Any, handle: Any) -> tuple[int, int] | None:
    try:
        major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
        return int(major), int(minor)
    except Exception:
        return None


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
