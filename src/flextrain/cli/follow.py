"""Show a running job in the terminal: a progress bar with live loss.

A job that waits in the queue is shown with its reason, and the loop ticks the
scheduler every few seconds meanwhile: `flextrain train` starts its job when the
machine frees up even when no scheduler loop runs for the home.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from flextrain.config.enums import TrainingStatus

if TYPE_CHECKING:
    from rich.console import Console

    from flextrain.public import TrainingJob
    from flextrain.service import TrainingService


# Seconds between looks at a job that has trained its last step: what is left (the
# final evaluation, saving, registering the model) takes about a second, and the command
# returns as soon as the job is seen completed.
FINISHING_POLL = 0.1


def _finishing(job: TrainingJob) -> bool:
    return job.status == TrainingStatus.EVALUATING or (
        job.status == TrainingStatus.TRAINING
        and bool(job.total_steps)
        and job.current_step >= job.total_steps
    )


def follow_job(
    service: TrainingService, job_id: str, console: Console, poll: float = 0.5
) -> TrainingJob:
    """Poll the store until the job ends; Ctrl-C cancels the job (queued or running)
    and re-raises."""
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
            seen = max((e.id for e in service.events(job_id)), default=0)
            next_tick = 0.0
            reason = None
            while True:
                job = service.require_job(job_id)
                if job.status == TrainingStatus.QUEUED and job.wait_reason != reason:
                    reason = job.wait_reason
                    progress.console.print(f"queued: {reason}", style="yellow", markup=False)
                for event in service.events(job_id, seen):
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
                next_tick = service.tick_while_queued(job, next_tick)
                time.sleep(min(poll, FINISHING_POLL) if _finishing(job) else poll)
    except KeyboardInterrupt:
        console.print(f"[yellow]Interrupted: cancelling job {job_id}...")
        service.cancel_job(job_id)
        console.print(f"[yellow]Job {job_id} cancelled.")
        raise
