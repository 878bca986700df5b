"""The job queue: where a job fits (pure, on made-up machines, GPUs included), and the
scheduler on a real store: limits, priority order, CPU threads, cancel, the worker's
own tick starting the next job, and one scheduler loop per home.

Machines are fixed with `hardware_probe`; a job that holds resources without
training is a live `sleep` recorded as TRAINING (tests/jobs/queue_helpers.py).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from flextrain.config.enums import TrainingStatus
from flextrain.config.validation import ConfigValidationError
from flextrain.hardware.cpus import cpu_list, server_cpus, training_cpus
from flextrain.hardware.detect import GPUInfo, HardwareConstraints
from flextrain.jobs.errors import JobStateError
from flextrain.jobs.placement import (
    Reservation,
    demand_of,
    never_fits,
    place,
    reservation_of,
)
from flextrain.jobs.resources import Allocation, Layout
from flextrain.jobs.scheduler import SchedulerBusyError, SchedulerLoop
from flextrain.service import TrainingService
from flextrain.settings import Settings
from tests.conftest import cpu_hardware
from tests.jobs.queue_helpers import end, occupy, quick_config, wait_until

MakeService = Callable[..., TrainingService]


def gpu_machine(*free_total: tuple[float, float], cores: int = 8) -> HardwareConstraints:
    """A machine with one GPU per (free GB, total GB) pair."""
    gpus = [
        GPUInfo(index=i, name="Fake GPU", free_memory_gb=free, total_memory_gb=total)
        for i, (free, total) in enumerate(free_total)
    ]
    return cpu_hardware(
        cpu_cores=cores,
        gpu_count=len(gpus),
        available_gpu_memory_gb=sum(g.free_memory_gb for g in gpus),
        supports_mixed_precision=True,
        recommended_precision="bf16",
        supports_bf16=True,
        gpus=gpus,
    )


# -- placement: CPU threads ------------------------------------------------------------


def test_a_default_cpu_job_reserves_every_core() -> None:
    hw = cpu_hardware(cpu_cores=4)
    demand = demand_of(Layout(), hw)
    assert (demand.threads, demand.slots, demand.gpus) == (4, 4, 0)
    assert place(demand, hw, []) == Allocation(threads=4)
    assert place(demand, hw, [Reservation("a", 1)]) == "needs 4 CPU threads, 3 free (job a uses 1)"


def test_one_thread_jobs_run_side_by_side_on_two_cores() -> None:
    hw = cpu_hardware(cpu_cores=2)
    demand = demand_of(Layout(threads=1), hw)
    assert place(demand, hw, []) == Allocation(threads=1)
    assert place(demand, hw, [Reservation("a", 1)]) == Allocation(threads=1)
    both = [Reservation("a", 1), Reservation("b", 1)]
    assert place(demand, hw, both) == "needs 1 CPU thread, 0 free (job a uses 1, job b uses 1)"


def test_processes_share_the_cores() -> None:
    hw = cpu_hardware(cpu_cores=4)
    demand = demand_of(Layout(processes=2), hw)
    assert (demand.processes, demand.threads, demand.slots) == (2, 2, 4)
    assert place(demand, hw, []) == Allocation(threads=2)
    # More processes than cores, threads left to flextrain: one each, the whole machine.
    crowded = demand_of(Layout(processes=3), cpu_hardware(cpu_cores=2))
    assert (crowded.threads, crowded.slots) == (1, 2)
    assert never_fits(crowded, cpu_hardware(cpu_cores=2)) == []


def test_max_concurrent_jobs_comes_first() -> None:
    hw = cpu_hardware(cpu_cores=8)
    demand = demand_of(Layout(threads=1), hw)
    reason = place(demand, hw, [Reservation("abc123", 1)], max_concurrent_jobs=1)
    assert reason == "max_concurrent_jobs 1 reached: job abc123 running"
    two = [Reservation("a", 1), Reservation("b", 1)]
    assert place(demand, hw, two, 2) == "max_concurrent_jobs 2 reached: jobs a, b running"
    assert place(demand, hw, two, 3) == Allocation(threads=1)


# -- placement: GPUs ---------------------------------------------------------------------


def test_a_gpu_job_gets_a_gpu_no_other_job_holds_with_enough_free_memory() -> None:
    hw = gpu_machine((20.0, 24.0), (16.0, 24.0), cores=8)
    demand = demand_of(Layout(), hw, gpu_memory_gb=12.0)
    assert (demand.gpus, demand.threads) == (1, 4)  # cores // GPUs per process
    assert place(demand, hw, []) == Allocation(gpus=(0,), threads=4)
    assert place(demand, hw, [Reservation("x", 4, (0,))]) == Allocation(gpus=(1,), threads=4)


def test_a_gpu_job_waits_with_the_free_memory_in_words() -> None:
    hw = gpu_machine((20.0, 24.0), (8.0, 24.0), cores=8)
    demand = demand_of(Layout(), hw, gpu_memory_gb=12.0)
    reason = place(demand, hw, [Reservation("x", 4, (0,))])
    assert reason == "needs 1 GPU with 12.0 GB free; free: GPU 1 8.0 GB; held: GPU 0 by job x"
    both = [Reservation("x", 2, (0,)), Reservation("y", 2, (1,))]
    assert place(demand, hw, both, None) == (
        "needs 1 GPU with 12.0 GB free; free: none; held: GPU 0 by job x, GPU 1 by job y"
    )


def test_a_multi_process_job_gets_distinct_free_gpus() -> None:
    hw = gpu_machine(*[(20.0, 24.0)] * 4, cores=8)
    demand = demand_of(Layout(processes=2), hw, gpu_memory_gb=5.0)
    assert (demand.gpus, demand.threads, demand.slots) == (2, 2, 4)
    placed = place(demand, hw, [Reservation("x", 2, (1,))])
    assert placed == Allocation(gpus=(0, 2), threads=2)


def test_a_running_job_without_an_allocation_holds_the_first_gpus() -> None:
    hw = gpu_machine(*[(20.0, 24.0)] * 4, cores=8)
    held = reservation_of("old", Layout(processes=2), None, hw)
    assert held == Reservation("old", 4, (0, 1))
    recorded = reservation_of("new", Layout(processes=2), {"gpus": [2, 3], "threads": 2}, hw)
    assert recorded == Reservation("new", 4, (2, 3))


def test_gpu_counts_without_gpu_details_are_split_evenly() -> None:
    hw = cpu_hardware(gpu_count=2, available_gpu_memory_gb=20.0, cpu_cores=4)
    demand = demand_of(Layout(), hw, gpu_memory_gb=12.0)
    reason = "needs 1 GPU with 12.0 GB free; free: GPU 0 10.0 GB, GPU 1 10.0 GB"
    assert place(demand, hw, []) == reason


# -- requests that can never fit -----------------------------------------------------------


def test_more_processes_than_gpus_never_fits() -> None:
    hw = gpu_machine((20.0, 24.0), (20.0, 24.0))
    (issue,) = never_fits(demand_of(Layout(processes=4), hw), hw)
    assert issue.field == "num_processes"
    assert "this machine has 2" in issue.message
    assert "at most 2" in issue.fix


def test_more_threads_than_cores_never_fits() -> None:
    hw = cpu_hardware(cpu_cores=2)
    (issue,) = never_fits(demand_of(Layout(threads=4), hw), hw)
    assert issue.field == "num_threads"
    assert "4 threads x 1 process = 4 CPU threads; this machine has 2 cores" in issue.message
    assert issue.fix.startswith("set num_threads to at most 2")
    (issue,) = never_fits(demand_of(Layout(threads=1, processes=3), hw), hw)
    assert issue.field == "num_processes"


def test_more_memory_than_the_largest_gpu_never_fits() -> None:
    hw = gpu_machine((20.0, 24.0))
    (issue,) = never_fits(demand_of(Layout(), hw, gpu_memory_gb=30.0), hw)
    assert issue.field == "batch_size"
    assert "largest GPU here has 24.0 GB" in issue.message
    assert never_fits(demand_of(Layout(), hw, gpu_memory_gb=22.0), hw) == []  # waits, may fit


# -- the scheduler on a real store -------------------------------------------------------


@pytest.fixture
def make_service(settings: Settings) -> Iterator[MakeService]:
    """Services on the test's home with a fixed machine (CPU cores) and job limit."""
    made: list[TrainingService] = []

    def make(*, cores: int = 2, max_concurrent_jobs: int | None = None) -> TrainingService:
        values = settings.model_copy(update={"max_concurrent_jobs": max_concurrent_jobs})
        hardware = cpu_hardware(cpu_cores=cores)
        service = TrainingService(values, hardware_probe=lambda: hardware)
        made.append(service)
        return service

    yield make
    for service in made:
        for _ in range(3):  # cancelling a running job may start a queued one: again
            unfinished = [j for j in service.list_jobs() if not j.is_finished]
            for job in unfinished:
                with suppress(JobStateError):
                    service.cancel_job(job.job_id, timeout=10)
        service.engine.dispose()


def submit(service: TrainingService, priority: int = 0, **config: Any) -> str:
    job = service.create_job(quick_config(**config), priority=priority)
    service.start_job(job.job_id)
    return job.job_id


def test_with_max_one_job_the_second_queues_and_starts_when_the_first_ends(
    make_service: MakeService,
) -> None:
    service = make_service(max_concurrent_jobs=1)
    first = submit(service)
    assert service.require_job(first).status != TrainingStatus.QUEUED
    second = service.start_job(service.create_job(quick_config()).job_id)
    assert second.status == TrainingStatus.QUEUED
    assert second.wait_reason == f"max_concurrent_jobs 1 reached: job {first} running"
    assert second.pid is None

    # Nobody ticks from here on: only the first job's worker, as it exits.
    done = service.wait(first, timeout=120, poll=0.2)  # not queued: wait does not tick
    assert done.status == TrainingStatus.COMPLETED, service.read_log(first, 40)
    started = wait_until(
        lambda: service.require_job(second.job_id),  # reads only, never ticks
        lambda j: j.status != TrainingStatus.QUEUED,
        timeout=60,
    )
    assert started.allocation == {"gpus": [], "threads": 1}
    # The first worker writes its line after the launch it made: poll for it.
    deadline = time.monotonic() + 30
    while f"started queued job {second.job_id}" not in service.read_log(first, 20):
        assert time.monotonic() < deadline, service.read_log(first, 20)
        time.sleep(0.1)
    finished = service.wait(second.job_id, timeout=120, poll=0.2)
    assert finished.status == TrainingStatus.COMPLETED, service.read_log(second.job_id, 40)
    assert finished.wait_reason is None


def test_reserved_cpus_are_kept_from_training(settings: Settings) -> None:
    four = cpu_hardware(cpu_cores=4)
    values = settings.model_copy(update={"reserved_cpus": 1})
    service = TrainingService(values, hardware_probe=lambda: four)
    try:
        assert service.hardware().cpu_cores == 3  # what validation and estimates see
        job = service.create_job(quick_config(num_threads=None))
        assert demand_of(job.layout, service.hardware()).slots == 3
        assert service.queue().cpu_threads == 3
        # Never below one core, whatever is reserved.
        one = TrainingService(
            settings.model_copy(update={"reserved_cpus": 8}),
            hardware_probe=lambda: cpu_hardware(cpu_cores=2),
        )
        assert one.hardware().cpu_cores == 1
        one.engine.dispose()
    finally:
        service.engine.dispose()


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two cores to reserve one")
def test_with_reserved_cpus_the_worker_runs_on_the_other_cores(settings: Settings) -> None:
    values = settings.model_copy(update={"reserved_cpus": 1})
    service = TrainingService(values)
    try:
        job_id = submit(service, max_steps=400)
        running = wait_until(
            lambda: service.require_job(job_id),
            lambda j: j.status == TrainingStatus.TRAINING and j.current_step >= 1,
            timeout=120,
        )
        assert running.pid is not None
        cpus = sorted(os.sched_getaffinity(running.pid))
        assert cpus == training_cpus(1)
        assert 0 not in cpus
        assert sorted({*cpus, *(server_cpus(1) or [])}) == list(range(os.cpu_count() or 1))
    finally:
        for job in service.list_jobs():
            if not job.is_finished:
                service.cancel_job(job.job_id, timeout=10)
        service.engine.dispose()


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two cores to reserve one")
def test_reserved_cores_come_from_the_machine_not_from_a_pinned_process(tmp_path: Path) -> None:
    before = os.sched_getaffinity(0)
    cpus = training_cpus(1)
    try:
        os.sched_setaffinity(0, {min(before)})  # as the server, or a worker that ticks
        assert training_cpus(1) == cpus
        assert server_cpus(1) == [min(before)]
    finally:
        os.sched_setaffinity(0, before)
    listed = tmp_path / "cpus"
    listed.write_text("0-3,6\n")
    assert cpu_list(listed) == [0, 1, 2, 3, 6]
    assert cpu_list(tmp_path / "none") == []


def test_cancelling_a_queued_job_never_starts_it(make_service: MakeService) -> None:
    service = make_service(max_concurrent_jobs=1)
    blocker, proc = occupy(service)
    queued = submit(service)
    assert service.require_job(queued).status == TrainingStatus.QUEUED

    cancelled = service.cancel_job(queued)
    assert cancelled.status == TrainingStatus.CANCELLED
    assert cancelled.completed_at is not None
    assert cancelled.wait_reason is None
    end(proc)  # the machine frees up: ticks now have room
    for _ in range(2):
        report = service.scheduler.tick()
        assert queued not in report.started
    job = service.require_job(queued)
    assert job.status == TrainingStatus.CANCELLED
    assert job.pid is None
    assert job.allocation is None
    assert job.started_at is None
    log = Path(job.log_path or "")
    assert not log.exists() or log.read_text() == ""
    assert service.require_job(blocker).status == TrainingStatus.INTERRUPTED
    assert service.queue().queued == []
    with pytest.raises(JobStateError, match="already cancelled"):
        service.cancel_job(queued)


def test_queue_order_is_priority_then_first_queued(make_service: MakeService) -> None:
    service = make_service(max_concurrent_jobs=1)
    blocker, proc = occupy(service)
    low_1 = submit(service, priority=0)
    high_1 = submit(service, priority=5)
    low_2 = submit(service, priority=0)
    high_2 = submit(service, priority=5)

    queue = service.queue()
    assert [q.job_id for q in queue.queued] == [high_1, high_2, low_1, low_2]
    assert [q.position for q in queue.queued] == [1, 2, 3, 4]
    assert [q.priority for q in queue.queued] == [5, 5, 0, 0]
    assert queue.queued[0].wait_reason == f"max_concurrent_jobs 1 reached: job {blocker} running"
    behind = f"waits its turn behind job {high_1} (priority 5), which waits for resources"
    assert [q.wait_reason for q in queue.queued[1:]] == [behind] * 3
    assert [(r.job_id, r.threads, r.gpus) for r in queue.running] == [(blocker, 1, [])]

    end(proc)
    report = service.scheduler.tick()
    assert report.started == [high_1]
    after = service.queue()
    assert [q.job_id for q in after.queued] == [high_2, low_1, low_2]
    assert after.queued[0].wait_reason == f"max_concurrent_jobs 1 reached: job {high_1} running"


def test_a_small_job_never_jumps_ahead_of_a_waiting_higher_priority_one(
    make_service: MakeService,
) -> None:
    service = make_service(cores=2)
    blocker, _ = occupy(service, {"gpus": [], "threads": 1})
    big = submit(service, priority=5, num_threads=None)  # wants both cores
    small = submit(service, priority=0, num_threads=1)  # would fit in the free core
    big_job, small_job = service.require_job(big), service.require_job(small)
    assert big_job.status == small_job.status == TrainingStatus.QUEUED
    assert big_job.wait_reason == f"needs 2 CPU threads, 1 free (job {blocker} uses 1)"
    assert small_job.wait_reason == (
        f"waits its turn behind job {big} (priority 5), which waits for resources"
    )
    assert small_job.pid is None


def test_one_thread_jobs_run_side_by_side_and_a_default_job_waits_for_all_cores(
    make_service: MakeService,
) -> None:
    service = make_service(cores=2)
    # Long runs, so both still hold their core when the third job is submitted.
    first = submit(service, num_threads=1, max_steps=100_000)
    second = submit(service, num_threads=1, max_steps=100_000)
    for job_id in (first, second):
        job = service.require_job(job_id)
        assert job.status.is_active, (job.status, job.error_message)
        assert job.pid is not None, (job.status, job.error_message)
        assert job.allocation == {"gpus": [], "threads": 1}
        spec = json.loads(service.environment(job_id).config_file.read_text())
        assert spec["num_threads"] == 1
    default = service.require_job(submit(service, num_threads=None))
    assert default.status == TrainingStatus.QUEUED
    assert default.wait_reason == (
        f"needs 2 CPU threads, 0 free (job {first} uses 1, job {second} uses 1)"
    )


def test_a_gpu_job_waits_for_the_gpus_running_jobs_hold(settings: Settings) -> None:
    """Without a GPU here: the machine is made up, the jobs holding its GPUs are records.
    Memory the running jobs use does not refuse the job (it fits once they end): it waits."""
    hardware = gpu_machine((0.2, 24.0), (0.2, 24.0), cores=4)
    service = TrainingService(settings, hardware_probe=lambda: hardware)
    try:
        first, _ = occupy(service, {"gpus": [0], "threads": 1})
        second, _ = occupy(service, {"gpus": [1], "threads": 1})
        job = service.create_job(quick_config(num_threads=None), strict_hardware=True)
        queued = service.start_job(job.job_id)
        assert queued.status == TrainingStatus.QUEUED, queued.error_message
        assert queued.wait_reason is not None
        pattern = (
            rf"needs 1 GPU with [\d.]+ GB free; free: none; "
            rf"held: GPU 0 by job {first}, GPU 1 by job {second}"
        )
        assert re.fullmatch(pattern, queued.wait_reason), queued.wait_reason
        running = service.queue().running
        assert [(r.job_id, r.gpus, r.threads) for r in running] == [
            (first, [0], 1),
            (second, [1], 1),
        ]
    finally:
        for job_id in [j.job_id for j in service.list_jobs() if not j.is_finished]:
            service.cancel_job(job_id, timeout=10)
        service.engine.dispose()


def test_a_request_that_can_never_fit_fails_at_submit(make_service: MakeService) -> None:
    service = make_service(cores=2)
    job = service.create_job(quick_config(num_threads=4))
    with pytest.raises(ConfigValidationError, match="num_threads") as caught:
        service.start_job(job.job_id)
    assert [e.field for e in caught.value.errors] == ["num_threads"]
    failed = service.require_job(job.job_id)
    assert failed.status == TrainingStatus.FAILED
    assert failed.pid is None
    assert failed.error_message
    assert "Fix: set num_threads to at most 2" in failed.error_message


def test_a_queued_job_that_can_no_longer_fit_fails_without_blocking_the_queue(
    make_service: MakeService,
) -> None:
    service = make_service(cores=2, max_concurrent_jobs=1)
    blocker, _ = occupy(service)
    # Queued while the machine had more cores (say): now it asks for more than there are.
    stuck = service.create_job(quick_config(num_threads=4)).job_id
    assert service.store.transition(
        stuck,
        [TrainingStatus.PENDING],
        status=TrainingStatus.QUEUED,
        queued_at=datetime.now(UTC) - timedelta(minutes=5),
    )
    behind = submit(service)  # its tick fails `stuck`; `behind` waits for its own reason
    failed = service.require_job(stuck)
    assert failed.status == TrainingStatus.FAILED
    assert failed.error_message
    assert "num_threads" in failed.error_message
    assert [e.kind for e in service.events(stuck)] == ["not_scheduled"]
    reason = service.require_job(behind).wait_reason
    assert reason == f"max_concurrent_jobs 1 reached: job {blocker} running"


def test_resume_goes_through_the_queue(make_service: MakeService) -> None:
    service = make_service(max_concurrent_jobs=1)
    job_id = service.create_job(quick_config()).job_id
    service.cancel_job(job_id)
    blocker, _ = occupy(service)
    resumed = service.resume_job(job_id)
    assert resumed.status == TrainingStatus.QUEUED
    assert resumed.resume_count == 1
    assert resumed.wait_reason == f"max_concurrent_jobs 1 reached: job {blocker} running"
    assert [e.kind for e in service.events(job_id)] == ["resumed"]


def test_priority_out_of_range_is_refused_with_the_field(make_service: MakeService) -> None:
    service = make_service()
    with pytest.raises(ConfigValidationError, match="priority: 5000 is outside"):
        service.create_job(quick_config(), priority=5000)
    assert service.list_jobs() == []


def test_one_scheduler_loop_per_home(make_service: MakeService) -> None:
    first = SchedulerLoop(make_service())
    second = SchedulerLoop(make_service())
    assert first.acquire()
    try:
        assert not second.acquire()
        with pytest.raises(SchedulerBusyError, match=f"pid {os.getpid()}"):
            second.require()
    finally:
        first.release()
    assert second.acquire()  # the home's loop can move once the first one is gone
    second.release()
