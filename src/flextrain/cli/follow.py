"""Show a running job in the terminal: a progress bar with live loss."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

    from flextrain.jobs.store import TrainingJob
    from flextrain.service import TrainingService


def follow_job(
    service: TrainingService, job_id: str, console: Console, poll: float = 0.5
) -> TrainingJob:
    """Poll the store until the job ends; Ctrl-C cancels the job and re-raises."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
    try:
        with progress:
            task = progress.add_task("starting", total=None, detail="")
            seen = max((e.id for e in service.store.events(job_id)), default=0)
            while True:
                job = service.require_job(job_id)
                for event in service.store.events(job_id, seen):
                    seen = event.id
                    style = {"warning": "yellow", "error": "red"}.get(event.level, "cyan")
                    progress.console.print(
                        f"{event.kind}: {event.message}", style=style, markup=False
                    )
                detail = []
                if job.loss is not None:
                    detail.append(f"loss {job.loss:.4f}")
                if job.eval_loss is not None:
                    detail.append(f"eval {job.eval_loss:.4f}")
                if job.current_epoch:
                    detail.append(f"epoch {job.current_epoch:.2f}")
                progress.update(
                    task,
                    description=job.status.value,
                    total=job.total_steps or None,
                    completed=job.current_step,
                    detail="  ".join(detail),
                )
                if job.is_finished:
                    return job
                time.sleep(poll)
    except KeyboardInterrupt:
        console.print(f"[yellow]Interrupted: cancelling job {job_id}...")
        service.cancel_job(job_id)
        console.print(f"[yellow]Job {job_id} cancelled.")
        raise
