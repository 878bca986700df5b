"""Hardware detection on this (CPU-only) machine, and its pure pieces."""

from __future__ import annotations

import os
from pathlib import Path

import psutil
import pytest

from flextrain.hardware import GPUInfo, HardwareConstraints, detect_gpus
from flextrain.hardware.detect import _visible_indices
from tests.conftest import cpu_hardware


def _has_nvidia_gpu() -> bool:
    return bool(detect_gpus())


cpu_only = pytest.mark.skipif(_has_nvidia_gpu(), reason="this machine has an NVIDIA GPU")


@cpu_only
def test_detect_current_on_a_cpu_machine() -> None:
    hw = HardwareConstraints.detect_current()
    assert hw.gpu_count == 0
    assert hw.gpus == []
    assert hw.gpu_names == []
    assert hw.available_gpu_memory_gb == 0.0
    assert hw.recommended_precision == "fp32"
    assert hw.supports_mixed_precision is False
    assert hw.supports_bf16 is False
    assert hw.cpu_cores >= 1
    assert 0 < hw.available_memory_gb <= hw.total_memory_gb
    assert hw.disk_free_gb > 0
    assert hw.platform


def test_cpu_cores_follow_affinity() -> None:
    hw = HardwareConstraints.detect_current()
    assert hw.cpu_cores == len(os.sched_getaffinity(0))
    assert hw.cpu_cores <= (os.cpu_count() or hw.cpu_cores)


def test_memory_matches_psutil() -> None:
    hw = HardwareConstraints.detect_current()
    total = psutil.virtual_memory().total / 1024**3
    assert hw.total_memory_gb == pytest.approx(total, rel=1e-6)


def test_disk_path_that_does_not_exist_yet(tmp_path: Path) -> None:
    """Output folders are created later: the nearest existing parent is measured."""
    hw = HardwareConstraints.detect_current(tmp_path / "not" / "yet" / "made")
    expected = psutil.disk_usage(str(tmp_path)).free / 1024**3
    assert hw.disk_free_gb == pytest.approx(expected, rel=0.05)
    assert not (tmp_path / "not").exists()


def test_round_trips_through_json() -> None:
    hw = HardwareConstraints.detect_current()
    again = HardwareConstraints.model_validate_json(hw.model_dump_json())
    assert again == hw


# -- CUDA_VISIBLE_DEVICES ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "count", "expected"),
    [
        (None, 2, [0, 1]),
        (None, 0, []),
        ("1,0", 2, [1, 0]),
        ("0", 2, [0]),
        (" 1 , 0 ", 2, [1, 0]),
        ("", 2, []),
        ("5", 2, []),
        ("-1", 2, []),
        ("0,-1,1", 2, [0]),  # like torch: an invalid entry hides the rest
        ("GPU-3f2a", 2, [0, 1]),  # UUIDs: cannot map without NVML, keep all
        ("MIG-abcd", 1, [0]),
    ],
)
def test_visible_indices(
    monkeypatch: pytest.MonkeyPatch, value: str | None, count: int, expected: list[int]
) -> None:
    if value is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", value)
    assert _visible_indices(count) == expected


def test_visible_indices_stop_at_an_out_of_range_index(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,5,1")
    assert _visible_indices(2) == [0]


def test_visible_indices_repeated_index(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,0")
    assert _visible_indices(2) == []


@cpu_only
def test_hidden_gpus_still_mean_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert detect_gpus() == []
    assert HardwareConstraints.detect_current().recommended_precision == "fp32"


# -- GPUInfo ---------------------------------------------------------------------------


def _gpu(capability: tuple[int, int] | None) -> GPUInfo:
    return GPUInfo(
        index=0,
        name="Test GPU",
        total_memory_gb=16.0,
        free_memory_gb=15.0,
        compute_capability=capability,
    )


@pytest.mark.parametrize(
    ("capability", "bf16"),
    [((8, 0), True), ((9, 0), True), ((8, 6), True), ((7, 5), False), ((6, 1), False)],
)
def test_gpu_bf16_by_capability(capability: tuple[int, int], bf16: bool) -> None:
    assert _gpu(capability).supports_bf16 is bf16


def test_gpu_without_known_capability_has_no_bf16() -> None:
    assert _gpu(None).supports_bf16 is False


def test_gpu_names_come_from_the_gpus() -> None:
    hw = HardwareConstraints(
        available_memory_gb=8,
        total_memory_gb=16,
        available_gpu_memory_gb=15,
        gpu_count=1,
        cpu_cores=4,
        supports_mixed_precision=True,
        recommended_precision="bf16",
        supports_bf16=True,
        disk_free_gb=100,
        gpus=[_gpu((8, 0))],
    )
    assert hw.gpu_names == ["Test GPU"]


def test_restricted_to_the_allocated_gpus() -> None:
    gpus = [
        GPUInfo(index=0, name="A", total_memory_gb=80, free_memory_gb=2.0),
        GPUInfo(index=1, name="A", total_memory_gb=80, free_memory_gb=70.0),
    ]
    machine = cpu_hardware(gpu_count=2, gpus=gpus, available_gpu_memory_gb=72.0)
    mine = machine.restricted_to((1,))
    assert mine.gpu_count == 1
    assert mine.available_gpu_memory_gb == 70.0
    assert [g.index for g in mine.gpus] == [1]
    assert machine.restricted_to(()) is machine
