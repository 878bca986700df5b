"""`flextrain jobs ...`: list, show, start, resume, follow, cancel and read jobs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from flextrain.cli.common import console, get_service, guard
from flextrain.config.enums import TrainingStatus

if TYPE_CHECKING:
    from flextrain.public import TrainingJob
from flextrain.cli.checkpoints import checkpoints
from flextrain.cli.follow import follow_job
from flextrain.cli.train import run_to_end

jobs_app = typer.Typer(help="List, inspect and cancel training jobs.", no_args_is_help=True)


def _jobs_table(jobs: list[TrainingJob]) -> Table:
    table = Table(title="Training jobs")
    for col in ("id", "status", "type", "model", "dataset", "progress", "loss", "created"):
        table.add_column(col)
    for j in jobs:
        table.add_row(
            j.job_id,
            j.status.value,
            j.training_type.value,
            escape(j.model_id),
            escape(j.dataset_id),
            f"{j.progress:.0%}",
            f"{j.loss:.4f}" if j.loss is not None else "-",
            j.created_at.strftime("%Y-%m-%d %H:%M"),
        )
    return table


@jobs_app.command("list")
def jobs_list(
    status: Annotated[TrainingStatus | None, typer.Option(help="Only jobs in this status.")] = None,
    limit: Annotated[int, typer.Option(min=1)] = 50,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List jobs, newest first."""
    jobs = guard(lambda: get_service().list_jobs(status=status, limit=limit))
    if as_json:
        console.print_json(json.dumps([j.model_dump(mode="json") for j in jobs]))
    else:
        console.print(_jobs_table(jobs))


@jobs_app.command("show")
def jobs_show(job_id: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Everything about one job."""
    job = guard(lambda: get_service().require_job(job_id))
    if as_json:
        console.print_json(job.model_dump_json())
        return
    table = Table(title=f"Job {job.job_id}", show_header=False)
    for key, value in job.model_dump(mode="json", exclude={"config", "metrics"}).items():
        table.add_row(key, "" if value is None else escape(str(value)))
    table.add_row("config", escape(json.dumps(job.config)))
    table.add_row("metrics", escape(json.dumps(job.metrics)))
    console.print(table)


@jobs_app.command("metrics")
def jobs_metrics(
    job_id: str,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    system: Annotated[
        bool, typer.Option("--system", help="CPU, memory and GPU samples instead.")
    ] = False,
) -> None:
    """A job's metric history: loss, learning rate, grad norm, throughput, memory and
    eval results per step (or, with --system, the machine's use while it ran)."""
    service = guard(get_service)
    if system:
        rows = guard(lambda: service.system_samples(job_id))
        first = ["at"]
        title = f"System samples of job {job_id} ({len(rows)} rows)"
    else:
        rows = guard(lambda: service.metric_history(job_id))
        first = ["step", "epoch"]
        title = f"Metrics of job {job_id} ({len(rows)} rows)"
    if as_json:
        console.print_json(json.dumps(rows))
        return
    scalar = {k for row in rows for k, v in row.items() if isinstance(v, int | float)}
    keys = first + sorted(scalar - set(first))
    table = Table(title=title)
    for key in keys:
        table.add_column(key, justify="right")
    for row in rows:
        table.add_row(*(_cell(row.get(k)) for k in keys))
    console.print(table)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, int | float):
        return f"{value:.5g}"
    return escape(str(value))


@jobs_app.command("plot")
def jobs_plot(
    job_ids: Annotated[list[str], typer.Argument(help="One or more job ids, side by side.")],
    out: Annotated[Path | None, typer.Option("--out", help="PNG path.")] = None,
) -> None:
    """Write a PNG of loss, eval loss and learning rate against step; print its path."""
    path = guard(lambda: get_service().plot_jobs(job_ids, out))
    console.print(str(path), markup=False, highlight=False)


@jobs_app.command("start")
def jobs_start(
    job_id: str,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Make every check the start makes and print what the worker would run "
            "(batch_size auto resolved); start nothing.",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="With --dry-run: print JSON.")] = False,
    detach: Annotated[bool, typer.Option(help="Start and return; don't follow.")] = False,
) -> None:
    """Start a pending job (created with `train --no-start`, the API or Python)."""
    if dry_run:
        spec = guard(lambda: get_service().plan_start(job_id))
        if as_json:
            console.print_json(spec.model_dump_json())
            return
        c = spec.config
        table = Table(title=f"Job {job_id} would start with", show_header=False)
        table.add_row("Model", escape(spec.model_path))
        table.add_row("Objective, precision", f"{spec.objective}, {spec.precision}")
        table.add_row(
            "Batch",
            f"{c.train_batch_size} x {c.gradient_accumulation_steps} accumulation"
            f" x {c.world_size} process(es)",
        )
        table.add_row("Threads", str(spec.num_threads))
        table.add_row("Output", escape(spec.output_dir))
        console.print(table)
        return

    def run() -> TrainingJob:
        service = get_service()
        service.start_warm_worker()
        job = service.start_job(job_id)
        if job.status == TrainingStatus.QUEUED:
            console.print(f"Job [bold]{job_id}[/] queued: {escape(job.wait_reason or '')}")
        else:
            console.print(f"Job [bold]{job_id}[/] started.")
        if detach:
            return job
        return follow_job(service, job_id, console)

    run_to_end(run)


@jobs_app.command("resume")
def jobs_resume(
    job_id: str,
    detach: Annotated[bool, typer.Option(help="Resume and return; don't follow.")] = False,
) -> None:
    """Continue an interrupted, cancelled, failed, diverged or paused job from its latest
    checkpoint."""

    def run() -> TrainingJob:
        service = get_service()
        job = service.resume_job(job_id)
        notice = [e for e in service.events(job_id) if e.kind == "resumed"][-1]
        console.print(f"Job [bold]{job_id}[/]: {escape(notice.message)}")
        if detach:
            return job
        return follow_job(service, job_id, console)

    run_to_end(run)


@jobs_app.command("events")
def jobs_events(job_id: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """What happened to a job: memory warnings, interruptions, resumes, early stops."""
    events = guard(lambda: get_service().events(job_id))
    if as_json:
        console.print_json(json.dumps([e.model_dump(mode="json") for e in events]))
        return
    table = Table(title=f"Events of job {job_id}")
    for col in ("time", "level", "kind", "message"):
        table.add_column(col)
    for e in events:
        style = {"warning": "yellow", "error": "red"}.get(e.level, "")
        table.add_row(
            e.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            f"[{style}]{e.level}[/]" if style else e.level,
            e.kind,
            escape(e.message),
        )
    console.print(table)


@jobs_app.command("cancel")
def jobs_cancel(job_id: str) -> None:
    """Cancel a job: its worker and children stop within seconds."""
    job = guard(lambda: get_service().cancel_job(job_id))
    console.print(f"Job {job.job_id} is {job.status.value}.")


@jobs_app.command("logs")
def jobs_logs(job_id: str, tail: Annotated[int, typer.Option(min=1)] = 100) -> None:
    """The last lines of a job's log."""
    console.print(
        guard(lambda: get_service().read_log(job_id, tail)), markup=False, highlight=False
    )


jobs_app.command("checkpoints")(checkpoints)
