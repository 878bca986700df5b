"""`flextrain hardware` and `flextrain check`: the machine, and the check before
training (support, memory parts, time, what would fit) printed as tables."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from flextrain.cli.common import console, get_service, guard, print_hardware

if TYPE_CHECKING:
    from flextrain.public import ModelCompatibility
from flextrain.cli.train import parse_training_type, wants_4bit


def hardware(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show the detected CPU, memory, GPUs and recommended precision."""
    from flextrain.hardware.detect import HardwareConstraints

    hw = HardwareConstraints.detect_current()
    if as_json:
        console.print_json(hw.model_dump_json())
    else:
        print_hardware(hw)


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
            ("reference model", m.reference_gb),
            ("sampling (KV cache)", m.generation_gb),
            ("4-bit dequantization", m.dequantization_gb),
            ("framework baseline", m.baseline_gb),
        ):
            optional = ("reference model", "sampling (KV cache)", "4-bit dequantization")
            if value or label not in optional:
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
        if t.batching:
            console.print(f"Batching: {t.batching} ({t.batching_reason}).", markup=False)
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


def check(
    model: Annotated[str, typer.Argument(help="Model id or folder.")],
    training_type: Annotated[
        str,
        typer.Option("--type", help="Training type or alias (lora, qlora, full, cpt, task)."),
    ] = "fine_tuning",
    batch_size: Annotated[int, typer.Option(min=1)] = 8,
    max_length: Annotated[int, typer.Option(min=8)] = 512,
    dataset: Annotated[str | None, typer.Option(help="Dataset, for time per epoch.")] = None,
    epochs: Annotated[int, typer.Option(min=1)] = 3,
    gradient_checkpointing: Annotated[
        bool, typer.Option("--gradient-checkpointing/--no-gradient-checkpointing")
    ] = False,
    lora_r: Annotated[int, typer.Option(min=1)] = 16,
    load_in_4bit: Annotated[
        bool, typer.Option("--load-in-4bit", help="QLoRA: the base held in 4 bits.")
    ] = False,
    optim: Annotated[
        str, typer.Option(help="Optimizer (adamw_torch, sgd, adamw_bnb_8bit...).")
    ] = "adamw_torch",
    full_weights: Annotated[
        bool,
        typer.Option("--full-weights", help="Preference types: every weight, not a LoRA adapter."),
    ] = False,
    num_generations: Annotated[
        int, typer.Option(min=2, help="grpo: completions sampled per prompt.")
    ] = 4,
    completion_length: Annotated[
        int, typer.Option(min=1, help="grpo: tokens per sampled completion.")
    ] = 64,
    probe: Annotated[bool, typer.Option(help="Calibrate with a few real steps.")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Will it fit and how long will it take: memory parts, time, verdict, fixes."""

    def run() -> ModelCompatibility:
        from flextrain.config.schemas import AdvancedTrainingConfig
        from flextrain.public import NO_DATASET

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
            load_in_4bit=load_in_4bit or wants_4bit(training_type),
            preference={
                "use_lora": not full_weights,
                "num_generations": num_generations,
                "max_completion_length": completion_length,
            },
        )
        return get_service().check_compatibility(
            model, ttype, config=cfg, dataset_id=dataset, probe=probe
        )

    report = guard(run)
    if as_json:
        console.print_json(report.model_dump_json())
    else:
        _print_check(report)
    if not report.is_compatible:
        raise typer.Exit(1)
