"""`flextrain queue` and `flextrain scheduler`: see the job queue, run its scheduler loop."""

from __future__ import annotations

import signal
from datetime import datetime
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from flextrain.cli.common import console, err_console, get_service, guard

if TYPE_CHECKING:
    from flextrain.public import QueueSnapshot, TickReport
    from flextrain.service import TrainingService


def waited(seconds: float) -> str:
    """A short duration: 45 s, 12 min, 3.5 h."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _started(value: datetime | None) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def print_queue(snapshot: QueueSnapshot) -> None:
    if snapshot.queued:
        table = Table(title="Queue (starts top first)")
        for column in ("#", "job", "priority", "queued for", "owner", "why it waits"):
            table.add_column(column, overflow="fold")
        for q in snapshot.queued:
            table.add_row(
                str(q.position),
                q.job_id,
                str(q.priority),
                waited(q.waiting_seconds),
                escape(q.owner or "-"),
                escape(q.wait_reason or "-"),
            )
        console.print(table)
    else:
        console.print("The queue is empty.")
    if snapshot.running:
        table = Table(title="Running")
        for column in ("job", "status", "priority", "processes", "GPUs", "threads", "started"):
            table.add_column(column)
        for r in snapshot.running:
            table.add_row(
                r.job_id,
                r.status.value,
                str(r.priority),
                str(r.processes),
                ",".join(str(g) for g in r.gpus) or "-",
                str(r.threads),
                _started(r.started_at),
            )
        console.print(table)
    else:
        console.print("No job is running.")
    gpus = ", ".join(str(g) for g in snapshot.gpus) or "none"
    limit = snapshot.max_concurrent_jobs
    console.print(
        f"CPU threads reserved: {snapshot.cpu_threads_reserved} of {snapshot.cpu_threads}; "
        f"GPUs: {gpus}; max_concurrent_jobs: {limit if limit is not None else 'not set'}",
        highlight=False,
    )


def queue(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """The queued jobs in the order they start (and why each waits), and what runs now."""
    snapshot = guard(lambda: get_service().queue())
    if as_json:
        console.print_json(snapshot.model_dump_json())
    else:
        print_queue(snapshot)


class _Reporter:
    """Prints what each tick changed: jobs started or failed, new reasons to wait."""

    def __init__(self, service: TrainingService) -> None:
        self.service = service
        self.reasons: dict[str, str] = {}

    def __call__(self, report: TickReport) -> None:
        for job_id in report.started:
            job = self.service.get_job(job_id)
            held = (job.allocation if job else None) or {}
            gpus = ",".join(str(g) for g in held.get("gpus") or []) or "none"
            console.print(
                f"Started job {job_id} (GPUs {gpus}, {held.get('threads') or '-'} threads "
                "per process).",
                highlight=False,
            )
        for job_id, error in report.failed.items():
            err_console.print(f"Job {job_id} failed: {error}", style="red", markup=False)
        for job_id, reason in report.waiting.items():
            if self.reasons.get(job_id) != reason:
                console.print(f"Job {job_id} waits: {reason}", markup=False, highlight=False)
        self.reasons = dict(report.waiting)


def scheduler(
    interval: Annotated[float, typer.Option(min=0.5, max=600, help="Seconds between ticks.")] = 3.0,
    once: Annotated[bool, typer.Option("--once", help="Run one tick and exit.")] = False,
) -> None:
    """Run this home's job scheduler in the foreground: starts queued jobs as resources free.

    Only one scheduler loop runs per FLEXTRAIN_HOME (`flextrain serve` runs one too);
    a second refuses to start. Ctrl-C or SIGTERM stops it; running jobs go on.
    """
    service = get_service()
    reporter = _Reporter(service)
    if once:
        reporter(guard(service.scheduler.tick))
        return
    loop = service.scheduler_loop(interval=interval, on_report=reporter)
    guard(loop.require)  # SchedulerBusyError (another loop runs here): exit 1

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        loop.request_stop()

    signal.signal(signal.SIGTERM, on_sigterm)
    console.print(
        f"Scheduler for {escape(str(service.settings.home))}: a tick every {interval:g} s "
        "(Ctrl-C stops it).",
        highlight=False,
    )
    try:
        loop.run()
    except KeyboardInterrupt:
        loop.stop()
    console.print("Scheduler stopped.")
