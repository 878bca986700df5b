"""`flextrain models search` and `flextrain models pull`: the hub, from the command line.

Search lists built-in and registered models always and hub models when online
(`--local` skips the hub), each with the training types it supports. Pull shows a
progress bar of bytes; stopped (Ctrl-C, a dropped network), the same command
continues where it stopped.

huggingface_hub, the service and the checker are imported inside the commands,
so `flextrain --help` stays fast.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from flextrain.cli.common import console, err_console, get_service, guard

if TYPE_CHECKING:
    from flextrain.public import PullProgress, PullResult, TrainableListing

_COUNT = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([kKmMbBtT]?)\s*$")
_UNITS = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9, "T": 10**12}


def parse_count(text: str | None) -> int | None:
    """'135M', '7B', '2.5k' or a plain number of parameters."""
    if text is None:
        return None
    match = _COUNT.match(text)
    if match is None or float(match[1]) <= 0:
        err_console.print(
            f"--max-params '{text}' is not a parameter count. Fix: write e.g. 135M, 7B or 500000.",
            style="red",
            markup=False,
        )
        raise typer.Exit(2)
    return max(1, int(float(match[1]) * _UNITS[match[2].upper()]))


def _human(count: int | None) -> str:
    if count is None:
        return "?"
    for unit, size in (("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if count >= size:
            return f"{count / size:.1f}{unit}"
    return str(count)


def search(
    text: Annotated[str | None, typer.Argument(help="Text the model id contains.")] = None,
    task: Annotated[
        str | None, typer.Option(help="Hub task, e.g. text-generation, fill-mask.")
    ] = None,
    library: Annotated[str | None, typer.Option(help="e.g. transformers.")] = None,
    license: Annotated[str | None, typer.Option(help="e.g. apache-2.0, mit.")] = None,
    max_params: Annotated[
        str | None, typer.Option("--max-params", help="At most this many parameters: 135M, 7B.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=100, help="Most hub results.")] = 10,
    local: Annotated[bool, typer.Option("--local", help="Do not search the hub.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Models to train from: built-in and registered ones, and hub models when online."""
    from flextrain.public import ModelFilters

    filters = ModelFilters(
        search=text,
        task=task,
        library=library,
        license=license,
        max_parameters=parse_count(max_params),
        include_hub=not local,
        limit=limit,
    )

    def run() -> None:
        service = get_service()
        listing = service.list_trainable_models(filters)
        _print_listing(listing, as_json)

    guard(run)  # a HubError (offline, gated, disk full) exits 1


def _print_listing(listing: TrainableListing, as_json: bool) -> None:
    if as_json:
        console.print_json(
            json.dumps(
                {
                    "models": [m.model_dump(mode="json") for m in listing.models],
                    "notes": listing.notes,
                }
            )
        )
        return
    table = Table("model", "source", "params", "task", "license", "trains as", "note")
    for m in listing.models:
        types = ", ".join(t.value for t in m.supported_training_types) or "-"
        table.add_row(
            escape(m.model_id),
            m.source,
            _human(m.num_parameters),
            escape(m.task or "-"),
            escape(m.license or "-"),
            types,
            escape(m.note or ""),
        )
    console.print(table)
    for note in listing.notes:
        err_console.print(note, style="yellow", markup=False, highlight=False)


def pull(
    model_id: Annotated[str, typer.Argument(help="Hub id, owner/name.")],
    revision: Annotated[str, typer.Option(help="Branch, tag or commit.")] = "main",
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Download a hub model into the hub cache; run it again to resume a stopped pull.

    Fetches config, tokenizer and safetensors weights (never pickle weights), after
    checking that the disk has room."""

    def run() -> None:
        result = _pull_with_bar(model_id, revision, show=not as_json)
        if as_json:
            console.print_json(
                json.dumps(
                    {
                        "model_id": result.model_id,
                        "revision": result.revision,
                        "commit": result.commit,
                        "path": str(result.path),
                        "files": result.files,
                        "bytes_total": result.bytes_total,
                        "bytes_downloaded": result.bytes_downloaded,
                        "bytes_resumed": result.bytes_resumed,
                        "bytes_cached": result.bytes_cached,
                    }
                )
            )
            return
        done = "already in the cache" if result.bytes_downloaded == 0 else "pulled"
        console.print(
            f"{escape(result.model_id)} {done}: {len(result.files)} files, "
            f"{result.bytes_total / 1e6:.1f} MB in {escape(str(result.path))}",
            highlight=False,
        )
        console.print(f"Train it: flextrain train --model {escape(result.model_id)} ...")

    guard(run)  # a HubError (offline, gated, disk full) exits 1


def _pull_with_bar(model_id: str, revision: str, *, show: bool) -> PullResult:
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    from flextrain.service import TrainingService

    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err_console, disable=not show) as bar:
        task = bar.add_task(model_id, total=None)

        def on_progress(event: PullProgress) -> None:
            bar.update(task, completed=event.bytes_done, total=event.bytes_total or None)

        try:
            return TrainingService.pull_model(model_id, revision=revision, progress=on_progress)
        except KeyboardInterrupt:
            bar.stop()
            err_console.print(
                "Stopped. Run the same command to continue: finished files are kept and "
                "the partial one resumes.",
                style="yellow",
            )
            raise typer.Exit(130) from None
