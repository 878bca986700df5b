"""`flextrain` commands. Thin: parse, call the service, print.

Every known error (bad config, unknown model or dataset, wrong job state) is
printed as a message naming the problem and the fix, with exit code 2 for bad
input and 1 for a failed job; no traceback reaches the user.

The service, the store, the data layer and the estimators are imported when a
command runs: `flextrain --help` (and Typer's shell completion) builds every
command but runs none; tests/test_startup.py checks what it loads. Only the
config enums are needed up front (option types, type aliases); importing them
runs `flextrain.config`'s `__init__`, which also loads the pydantic schemas,
the larger part of what `--help` still imports.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from flextrain.cli.admin import audit, users_app
from flextrain.cli.checkpoints import checkpoints
from flextrain.cli.common import (
    console,
    end_without_teardown,
    err_console,
    get_service,
    guard,
)
from flextrain.cli.datasets import datasets_app
from flextrain.cli.follow import follow_job
from flextrain.cli.models import models_app
from flextrain.cli.models_after import evaluate, try_model
from flextrain.cli.queue import queue, scheduler
from flextrain.cli.serve import serve
from flextrain.cli.worker import worker_app
from flextrain.config.enums import TrainingMode, TrainingStatus, TrainingType

if TYPE_CHECKING:
    from flextrain.config.schemas import BasicTrainingConfig
    from flextrain.hardware.detect import HardwareConstraints
    from flextrain.jobs.store import TrainingJob
    from flextrain.models.compatibility import ModelCompatibility


class _ProcessApp(typer.Typer):
    """The `flextrain` command. Run as a process's entry point (console script, `python
    -m flextrain`), it ends that process without unloading the training libraries
    (`end_without_teardown`); tests invoke its click command and never get here."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except SystemExit as exc:
            end_without_teardown(exc)
            raise


app = _ProcessApp(
    name="flextrain",
    help="Check, estimate and really train Hugging Face models on your own hardware.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
jobs_app = typer.Typer(help="List, inspect and cancel training jobs.", no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")
app.add_typer(datasets_app, name="datasets")
app.add_typer(users_app, name="users")
app.add_typer(worker_app, name="worker")
app.add_typer(models_app, name="models")
app.command("audit")(audit)
app.command("try")(try_model)
app.command("evaluate")(evaluate)
app.command()(serve)
app.command()(queue)
app.command()(scheduler)

_guard = guard
_service = get_service


def _print_hardware(hw: HardwareConstraints) -> None:
    table = Table(title="Hardware", show_header=False)
    table.add_row("Platform", hw.platform)
    table.add_row("CPU cores", str(hw.cpu_cores))
    table.add_row(
        "Memory available", f"{hw.available_memory_gb:.1f} of {hw.total_memory_gb:.1f} GB"
    )
    table.add_row("GPUs", ", ".join(hw.gpu_names) or "none")
    table.add_row("GPU memory free", f"{hw.available_gpu_memory_gb:.1f} GB")
    table.add_row("Mixed precision", "yes" if hw.supports_mixed_precision else "no")
    table.add_row("Recommended precision", hw.recommended_precision)
    table.add_row("Disk free", f"{hw.disk_free_gb:.1f} GB")
    console.print(table)


@app.command()
def hardware(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show the detected CPU, memory, GPUs and recommended precision."""
    from flextrain.hardware.detect import HardwareConstraints

    hw = HardwareConstraints.detect_current()
    if as_json:
        console.print_json(hw.model_dump_json())
    else:
        _print_hardware(hw)


def _load_config_file(path: Path) -> dict[str, Any]:
    """The mapping in a YAML (or JSON) file; a syntax error is one line naming the file,
    the line and column, and the problem."""
    from flextrain.config.yamltext import YamlTextError, load_config_text

    if not path.is_file():
        raise ValueError(f"--config: file '{path}' does not exist.")
    try:
        data = load_config_text(path.read_text()) or {}
    except YamlTextError as exc:
        raise ValueError(
            f"--config: {path}{exc.where}: {exc.problem}. Fix: correct the YAML at that place."
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"--config: cannot read {path}: {exc}.") from None
    if not isinstance(data, dict):
        raise ValueError(f"--config: '{path}' must hold a mapping of config keys.")
    return data


def build_config(values: dict[str, Any], mode: str | None = None) -> BasicTrainingConfig:
    """The config of `mode`; without one, the simplest mode that has every key given.

    Keys of a wider mode than the one asked for are refused by name (a basic job quietly
    made advanced would not be the job the user asked for); unknown keys are left to the
    schema, which names them.
    """
    from flextrain.config.schemas import (
        AdvancedTrainingConfig,
        BasicTrainingConfig,
        ExpertTrainingConfig,
    )

    modes: dict[str, type[BasicTrainingConfig]] = {
        "basic": BasicTrainingConfig,
        "advanced": AdvancedTrainingConfig,
        "expert": ExpertTrainingConfig,
    }
    if mode is None:
        given = set(values)
        mode = next((m for m, cls in modes.items() if given <= set(cls.model_fields)), "expert")
    cls = modes[mode]
    wider = set(values) - set(cls.model_fields)
    if wider and wider <= set(ExpertTrainingConfig.model_fields):
        needed = "advanced" if wider <= set(AdvancedTrainingConfig.model_fields) else "expert"
        keys = ", ".join(sorted(wider))
        article = "an" if mode[0] in "ae" else "a"
        what = f"is not {article} {mode} setting" if len(wider) == 1 else f"are not {mode} settings"
        raise ValueError(
            f"--mode {mode}: {keys} {what}. Fix: use --mode {needed}, or remove "
            f"{'it' if len(wider) == 1 else 'them'} from the config."
        )
    return cls(**values)


@app.command()
def train(
    model: Annotated[str | None, typer.Option(help="Model id or folder.")] = None,
    dataset: Annotated[str | None, typer.Option(help="Dataset name or file.")] = None,
    training_type: Annotated[
        str | None, typer.Option("--type", help="Training type or alias (lora, full, cpt).")
    ] = None,
    preset: Annotated[str | None, typer.Option(help="quick, balanced or thorough.")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML/JSON file of config keys.")] = None,
    mode: Annotated[
        TrainingMode | None,
        typer.Option(help="basic, advanced or expert (default: from the keys given)."),
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="num_epochs")] = None,
    batch_size: Annotated[
        str | None, typer.Option(help="batch_size, or 'auto': the largest that fits.")
    ] = None,
    max_length: Annotated[int | None, typer.Option(help="max_length in tokens")] = None,
    learning_rate: Annotated[float | None, typer.Option(help="learning_rate")] = None,
    mixed_precision: Annotated[
        bool | None, typer.Option("--mixed-precision/--no-mixed-precision")
    ] = None,
    gradient_checkpointing: Annotated[
        bool | None, typer.Option("--gradient-checkpointing/--no-gradient-checkpointing")
    ] = None,
    eval_split: Annotated[float | None, typer.Option(help="Held-out share.")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    logging_steps: Annotated[int | None, typer.Option()] = None,
    save_steps: Annotated[int | None, typer.Option()] = None,
    lora_target_modules: Annotated[
        str | None, typer.Option(help="Comma-separated module names.")
    ] = None,
    output_dir: Annotated[str | None, typer.Option()] = None,
    run_name: Annotated[str | None, typer.Option()] = None,
    early_stopping_patience: Annotated[
        int | None, typer.Option(help="Stop after N evaluations without improvement.")
    ] = None,
    tracking: Annotated[
        str | None, typer.Option(help="Also log to: mlflow, tensorboard (comma-separated).")
    ] = None,
    num_processes: Annotated[
        int | None,
        typer.Option(help="Training processes on this machine (one per GPU); >1 uses torchrun."),
    ] = None,
    num_nodes: Annotated[
        int | None,
        typer.Option(help="Machines taking part; the others run `flextrain worker join`."),
    ] = None,
    strategy: Annotated[
        str | None, typer.Option(help="distributed_strategy: ddp, fsdp or deepspeed.")
    ] = None,
    priority: Annotated[
        int,
        typer.Option(min=-1000, max=1000, help="Queue priority: higher starts first (default 0)."),
    ] = 0,
    force: Annotated[
        bool,
        typer.Option("--force", help="Start even if the memory estimate says it does not fit."),
    ] = False,
    detach: Annotated[bool, typer.Option(help="Start and return; don't follow.")] = False,
    no_start: Annotated[
        bool,
        typer.Option(
            "--no-start",
            help="Create the job (every check included) and print its id; start it later "
            "with `flextrain jobs start ID`.",
        ),
    ] = False,
) -> None:
    """Create a job and train it in the foreground (Ctrl-C cancels cleanly).

    When the machine is busy the job waits in the queue (`flextrain queue` says why)
    and starts as soon as its cores and GPUs are free.
    """

    def run() -> TrainingJob:
        values: dict[str, Any] = _load_config_file(config) if config else {}
        flags = {
            "model_id": model,
            "dataset_id": dataset,
            "training_type": parse_training_type(training_type).value if training_type else None,
            "preset": preset,
            "num_epochs": epochs,
            "batch_size": _batch_size_flag(batch_size),
            "max_length": max_length,
            "learning_rate": learning_rate,
            "use_mixed_precision": mixed_precision,
            "gradient_checkpointing": gradient_checkpointing,
            "eval_split": eval_split,
            "seed": seed,
            "logging_steps": logging_steps,
            "save_steps": save_steps,
            "lora_target_modules": (
                [m.strip() for m in lora_target_modules.split(",") if m.strip()]
                if lora_target_modules
                else None
            ),
            "output_dir": output_dir,
            "run_name": run_name,
            "early_stopping_patience": early_stopping_patience,
            "tracking": [t.strip() for t in tracking.split(",") if t.strip()] if tracking else None,
            "num_processes": num_processes,
            "num_nodes": num_nodes,
            "distributed_strategy": strategy,
            "ignore_memory_estimate": True if force else None,
        }
        values.update({k: v for k, v in flags.items() if v is not None})
        missing = [
            f"--{k}"
            for k, key in (
                ("model", "model_id"),
                ("dataset", "dataset_id"),
                ("type", "training_type"),
            )
            if key not in values
        ]
        if missing:
            raise ValueError(f"Missing {', '.join(missing)} (or set them in --config).")
        cfg = build_config(values, mode.value if mode else None)
        service = _service()
        if not no_start:  # its imports overlap with validating the job
            service.start_warm_worker()
        job = service.create_job(cfg, strict_hardware=True, priority=priority)
        for warning in job.warnings:
            err_console.print(f"warning: {warning}", style="yellow", markup=False)
        if no_start:
            console.print(
                f"Job [bold]{job.job_id}[/] created ({cfg.training_type.value}), pending. "
                f"Start it with: flextrain jobs start {job.job_id}"
            )
            return job
        job = service.start_job(job.job_id)
        if job.status == TrainingStatus.QUEUED:
            console.print(
                f"Job [bold]{job.job_id}[/] queued ({cfg.training_type.value}); it starts when "
                "the machine has room (`flextrain queue` shows the queue)."
            )
            if detach:
                console.print(f"queued: {job.wait_reason}", markup=False, highlight=False)
        else:
            console.print(f"Job [bold]{job.job_id}[/] started ({cfg.training_type.value}).")
        if detach:
            return job
        return follow_job(service, job.job_id, console)

    _run_to_end(run)


def _batch_size_flag(value: str | None) -> int | str | None:
    """--batch-size as the config wants it: a whole number or 'auto'."""
    if value is None or value.strip().lower() == "auto":
        return value and "auto"
    if value.strip().isdigit():
        return int(value)
    raise ValueError(
        f"--batch-size: '{value}' is neither a whole number nor 'auto'. Fix: give e.g. "
        "--batch-size 8, or --batch-size auto for the largest that fits."
    )


def _run_to_end(run: Callable[[], TrainingJob]) -> None:
    """Run a command that follows a job, then say how the job ended (Ctrl-C: exit 130,
    the job cancelled by the follow loop)."""
    try:
        job = _guard(run)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    _report_end(job)


def _report_end(job: TrainingJob) -> None:
    if job.status == TrainingStatus.COMPLETED:
        console.print(f"[green]Completed.[/] Model saved to {escape(str(job.model_path))}")
        for key in ("initial_eval_accuracy", "eval_accuracy", "initial_eval_loss", "eval_loss"):
            if key in job.metrics:
                console.print(f"  {key}: {job.metrics[key]:.4f}")
    elif job.status == TrainingStatus.FAILED:
        err_console.print(
            f"Job {job.job_id} failed: {job.error_message}", style="red", markup=False
        )
        err_console.print(f"Log: {job.log_path}", markup=False)
        raise typer.Exit(1)
    elif job.status in (TrainingStatus.CANCELLED, TrainingStatus.INTERRUPTED):
        err_console.print(
            f"[yellow]Job {job.job_id} was {job.status.value}.[/] Continue it from its latest "
            f"checkpoint with: flextrain jobs resume {job.job_id}"
        )
        raise typer.Exit(1)
    else:
        console.print(f"Job {job.job_id} is {job.status.value}.")


@app.command()
def demo(
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 6,
) -> None:
    """Fine-tune the packaged all-MiniLM-L6-v2 with LoRA on demo/sentiment, offline."""
    from flextrain.demo import DEMO_CONFIG

    service = _service()
    _print_hardware(service.hardware())
    cfg = DEMO_CONFIG.model_copy(update={"num_epochs": epochs})
    console.print(
        f"Training [bold]{cfg.model_id}[/] with LoRA (r={cfg.lora_r}) on [bold]{cfg.dataset_id}[/]"
        f" for {cfg.num_epochs} epochs; {cfg.eval_split:.0%} of the data is held out."
    )

    def run() -> TrainingJob:
        service.start_warm_worker()
        job = service.create_job(cfg, strict_hardware=True)
        job = service.start_job(job.job_id)
        return follow_job(service, job.job_id, console)

    try:
        job = _guard(run)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    if job.status != TrainingStatus.COMPLETED:
        _report_end(job)
        return
    before = job.metrics.get("initial_eval_accuracy")
    after = job.metrics.get("eval_accuracy")
    console.print(
        f"\nHeld-out accuracy ({job.metrics.get('eval_rows')} examples): "
        f"[bold]{before:.3f}[/] before training -> [bold green]{after:.3f}[/] after."
    )
    console.print(f"LoRA adapter saved to [bold]{escape(str(job.model_path))}[/]")


_TYPE_ALIASES = {
    "lora": TrainingType.LORA_ADAPTATION,
    "fine": TrainingType.FINE_TUNING,
    "finetune": TrainingType.FINE_TUNING,
    "cpt": TrainingType.CONTINUED_PRETRAINING,
    "pretrain": TrainingType.CONTINUED_PRETRAINING,
    "task": TrainingType.TASK_SPECIFIC,
    "classification": TrainingType.TASK_SPECIFIC,
    "full": TrainingType.FULL_TRAINING,
    "scratch": TrainingType.FULL_TRAINING,
}


def parse_training_type(value: str) -> TrainingType:
    """A training type by its value or a short alias (lora, full, cpt, task, fine)."""
    key = value.strip().lower().replace("-", "_")
    if key in _TYPE_ALIASES:
        return _TYPE_ALIASES[key]
    try:
        return TrainingType(key)
    except ValueError:
        names = ", ".join([t.value for t in TrainingType] + sorted(_TYPE_ALIASES))
        raise ValueError(
            f"--type: '{value}' is not a training type. Fix: use one of {names}."
        ) from None


def _gb(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} GB"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _print_check(report: ModelCompatibility) -> None:
    facts = Table(title=f"Model {escape(report.model_id)}", show_header=False)
    facts.add_row("Architecture", escape(str(report.architecture)))
    facts.add_row("Parameters", f"{report.num_parameters:,}" if report.num_parameters else "-")
    facts.add_row("Objective", str(report.objective))
    facts.add_row("Task heads", ", ".join(report.task_heads) or "-")
    facts.add_row("Supported types", ", ".join(t.value for t in report.supported_training_types))
    for name, why in report.unsupported_reasons.items():
        facts.add_row(f"  not {name}", why)
    facts.add_row("LoRA targets", ", ".join(report.lora_target_modules) or "-")
    facts.add_row("Max sequence", str(report.max_sequence_length))
    facts.add_row(
        "Gradient checkpointing", "yes" if report.supports_gradient_checkpointing else "no"
    )
    facts.add_row("Frameworks", ", ".join(f"{k} {v}" for k, v in report.framework_versions.items()))
    console.print(facts)
    if report.memory is not None:
        m = report.memory
        mem = Table(title=f"Memory ({m.source}, {m.device})")
        mem.add_column("part")
        mem.add_column("estimate", justify="right")
        for label, value in (
            ("weights", m.weights_gb),
            ("gradients", m.gradients_gb),
            ("optimizer states", m.optimizer_gb),
            ("activations", m.activations_gb),
            ("logits / loss", m.logits_gb),
            ("framework baseline", m.baseline_gb),
        ):
            mem.add_row(label, _gb(value))
        mem.add_row("[bold]peak", f"[bold]{_gb(m.peak_gb)}")
        mem.add_row("available", _gb(m.available_gb))
        console.print(mem)
        console.print(f"Trainable parameters: {m.trainable_parameters:,} of {m.total_parameters:,}")
        for note in m.notes:
            console.print(f"  note: {note}", markup=False)
    if report.time is not None:
        t = report.time
        where = f" (assuming {t.assumption})" if t.assumption else ""
        console.print(
            f"Time: about {_duration(t.seconds)} ({_duration(t.low_seconds)} to "
            f"{_duration(t.high_seconds)}) for {t.epochs:g} epochs, {t.optimizer_steps} steps, "
            f"{t.tokens_per_epoch:,} tokens per epoch{where}; source: {t.source}.",
            markup=False,
        )
    if report.probe:
        p = report.probe
        console.print(
            f"Probe: {len(p['points'])} points in {p['wall_seconds']:.1f} s; "
            f"largest batch that fits: {p['largest_batch']}."
        )
    if report.is_compatible:
        console.print(
            f"[green]Compatible.[/] Recommended batch size: {report.recommended_batch_size}"
        )
    else:
        console.print("[red]Not compatible:")
        for issue in report.issues:
            console.print(f"  - {issue}", markup=False, style="red")
    for warning in report.warnings:
        console.print(f"warning: {warning}", markup=False, style="yellow")
    if report.recommendation_details:
        recs = Table(title="What would fit")
        recs.add_column("change")
        recs.add_column("peak", justify="right")
        recs.add_column("fits")
        for r in report.recommendation_details:
            recs.add_row(escape(r.description), _gb(r.peak_gb), "yes" if r.fits else "no")
        console.print(recs)


@app.command()
def check(
    model: Annotated[str, typer.Argument(help="Model id or folder.")],
    training_type: Annotated[
        str, typer.Option("--type", help="Training type or alias (lora, full, cpt, task).")
    ] = "fine_tuning",
    batch_size: Annotated[int, typer.Option(min=1)] = 8,
    max_length: Annotated[int, typer.Option(min=8)] = 512,
    dataset: Annotated[str | None, typer.Option(help="Dataset, for time per epoch.")] = None,
    epochs: Annotated[int, typer.Option(min=1)] = 3,
    gradient_checkpointing: Annotated[
        bool, typer.Option("--gradient-checkpointing/--no-gradient-checkpointing")
    ] = False,
    lora_r: Annotated[int, typer.Option(min=1)] = 16,
    optim: Annotated[
        str, typer.Option(help="Optimizer (adamw_torch, sgd, adamw_bnb_8bit...).")
    ] = "adamw_torch",
    probe: Annotated[bool, typer.Option(help="Calibrate with a few real steps.")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Will it fit and how long will it take: memory parts, time, verdict, fixes."""

    def run() -> ModelCompatibility:
        from flextrain.config.schemas import AdvancedTrainingConfig
        from flextrain.models.compatibility import NO_DATASET

        ttype = parse_training_type(training_type)
        cfg = AdvancedTrainingConfig(
            model_id=model,
            dataset_id=dataset or NO_DATASET,
            training_type=ttype,
            batch_size=batch_size,
            max_length=max_length,
            num_epochs=epochs,
            gradient_checkpointing=gradient_checkpointing,
            lora_r=lora_r,
            lora_alpha=2 * lora_r,
            optim=optim,
        )
        return _service().check_compatibility(
            model, ttype, config=cfg, dataset_id=dataset, probe=probe
        )

    report = _guard(run)
    if as_json:
        console.print_json(report.model_dump_json())
    else:
        _print_check(report)
    if not report.is_compatible:
        raise typer.Exit(1)


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
    jobs = _guard(lambda: _service().list_jobs(status=status, limit=limit))
    if as_json:
        console.print_json(json.dumps([j.model_dump(mode="json") for j in jobs]))
    else:
        console.print(_jobs_table(jobs))


@jobs_app.command("show")
def jobs_show(job_id: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Everything about one job."""
    job = _guard(lambda: _service().require_job(job_id))
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
    service = _guard(_service)
    if system:
        rows = _guard(lambda: service.system_samples(job_id))
        first = ["at"]
        title = f"System samples of job {job_id} ({len(rows)} rows)"
    else:
        rows = _guard(lambda: service.metric_history(job_id))
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
    path = _guard(lambda: _service().plot_jobs(job_ids, out))
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
        spec = _guard(lambda: _service().plan_start(job_id))
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
        service = _service()
        service.start_warm_worker()
        job = service.start_job(job_id)
        if job.status == TrainingStatus.QUEUED:
            console.print(f"Job [bold]{job_id}[/] queued: {escape(job.wait_reason or '')}")
        else:
            console.print(f"Job [bold]{job_id}[/] started.")
        if detach:
            return job
        return follow_job(service, job_id, console)

    _run_to_end(run)


@jobs_app.command("resume")
def jobs_resume(
    job_id: str,
    detach: Annotated[bool, typer.Option(help="Resume and return; don't follow.")] = False,
) -> None:
    """Continue an interrupted, cancelled or failed job from its latest checkpoint."""

    def run() -> TrainingJob:
        service = _service()
        job = service.resume_job(job_id)
        notice = [e for e in service.events(job_id) if e.kind == "resumed"][-1]
        console.print(f"Job [bold]{job_id}[/]: {escape(notice.message)}")
        if detach:
            return job
        return follow_job(service, job_id, console)

    _run_to_end(run)


@jobs_app.command("events")
def jobs_events(job_id: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """What happened to a job: memory warnings, interruptions, resumes, early stops."""
    events = _guard(lambda: _service().events(job_id))
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
    job = _guard(lambda: _service().cancel_job(job_id))
    console.print(f"Job {job.job_id} is {job.status.value}.")


@jobs_app.command("logs")
def jobs_logs(job_id: str, tail: Annotated[int, typer.Option(min=1)] = 100) -> None:
    """The last lines of a job's log."""
    console.print(_guard(lambda: _service().read_log(job_id, tail)), markup=False, highlight=False)


jobs_app.command("checkpoints")(checkpoints)


def main() -> None:  # pragma: no cover - console-script shim
    app()


__all__ = ["TrainingMode", "app", "build_config", "main"]


if __name__ == "__main__":  # python -m flextrain.cli.main
    main()
