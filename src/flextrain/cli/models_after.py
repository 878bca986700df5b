"""After training: `flextrain models merge|export`, `flextrain try`, `flextrain evaluate`.

Each prints the trained model beside its base, so the table answers "what did
training change?". The work (loading models, generating, evaluating) runs in
this process; the service and torch are imported when a command runs.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from rich.markup import escape
from rich.table import Table

from flextrain.cli.common import console, err_console, get_service, guard

if TYPE_CHECKING:
    from flextrain.public import EvaluationResult, ModelAnswer, ParityReport, TryResult

JobArg = Annotated[str, typer.Argument(help="Id of a completed job.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _size(n: int) -> str:
    return f"{n / 1024**2:.1f} MB" if n >= 1024**2 else f"{n / 1024:.1f} KB"


def merge(
    job_id: JobArg,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Folder to write (default: the job's folder, jobs/ID/merged)."),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace what --out holds already.")
    ] = False,
    as_json: AsJson = False,
) -> None:
    """Merge a LoRA job's adapter into its base model; save it as safetensors."""
    result = guard(lambda: get_service().merge_model(job_id, out, force=force))
    if as_json:
        console.print_json(result.model_dump_json())
        return
    console.print(
        f"[green]Merged[/] job {job_id}'s adapter into {escape(result.base_model)}: "
        f"{escape(result.path)} ({_size(result.size_bytes)}; {', '.join(result.files)})"
    )


def export(
    job_id: JobArg,
    out_dir: Annotated[Path, typer.Argument(help="Folder to write (new or empty).")],
    adapter_only: Annotated[
        bool,
        typer.Option("--adapter-only", help="LoRA jobs: the adapter alone, not merged weights."),
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Replace what OUT_DIR holds already.")
    ] = False,
    full_config: Annotated[
        bool,
        typer.Option("--full-config", help="Every config field in the card, not only changes."),
    ] = False,
    format: Annotated[
        str,
        typer.Option(
            "--format",
            help="vllm: a safetensors folder (transformers, vLLM); gguf: one GGUF file "
            "(llama.cpp); ollama: the GGUF file and a Modelfile.",
        ),
    ] = "vllm",
    quant: Annotated[
        str | None,
        typer.Option("--quant", help="gguf, ollama: f16, q8_0 (default) or q4_k_m."),
    ] = None,
    no_verify: Annotated[
        bool,
        typer.Option("--no-verify", help="Skip the check that the export answers as the job."),
    ] = False,
    as_json: AsJson = False,
) -> None:
    """Write the trained model and a README.md model card to OUT_DIR: a safetensors folder
    with its tokenizer, or a GGUF file checked against the trained model."""
    if format not in ("vllm", "gguf", "ollama"):
        err_console.print(
            f"--format: '{format}' is not vllm, gguf or ollama. Fix: pick one of them.",
            style="red",
            markup=False,
        )
        raise typer.Exit(2)
    result = guard(
        lambda: get_service().export_model(
            job_id,
            out_dir,
            adapter_only=adapter_only,
            force=force,
            full_config=full_config,
            format=format,  # type: ignore[arg-type]
            quant=quant,
            verify=not no_verify,
        )
    )
    if as_json:
        console.print_json(result.model_dump_json())
        return
    console.print(
        f"[green]Exported[/] job {job_id} ({result.weights} weights) to {escape(result.path)} "
        f"({_size(result.size_bytes)}): {', '.join(result.files)}"
    )
    console.print(
        f"Model card: dataset {escape(result.dataset_id)}, SHA-256 {result.dataset_hash or '?'}",
        highlight=False,
    )
    if result.parity is not None:
        p = result.parity
        console.print(
            f"Parity ({p.runtime}, {p.quant}, {p.positions} positions): top-1 agreement "
            f"{p.top1_agreement:.3f}, max logit difference {p.max_abs_diff:.3g} "
            f"({p.relative_diff:.3g} of their spread), tokenizer and chat template "
            f"{'match' if p.tokenizer_match and p.chat_template_match else 'DIFFER'}.",
            highlight=False,
        )
        for note in p.notes:
            console.print(f"note: {escape(note)}", highlight=False)


def verify(
    export_path: Annotated[
        Path, typer.Argument(help="An export: its folder, or the .gguf file in it.")
    ],
    as_json: AsJson = False,
) -> None:
    """Check an export against the job that trained it: complete for its runtime, same
    tokens and chat template, same answers. Exit code 1 when it fails."""
    report = guard(lambda: get_service().verify_export(export_path))
    if as_json:
        console.print_json(report.model_dump_json())
    else:
        _print_parity(report)
    if not report.passed:
        raise typer.Exit(1)


def _print_parity(p: ParityReport) -> None:
    verdict = "[green]passed[/]" if p.passed else "[red]FAILED[/]"
    console.print(f"Parity of {escape(p.file)} ({p.runtime}, {p.quant}): {verdict}")
    if p.positions:
        console.print(
            f"  {p.positions} positions over {p.prompts} prompts: top-1 agreement "
            f"{p.top1_agreement:.3f}, max logit difference {p.max_abs_diff:.3g} "
            f"({p.relative_diff:.3g} of their spread)",
            highlight=False,
        )
    for problem in p.problems:
        console.print(f"  problem: {escape(problem)}", highlight=False)
    for note in p.notes:
        console.print(f"  note: {escape(note)}", highlight=False)


def try_model(
    job_id: JobArg,
    texts: Annotated[list[str], typer.Argument(help="One or more inputs.")],
    max_new_tokens: Annotated[
        int, typer.Option(min=1, max=2048, help="Causal LMs: tokens to generate.")
    ] = 32,
    chat: Annotated[
        bool | None,
        typer.Option(
            "--chat/--no-chat",
            help="Causal LMs: wrap each text in the chat template (default: as the job trained).",
        ),
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Try a trained model on texts, beside its base: generations, or label and scores.

    Causal LMs continue each text greedily; classifiers give the label and the score of
    every label; masked LMs the top tokens at the mask token.
    """
    result = guard(
        lambda: get_service().try_model(job_id, texts, max_new_tokens=max_new_tokens, chat=chat)
    )
    if as_json:
        console.print_json(result.model_dump_json())
        return
    _print_try(result)


def _answer(answer: ModelAnswer) -> str:
    if answer.generation is not None:
        if not answer.generation.strip():  # an empty cell would look like a missing answer
            return f"[dim]{escape(repr(answer.generation))}[/]"
        return escape(answer.generation)
    if answer.scores is None:
        return "-"
    scores = ", ".join(f"{escape(k)} {v:.3f}" for k, v in answer.scores.items())
    return f"[bold]{escape(answer.label or '-')}[/]\n{scores}"


def _print_try(result: TryResult) -> None:
    table = Table(title=escape(result.title))
    table.add_column("input")
    table.add_column("trained")
    table.add_column("base")
    for row in result.rows:
        table.add_row(escape(row.input), _answer(row.trained), _answer(row.base))
    console.print(table)
    for note in result.notes:
        err_console.print(f"note: {note}", markup=False, highlight=False)


def evaluate(
    job_id: JobArg,
    dataset: Annotated[
        str | None,
        typer.Option(help="Registered dataset (name or name@version); default: the job's own."),
    ] = None,
    split: Annotated[
        str | None,
        typer.Option(
            help="heldout: the rows the job held out (never trained on); all: the dataset's "
            "first --limit rows, training rows included. Default: heldout when the job held "
            "rows out of the data evaluated, else all (with a note)."
        ),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="Rows to evaluate at most.")] = 1000,
    batch_size: Annotated[int, typer.Option(min=1, max=4096)] = 16,
    as_json: AsJson = False,
) -> None:
    """Evaluate a trained model and its base on a dataset: loss or accuracy and F1.

    Language models report loss and perplexity over the tokens training computed loss
    on; classifiers accuracy and macro F1. Tokenised exactly as the job's training data.
    """
    if split not in (None, "all", "heldout"):
        err_console.print(f"--split: '{split}' is not all or heldout.", style="red", markup=False)
        raise typer.Exit(2)
    chosen: Literal["all", "heldout"] | None = (
        None if split is None else "heldout" if split == "heldout" else "all"
    )
    # The training data path prints notes for a job's log; here they would precede the
    # table (or break --json). One command, one thread: swapping stdout is safe here.
    with contextlib.redirect_stdout(io.StringIO()):
        result = guard(
            lambda: get_service().evaluate_model(
                job_id, dataset, split=chosen, limit=limit, batch_size=batch_size
            )
        )
    if as_json:
        console.print_json(result.model_dump_json())
        return
    _print_evaluation(result)


# Metrics where higher is better (the rest: lower is better).
_HIGHER = {"accuracy", "f1"}


def _print_evaluation(result: EvaluationResult) -> None:
    table = Table(title=escape(result.title))
    for col in ("metric", "trained", "base", "change"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for key, trained in result.trained.items():
        base = result.base.get(key)
        change = "-"
        if base is not None:
            better = trained > base if key in _HIGHER else trained < base
            style = "green" if better else "red" if trained != base else ""
            delta = f"{trained - base:+.4g}"
            change = f"[{style}]{delta}[/]" if style else delta
        table.add_row(key, f"{trained:.4g}", f"{base:.4g}" if base is not None else "-", change)
    console.print(table)
    for note in result.notes:
        err_console.print(f"note: {note}", markup=False, highlight=False)
    console.print(f"{result.seconds:.1f} s", style="dim")


__all__ = ["evaluate", "export", "merge", "try_model"]
