"""`flextrain datasets ...`: add (versioned), list, show, versions, validate, delete."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer
from rich.markup import escape
from rich.table import Table

from flextrain.cli.common import console, err_console, get_service, guard
from flextrain.config.enums import DATA_SHAPES

if TYPE_CHECKING:  # the data layer imports SQLAlchemy: only when a command runs
    from flextrain.public import ColumnMap, DataReport, Shape, SourceFormat
    from flextrain.service import TrainingService

datasets_app = typer.Typer(
    help="Datasets: add, list, show, validate, delete.", no_args_is_help=True
)

FORMATS = ("jsonl", "json", "csv", "parquet", "text", "text_folder", "hf_disk")
SHAPES = DATA_SHAPES

FormatOpt = Annotated[
    str | None, typer.Option("--format", help=f"One of {', '.join(FORMATS)}; default: detect.")
]
ShapeOpt = Annotated[
    str | None, typer.Option("--shape", help=f"One of {', '.join(SHAPES)}; default: detect.")
]
TextCol = Annotated[str | None, typer.Option("--text-column")]
LabelCol = Annotated[str | None, typer.Option("--label-column")]
InstructionCol = Annotated[str | None, typer.Option("--instruction-column")]
InputCol = Annotated[str | None, typer.Option("--input-column")]
OutputCol = Annotated[str | None, typer.Option("--output-column")]
PromptCol = Annotated[str | None, typer.Option("--prompt-column")]
CompletionCol = Annotated[str | None, typer.Option("--completion-column")]
MessagesCol = Annotated[str | None, typer.Option("--messages-column")]
ChosenCol = Annotated[str | None, typer.Option("--chosen-column")]
RejectedCol = Annotated[str | None, typer.Option("--rejected-column")]


def _choice(value: str | None, allowed: tuple[str, ...], option: str) -> str | None:
    if value is not None and value not in allowed:
        err_console.print(
            f"{option} '{value}' is not known. Fix: use one of {', '.join(allowed)}.",
            style="red",
            markup=False,
        )
        raise typer.Exit(2)
    return value


def _columns(**given: str | None) -> ColumnMap:
    from flextrain.public import ColumnMap

    return ColumnMap(**given)


@datasets_app.command("add")
def datasets_add(
    path: Path,
    name: Annotated[str | None, typer.Option("--name", help="Default: the file's stem.")] = None,
    description: str = "",
    format: FormatOpt = None,
    shape: ShapeOpt = None,
    text_column: TextCol = None,
    label_column: LabelCol = None,
    instruction_column: InstructionCol = None,
    input_column: InputCol = None,
    output_column: OutputCol = None,
    prompt_column: PromptCol = None,
    completion_column: CompletionCol = None,
    messages_column: MessagesCol = None,
    chosen_column: ChosenCol = None,
    rejected_column: RejectedCol = None,
) -> None:
    """Check a file and store it as a new version (prints the version hash)."""
    fmt = cast("SourceFormat | None", _choice(format, FORMATS, "--format"))
    kind = cast("Shape | None", _choice(shape, SHAPES, "--shape"))
    columns = _columns(
        text=text_column,
        label=label_column,
        instruction=instruction_column,
        input=input_column,
        output=output_column,
        prompt=prompt_column,
        completion=completion_column,
        messages=messages_column,
        chosen=chosen_column,
        rejected=rejected_column,
    )
    service = get_service()
    # Data errors (DatasetValidationError) print every row and field, exit code 2.
    version = guard(
        lambda: service.add_dataset(
            path,
            name=name or path.stem,
            format=fmt,
            shape=kind,
            columns=columns,
            description=description,
        )
    )
    console.print(
        f"{escape(version.dataset_id)}@{version.version}\n"
        f"{version.num_rows} rows of {version.shape} data from {escape(version.source_name)}; "
        f"use --dataset {escape(version.dataset_id)} (latest) or "
        f"{escape(version.dataset_id)}@{version.version[:12]} (this version)."
    )
    _print_warnings(version.report)


@datasets_app.command("register")
def datasets_register(name: str, path: Path, description: str = "") -> None:
    """Name a file so jobs can use it as --dataset NAME (same as `add --name`)."""
    version = guard(lambda: get_service().datasets.add(path, name=name, description=description))
    console.print(
        f"Registered '{escape(name)}' version {version.version}: {version.num_rows} rows "
        f"({version.shape})."
    )
    _print_warnings(version.report)


def _print_warnings(report: DataReport | None) -> None:
    """The warnings of data that was registered (it had no errors), to stderr."""
    if report is None or not report.warning_count:
        return
    for line in report.issue_lines():
        err_console.print(line, style="yellow", markup=False, highlight=False)


@datasets_app.command("list")
def datasets_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Bundled and registered datasets (latest versions)."""
    rows = guard(lambda: get_service().datasets.describe_all())
    if as_json:
        console.print_json(json.dumps(rows))
        return
    table = Table(title="Datasets")
    for col in ("id", "shape", "version", "rows", "labels", "path"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            escape(r["dataset_id"].rpartition("@")[0] or r["dataset_id"]),
            r.get("shape") or r.get("format", "?"),
            (r.get("version") or "-")[:12],
            str(r.get("num_rows", "?")),
            escape(", ".join(r.get("labels", []))),
            escape(r.get("path", r.get("error", ""))),
        )
    console.print(table)


@datasets_app.command("show")
def datasets_show(ref: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """One dataset (NAME or NAME@VERSION): its versions and the jobs that used each."""
    from flextrain.public import split_ref

    service = get_service()
    info = guard(lambda: service.describe_dataset(ref))
    name, _ = split_ref(ref)
    versions = guard(lambda: service.dataset_versions(name))
    data: dict[str, Any] = {
        **info.to_dict(),
        "versions": [
            {**v.to_dict(), "jobs": service.jobs_using_dataset(name, v.version)} for v in versions
        ],
    }
    if as_json:
        console.print_json(json.dumps(data))
        return
    console.print(f"[bold]{escape(name)}[/] {escape(info.description)}")
    console.print(f"shape {info.shape or info.format}, {info.num_rows} rows, path {info.path}")
    table = Table(title="Versions (oldest first)")
    for col in ("version", "rows", "from", "created", "jobs"):
        table.add_column(col)
    for v in data["versions"]:
        table.add_row(
            v["version"][:12],
            str(v["num_rows"]),
            escape(v["source_name"]),
            v["created_at"][:19],
            ", ".join(v["jobs"]) or "-",
        )
    console.print(table)


@datasets_app.command("validate")
def datasets_validate(
    path: Path,
    format: FormatOpt = None,
    shape: ShapeOpt = None,
    text_column: TextCol = None,
    label_column: LabelCol = None,
    instruction_column: InstructionCol = None,
    input_column: InputCol = None,
    output_column: OutputCol = None,
    prompt_column: PromptCol = None,
    completion_column: CompletionCol = None,
    messages_column: MessagesCol = None,
    chosen_column: ChosenCol = None,
    rejected_column: RejectedCol = None,
    model: Annotated[
        str | None,
        typer.Option("--model", help="Count tokens with this model's tokenizer."),
    ] = None,
    max_length: Annotated[
        int | None, typer.Option("--max-length", min=1, help="Warn about longer rows.")
    ] = None,
) -> None:
    """Report every problem of a file (row and field); exit 1 when there are errors.

    With --model, also the token-length distribution (min, median, p95, max) and
    the rows longer than --max-length (default: the model's limit).
    """
    fmt = cast("SourceFormat | None", _choice(format, FORMATS, "--format"))
    kind = cast("Shape | None", _choice(shape, SHAPES, "--shape"))
    columns = _columns(
        text=text_column,
        label=label_column,
        instruction=instruction_column,
        input=input_column,
        output=output_column,
        prompt=prompt_column,
        completion=completion_column,
        messages=messages_column,
        chosen=chosen_column,
        rejected=rejected_column,
    )
    service = get_service()
    token_length = None
    if model is not None:
        token_length, limit = guard(lambda: _token_counter(service, model))
        max_length = max_length or limit
    report = guard(
        lambda: service.validate_dataset(
            path,
            format=fmt,
            shape=kind,
            columns=columns,
            token_length=token_length,
            max_length=max_length,
        )
    )
    console.print(report.summary(), markup=False, highlight=False)
    if not report.ok:
        raise typer.Exit(1)


@datasets_app.command("delete")
def datasets_delete(
    ref: str,
    force: Annotated[
        bool, typer.Option("--force", help="Also delete versions that jobs trained on.")
    ] = False,
) -> None:
    """Delete NAME (every version) or NAME@VERSION."""
    from flextrain.public import split_ref

    service = get_service()
    name, version = split_ref(ref)
    deleted = guard(lambda: service.delete_dataset(name, version, force=force))
    console.print(f"Deleted {len(deleted)} version(s) of '{escape(name)}'.")


def _token_counter(
    service: TrainingService, model_id: str
) -> tuple[Callable[[str], int], int | None]:
    """A token counter from the model's tokenizer, and the model's length limit."""
    from flextrain.public import load_transformers

    path = service.resolve_model_config(model_id).path
    if not (path / "tokenizer_config.json").exists() and not (path / "tokenizer.json").exists():
        path = service.resolve_model(model_id).path
    load_transformers()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    limit = service.inspect_model(model_id).max_position_embeddings
    return (lambda text: len(tokenizer(text)["input_ids"])), limit
