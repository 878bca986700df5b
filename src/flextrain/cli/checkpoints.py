"""`flextrain jobs checkpoints ID`: list a job's checkpoints, export one, prune the rest."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn, TypeVar

import typer
from rich.markup import escape
from rich.table import Table

from flextrain.cli.common import console, err_console, get_service, guard
from flextrain.config.enums import TrainingStatus

if TYPE_CHECKING:
    from flextrain.public import CheckpointInfo

T = TypeVar("T")


def _guard(fn: Callable[[], T]) -> T:
    """`guard`, also for the checkpoint errors it does not know (they are bad input)."""

    def checked() -> T:
        from flextrain.public import CheckpointNotFoundError

        try:
            return fn()
        except (CheckpointNotFoundError, FileExistsError) as exc:
            raise ValueError(str(exc)) from None

    return guard(checked)


def size_text(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    value = size / 1024
    for unit in ("KB", "MB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


def _bad_usage(message: str) -> NoReturn:
    err_console.print(message, style="red", markup=False, highlight=False)
    raise typer.Exit(2)


def _parse_step(value: str) -> int | None:
    if value.strip().lower() == "latest":
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(
            f"--export: '{value}' is not a step. Fix: give a step number or 'latest'."
        ) from None


def _table(job_id: str, infos: list[CheckpointInfo]) -> Table:
    table = Table(title=f"Checkpoints of job {job_id}")
    for col in ("step", "epoch", "loss", "eval loss", "size", "modified (UTC)", "best"):
        table.add_column(col, justify="right" if col not in ("modified (UTC)", "best") else "left")
    for c in infos:
        table.add_row(
            str(c.step),
            "-" if c.epoch is None else f"{c.epoch:.2f}",
            "-" if c.loss is None else f"{c.loss:.4f}",
            "-" if c.eval_loss is None else f"{c.eval_loss:.4f}",
            size_text(c.size_bytes),
            c.modified.strftime("%Y-%m-%d %H:%M:%S"),
            "*" if c.is_best else "",
        )
    return table


def checkpoints(
    job_id: str,
    export: Annotated[
        str | None, typer.Option("--export", help="Export this step (or 'latest') as a model.")
    ] = None,
    to: Annotated[Path | None, typer.Option("--to", help="New folder for --export.")] = None,
    prune: Annotated[
        bool, typer.Option("--prune", help="Delete every checkpoint but the kept ones.")
    ] = False,
    keep: Annotated[
        list[int] | None,
        typer.Option("--keep", help="With --prune: a step to keep (repeat); default latest+best."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """A job's checkpoints: list (step, loss, size), --export one, or --prune the rest.

    An exported folder holds only what loading the model needs (no optimizer
    state), ready for `from_pretrained`. Pruning frees the disk that resume
    state takes once a run is over; a running job's checkpoints are left alone.
    """
    if export is not None and prune:
        _bad_usage("--export and --prune: choose one.")
    if (export is None) != (to is None):
        _bad_usage("--export STEP and --to DIR go together.")
    if keep and not prune:
        _bad_usage("--keep only applies with --prune.")
    service = get_service()
    folder = _guard(lambda: service.environment(job_id).checkpoint_dir)

    if export is not None and to is not None:
        step = _guard(lambda: _parse_step(export))
        path = _guard(lambda: service.export_checkpoint(job_id, step, to))
        if as_json:
            console.print_json(json.dumps({"path": str(path)}))
        else:
            console.print(str(path), markup=False, highlight=False)
        return

    if prune:

        def run_prune() -> tuple[list[int], int]:
            from flextrain.public import JobStateError

            job = service.require_job(job_id)
            if job.status == TrainingStatus.QUEUED:
                raise JobStateError(
                    f"Job {job_id} is queued and continues from its latest checkpoint when "
                    "it starts. Fix: prune after it finishes (or cancel it)."
                )
            if job.status.is_active:
                raise JobStateError(
                    f"Job {job_id} is {job.status.value}; its Trainer is still writing "
                    "checkpoints. Fix: prune after it finishes (or cancel it)."
                )
            return service.prune_checkpoints(job_id, keep or None)

        deleted, freed = _guard(run_prune)
        if as_json:
            console.print_json(json.dumps({"deleted": deleted, "freed_bytes": freed}))
        elif deleted:
            steps = ", ".join(str(s) for s in deleted)
            console.print(f"Deleted checkpoints {steps}; freed {size_text(freed)}.")
        else:
            console.print("Nothing to delete.")
        return

    infos = _guard(lambda: service.list_checkpoints(job_id))
    total = sum(c.size_bytes for c in infos)
    if as_json:
        data = {
            "job_id": job_id,
            "checkpoints": [c.to_dict() for c in infos],
            "total_bytes": total,
        }
        console.print_json(json.dumps(data))
        return
    if not infos:
        console.print(f"Job {job_id} has no checkpoints in {escape(str(folder))}.")
        return
    console.print(_table(job_id, infos))
    console.print(
        f"{len(infos)} checkpoint(s), {size_text(total)} on disk ({escape(str(folder))})."
    )
