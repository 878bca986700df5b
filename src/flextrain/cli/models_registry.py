"""`flextrain models add | list | show | promote | diff | remove`: the model registry.

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
    from flextrain.public import ModelDiff, RegisteredModel, TrainingJob

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def models_add(
    path: Annotated[Path, typer.Argument(help="A folder written by save_pretrained().")],
    name: Annotated[
        str, typer.Option("--name", help="The name jobs use as --model, e.g. 'team/llama'.")
    ],
    description: Annotated[str, typer.Option("--description")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Register a local model folder under a name (the folder is checked, not copied).

    A name that exists gets the folder as its next version."""
    service = get_service()
    model = guard(lambda: service.register_model(path, name, description))
    if as_json:
        console.print_json(model.model_dump_json())
        return
    console.print(
        f"Registered '{escape(model.ref)}': {escape(model.architecture or '?')}, "
        f"{_count(model.num_parameters)} parameters, {_bytes(model.size_bytes)}; "
        f"use --model {escape(model.name)} (the latest version) or --model {escape(model.ref)}."
    )


def models_list(
    all_versions: Annotated[
        bool, typer.Option("--all-versions", help="Every version, not only the latest.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Registered models (the latest version of each name): folders added by hand and
    models trained here."""
    service = get_service()
    models = guard(lambda: service.model_registry.list(all_versions=all_versions))
    if as_json:
        console.print_json(json.dumps([m.model_dump(mode="json") for m in models]))
        return
    counts: dict[str, int] = {}
    if not all_versions:
        for m in guard(lambda: service.model_registry.list(all_versions=True)):
            counts[m.name] = counts.get(m.name, 0) + 1
    table = Table(title="Registered models")
    columns = ("name", "version", "source", "architecture", "parameters", "size", "base model")
    for col in (*columns, "path"):
        table.add_column(col)
    for m in models:
        version = str(m.version)
        if counts.get(m.name, 1) > 1:
            version += f" (of {counts[m.name]})"
        table.add_row(
            escape(m.name),
            version + ("" if not all_versions or not m.latest else " latest"),
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
    name: Annotated[str, typer.Argument(help="NAME (its latest version) or NAME:VERSION.")],
    as_json: JsonOpt = False,
) -> None:
    """One registered version: what it is, where it came from, the name's other versions,
    and the jobs that used it."""
    service = get_service()
    model = guard(lambda: service.get_registered_model(name))
    versions = guard(lambda: service.model_versions(model.name))
    jobs = guard(lambda: service.jobs_using_model(name))
    if as_json:
        data: dict[str, Any] = {
            **model.model_dump(mode="json"),
            "versions": [_version_summary(v) for v in versions],
            "jobs": [_job_summary(j) for j in jobs],
        }
        console.print_json(json.dumps(data))
        return
    _print_model(model)
    if len(versions) > 1:
        _print_versions(versions, model.version)
    if not jobs:
        console.print("No job has trained from it yet.")
        return
    table = Table(title="Jobs that trained from it (newest first)")
    for col in ("job", "model id", "status", "training type", "owner", "created"):
        table.add_column(col)
    for j in jobs:
        table.add_row(
            j.job_id,
            escape(j.model_id),
            j.status.value,
            j.training_type.value,
            escape(j.owner or "-"),
            j.created_at.isoformat()[:19],
        )
    console.print(table)


def models_promote(
    source: Annotated[
        str, typer.Argument(help="A registered version (NAME or NAME:VERSION) or a job id.")
    ],
    name: Annotated[str, typer.Option("--name", help="The name it becomes the latest of.")],
    description: Annotated[str, typer.Option("--description")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Make a version or a completed job's model the newest version of a name, so jobs
    that name it train from it. Its lineage comes along; the files are not copied."""
    model = guard(lambda: get_service().promote_model(source, name, description))
    if as_json:
        console.print_json(model.model_dump_json())
        return
    console.print(
        f"Promoted {escape(source)} to '{escape(model.ref)}': '{escape(model.name)}' now "
        f"means {escape(model.path)}."
    )


def models_diff(
    a: Annotated[str, typer.Argument(help="The first version (NAME or NAME:VERSION).")],
    b: Annotated[str, typer.Argument(help="The second version.")],
    as_json: JsonOpt = False,
) -> None:
    """Two versions side by side: lineage, the config settings that differ, and every
    metric with its change (second minus first)."""
    result = guard(lambda: get_service().diff_models(a, b))
    if as_json:
        console.print_json(result.model_dump_json())
        return
    _print_diff(result)


def models_remove(
    name: Annotated[str, typer.Argument(help="NAME:VERSION, or NAME for every version.")],
) -> None:
    """Forget one version, or every version of a name; the files are left where they are."""
    removed = guard(lambda: get_service().remove_model_versions(name))
    what = (
        f"'{escape(removed[0].ref)}'"
        if ":" in name
        else f"'{escape(removed[0].name)}' ({len(removed)} version(s))"
    )
    paths = ", ".join(sorted({escape(m.path) for m in removed}))
    console.print(f"Removed {what}; the files in {paths} were left as they are.")


def add_registry_commands(app: typer.Typer) -> None:
    """Put the registry's commands on the `models` group."""
    app.command("add")(models_add)
    app.command("list")(models_list)
    app.command("show")(models_show)
    app.command("promote")(models_promote)
    app.command("diff")(models_diff)
    app.command("remove")(models_remove)


def _print_model(model: RegisteredModel) -> None:
    kind = "LoRA adapter" if model.adapter else "model"
    latest = " (latest)" if model.latest else ""
    console.print(f"[bold]{escape(model.ref)}[/]{latest} {escape(model.description)}")
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
            ("config hash", (model.config_hash or "-")[:12]),
            ("metrics", _metrics(model.metrics)),
        ]
    for label, value in rows:
        console.print(f"  {label:<15} {escape(value)}")


def _print_versions(versions: list[RegisteredModel], shown: int) -> None:
    table = Table(title=f"Versions of {escape(versions[0].name)} (the last is the latest)")
    for col in ("version", "source", "job", "base model", "config", "metrics", "registered"):
        table.add_column(col)
    for v in versions:
        mark = " *" if v.version == shown else ""
        table.add_row(
            f"{v.version}{mark}",
            v.source + (" (adapter)" if v.adapter else ""),
            v.job_id or "-",
            escape(v.base_model or "-"),
            (v.config_hash or "-")[:12],
            escape(_metrics(v.metrics)),
            v.created_at.isoformat()[:19],
        )
    console.print(table)


def _print_diff(result: ModelDiff) -> None:
    same = "the same config" if result.same_config else "different configs"
    if not result.configs_known:
        same = "no training config recorded for both (a folder registered by hand has none)"
    console.print(f"[bold]{escape(result.a)}[/] vs [bold]{escape(result.b)}[/]: {same}")
    for title, changes in (("Lineage", result.lineage), ("Config", result.config)):
        if not changes:
            console.print(f"{title}: no difference.")
            continue
        table = Table(title=title)
        for col in ("", result.a, result.b):
            table.add_column(escape(col))
        for c in changes:
            table.add_row(escape(c.key), escape(_value(c.a)), escape(_value(c.b)))
        console.print(table)
    if not result.metrics:
        console.print("Metrics: neither version has any.")
        return
    table = Table(title="Metrics")
    for col in ("", result.a, result.b, "change"):
        table.add_column(escape(col))
    for m in result.metrics:
        change = "-" if m.change is None else f"{m.change:+.4g}"
        table.add_row(escape(m.key), _number(m.a), _number(m.b), change)
    console.print(table)


def _value(value: Any) -> str:
    if value is None:
        return "-"
    return value if isinstance(value, str) else json.dumps(value)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _version_summary(model: RegisteredModel) -> dict[str, Any]:
    return {
        "version": model.version,
        "ref": model.ref,
        "latest": model.latest,
        "source": model.source,
        "job_id": model.job_id,
        "config_hash": model.config_hash,
        "created_at": model.created_at.isoformat(),
    }


def _metrics(metrics: dict[str, Any] | None) -> str:
    values = metrics or {}
    keys = ("train_loss", "eval_loss", "eval_accuracy", "train_runtime")
    shown = [f"{k} {values[k]:.4g}" for k in keys if isinstance(values.get(k), int | float)]
    return ", ".join(shown) or "-"


def _job_summary(job: TrainingJob) -> dict[str, Any]:
    return {
        "job_id": job.job_id,
        "model_id": job.model_id,
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
