"""`flextrain train` and `flextrain demo`: a config from flags and a file, checked and
started, the job followed to its end.

The config is built here from what the user gave (flags win over the file; the mode
decides which fields are allowed) and everything else is the service's.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from flextrain.cli.common import console, err_console, get_service, guard, print_hardware
from flextrain.config.enums import TrainingMode, TrainingStatus, TrainingType

if TYPE_CHECKING:
    from flextrain.config.schemas import BasicTrainingConfig
    from flextrain.public import TrainingJob
from flextrain.cli.follow import follow_job


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


def train(
    model: Annotated[str | None, typer.Option(help="Model id or folder.")] = None,
    dataset: Annotated[str | None, typer.Option(help="Dataset name or file.")] = None,
    training_type: Annotated[
        str | None,
        typer.Option("--type", help="Training type or alias (lora, qlora, full, cpt)."),
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
    load_in_4bit: Annotated[
        bool,
        typer.Option(
            "--load-in-4bit",
            help="QLoRA: hold the base in 4 bits (bitsandbytes NF4) under the LoRA adapter "
            "(also: --type qlora).",
        ),
    ] = False,
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
    beta: Annotated[
        float | None,
        typer.Option(help="Preference types: preference.beta (pull towards the reference)."),
    ] = None,
    loss_type: Annotated[
        str | None, typer.Option(help="dpo/kto: preference.loss_type, e.g. ipo, robust.")
    ] = None,
    full_weights: Annotated[
        bool,
        typer.Option(
            "--full-weights", help="Preference types: train every weight, not a LoRA adapter."
        ),
    ] = False,
    on_divergence: Annotated[
        str | None,
        typer.Option(
            help="A NaN or infinite loss: health.on_divergence stop (default), skip the "
            "step, or rollback to the last checkpoint at half the learning rate."
        ),
    ] = None,
    reward: Annotated[
        list[str] | None,
        typer.Option(
            help="grpo: a built-in reward, NAME or NAME:ARG (contains:REGEX, format:REGEX, "
            "regex_match:REGEX, length:CHARS, exact_match); repeat for several."
        ),
    ] = None,
    num_generations: Annotated[
        int | None, typer.Option(help="grpo: completions sampled per prompt.")
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
            "load_in_4bit": True if load_in_4bit or wants_4bit(training_type) else None,
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
        preference = {
            "beta": beta,
            "loss_type": loss_type,
            "use_lora": False if full_weights else None,
            "rewards": [parse_reward(r) for r in reward] if reward else None,
            "num_generations": num_generations,
        }
        for block, given in (
            ("preference", {k: v for k, v in preference.items() if v is not None}),
            ("health", {"on_divergence": on_divergence} if on_divergence else {}),
        ):
            if given:
                from_file = values.get(block)
                values[block] = {**(from_file if isinstance(from_file, dict) else {}), **given}
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
        service = get_service()
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
        kind = cfg.training_type.value + (", 4-bit base" if cfg.load_in_4bit else "")
        if job.status == TrainingStatus.QUEUED:
            console.print(
                f"Job [bold]{job.job_id}[/] queued ({kind}); it starts when "
                "the machine has room (`flextrain queue` shows the queue)."
            )
            if detach:
                console.print(f"queued: {job.wait_reason}", markup=False, highlight=False)
        else:
            console.print(f"Job [bold]{job.job_id}[/] started ({kind}).")
        if detach:
            return job
        return follow_job(service, job.job_id, console)

    run_to_end(run)


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


# What a finished job is judged by, before and after: accuracy and loss; for preference
# runs the held-out preference accuracy and reward margin; for GRPO the mean reward.
SUMMARY_METRICS = (
    "initial_eval_accuracy",
    "eval_accuracy",
    "initial_eval_loss",
    "eval_loss",
    "initial_eval_preference_accuracy",
    "eval_preference_accuracy",
    "initial_eval_rewards/margins",
    "eval_rewards/margins",
    "initial_eval_reward",
    "eval_reward",
)


def run_to_end(run: Callable[[], TrainingJob]) -> None:
    """Run a command that follows a job, then say how the job ended (Ctrl-C: exit 130,
    the job cancelled by the follow loop)."""
    try:
        job = guard(run)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    _report_end(job)


def _report_end(job: TrainingJob) -> None:
    if job.status == TrainingStatus.COMPLETED:
        console.print(f"[green]Completed.[/] Model saved to {escape(str(job.model_path))}")
        for key in SUMMARY_METRICS:
            if key in job.metrics:
                console.print(f"  {key}: {job.metrics[key]:.4f}")
    elif job.status == TrainingStatus.FAILED:
        err_console.print(
            f"Job {job.job_id} failed: {job.error_message}", style="red", markup=False
        )
        err_console.print(f"Log: {job.log_path}", markup=False)
        raise typer.Exit(1)
    elif job.status in (TrainingStatus.DIVERGED, TrainingStatus.PAUSED):
        # The guard's message says what happened, the checkpoint kept and what to change.
        err_console.print(
            f"Job {job.job_id} {job.status.value}: {job.error_message}",
            style="red" if job.status == TrainingStatus.DIVERGED else "yellow",
            markup=False,
        )
        raise typer.Exit(1)
    elif job.status in (TrainingStatus.CANCELLED, TrainingStatus.INTERRUPTED):
        err_console.print(
            f"[yellow]Job {job.job_id} was {job.status.value}.[/] Continue it from its latest "
            f"checkpoint with: flextrain jobs resume {job.job_id}"
        )
        raise typer.Exit(1)
    else:
        console.print(f"Job {job.job_id} is {job.status.value}.")


def demo(
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 6,
) -> None:
    """Fine-tune the packaged all-MiniLM-L6-v2 with LoRA on demo/sentiment, offline."""
    from flextrain.demo import DEMO_CONFIG

    service = get_service()
    print_hardware(service.hardware())
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
        job = guard(run)
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
    "qlora": TrainingType.LORA_ADAPTATION,  # with load_in_4bit (see wants_4bit)
    "fine": TrainingType.FINE_TUNING,
    "finetune": TrainingType.FINE_TUNING,
    "cpt": TrainingType.CONTINUED_PRETRAINING,
    "pretrain": TrainingType.CONTINUED_PRETRAINING,
    "task": TrainingType.TASK_SPECIFIC,
    "classification": TrainingType.TASK_SPECIFIC,
    "full": TrainingType.FULL_TRAINING,
    "scratch": TrainingType.FULL_TRAINING,
}


def parse_reward(text: str) -> dict[str, Any]:
    """--reward NAME[:ARG] as a built-in reward spec: the argument is the regex of
    contains, format and regex_match, and the target characters of length."""
    name, _, arg = text.partition(":")
    name = name.strip()
    if name == "length":
        if not arg.strip().isdigit():
            raise ValueError(
                f"--reward: '{text}' needs a length in characters. Fix: e.g. --reward length:200."
            )
        return {"name": name, "target_length": int(arg)}
    spec: dict[str, Any] = {"name": name}
    if arg:
        spec["pattern"] = arg
    return spec


def wants_4bit(training_type: str | None) -> bool:
    """Whether `--type` named QLoRA: LoRA on a base held in 4 bits (load_in_4bit)."""
    return (training_type or "").strip().lower() == "qlora"


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
