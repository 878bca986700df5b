"""`flextrain models add | list | show | remove`: the local model registry.

Thin calls into the service's model registry; the service (and so SQLAlchemy and the
model layer) is imported only when a command runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from flextrain.cli.common import console, get_service, guard

if TYPE_CHECKING:
    from flextrain.public import RegisteredModel, TrainingJob

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def models_add(
    path: Annotated[Path, typer.Argument(help="A folder written by save_pretrained().")],
    name: Annotated[
        str, typer.Option("--name", help="The name jobs use as --model, e.g. 'team/llama'.")
    ],
    description: Annotated[str, typer.Option("--description")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Register a local model folder under a name (the folder is checked, not copied)."""
    service = get_service()
    model = guard(lambda: service.register_model(path, name, description))
    if as_json:
        console.print_json(model.model_dump_json())
        return
    console.print(
        f"Registered '{escape(model.name)}': {escape(model.architecture or '?')}, "
        f"{_count(model.num_parameters)} parameters, {_bytes(model.size_bytes)}; "
        f"use --model {escape(model.name)}."
    )


def models_list(as_json: JsonOpt = False) -> None:
    """Registered models: folders added by hand and models trained here."""
    models = guard(lambda: get_service().model_registry.list())
    if as_json:
        console.print_json(json.dumps([m.model_dump(mode="json") for m in models]))
        return
    table = Table(title="Registered models")
    for col in ("name", "source", "architecture", "parameters", "size", "base model", "path"):
        table.add_column(col)
    for m in models:
        table.add_row(
            escape(m.name),
            m.source + (" (adapter)" if m.adapter else ""),
            escape(m.architecture or "-"),
            _count(m.num_parameters),
            _bytes(m.size_bytes),
            escape(m.base_model or "-"),
            escape(m.path),
        )
    console.print(table)
    if not models:
        console.print("None yet. Register one with `flextrain models add PATH --name NAME`.")


def models_show(
    name: Annotated[str, typer.Argument(help="A registered name.")], as_json: JsonOpt = False
) -> None:
    """One registered model: what it is, where it came from, and the jobs that used it."""
    service = get_service()
    model = guard(lambda: service.get_registered_model(name))
    jobs = guard(lambda: service.jobs_using_model(name))
    if as_json:
        data: dict[str, Any] = {
            **model.model_dump(mode="json"),
            "jobs": [_job_summary(j) for j in jobs],
        }
        console.print_json(json.dumps(data))
        return
    _print_model(model)
    if not jobs:
        console.print("No job has trained from it yet.")
        return
    table = Table(title="Jobs that trained from it (newest first)")
    for col in ("job", "status", "training type", "owner", "created"):
        table.add_column(col)
    for j in jobs:
        table.add_row(
            j.job_id,
            j.status.value,
            j.training_type.value,
            escape(j.owner or "-"),
            j.created_at.isoformat()[:19],
        )
    console.print(table)


def models_remove(name: Annotated[str, typer.Argument(help="A registered name.")]) -> None:
    """Forget a registration; the model's files are left where they are."""
    model = guard(lambda: get_service().model_registry.remove(name))
    console.print(
        f"Removed the registration '{escape(model.name)}'; its files in {escape(model.path)} "
        "were left as they are."
    )


def add_registry_commands(app: typer.Typer) -> None:
    """Put the registry's commands on the `models` group."""
    app.command("add")(models_add)
    app.command("list")(models_list)
    app.command("show")(models_show)
    app.command("remove")(models_remove)


def _print_model(model: RegisteredModel) -> None:
    kind = "LoRA adapter" if model.adapter else "model"
    console.print(f"[bold]{escape(model.name)}[/] {escape(model.description)}")
    rows: list[tuple[str, str]] = [
        ("source", f"{model.source} {kind}"),
        ("path", model.path),
        ("architecture", f"{model.architecture or '-'} ({model.model_type or '?'})"),
        ("parameters", _count(model.num_parameters)),
        ("size", _bytes(model.size_bytes)),
        ("training types", ", ".join(model.training_types) or "-"),
        ("owner", model.owner or "-"),
        ("registered", model.created_at.isoformat()[:19]),
    ]
    if model.source == "trained":
        version = (model.dataset_version or "-")[:12]
        rows += [
            ("base model", model.base_model or "-"),
            ("trained by job", model.job_id or "-"),
            ("dataset", f"{model.dataset_id or '-'} (version {version})"),
            ("metrics", _metrics(model.metrics)),
        ]
    for label, value in rows:
        console.print(f"  {label:<15} {escape(value)}")


def _metrics(metrics: dict[str, Any] | None) -> str:
    values = metrics or {}
    keys = ("train_loss", "eval_loss", "eval_accuracy", "train_runtime")
    shown = [f"{k} {values[k]:.4g}" for k in keys if isinstance(values.get(k), int | float)]
    return ", ".join(shown) or "-"


def _job_summary(job: TrainingJob) -> dict[str, Any]:
    return {
        "job_id": job.job_id,
        "status": job.status.value,
        "training_type": job.training_type.value,
        "owner": job.owner,
        "created_at": job.created_at.isoformat(),
    }


def _count(n: int | None) -> str:
    if n is None:
        return "-"
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= size:
            return f"{n / size:.1f}{suffix}"
    return str(n)


def _bytes(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"
