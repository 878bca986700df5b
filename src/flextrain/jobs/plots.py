"""Loss, eval loss and learning rate against step, as a PNG (matplotlib, no display);
the gradient norm (median of each logging window, min to max shaded) where it was
logged; for preference runs also the reward margin (or, for GRPO, the mean reward).
Health events (loss spikes, stalls, skipped steps, rollbacks, divergence) are marked
on the loss panel at their step.

One column per job, so several runs sit side by side on one figure for
comparison, sharing the loss axis' scale within each row. matplotlib is
imported only when a plot is drawn (with the Agg backend: no display needed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

_SERIES = (("loss", "training loss"), ("eval_loss", "eval loss"))
# What a preference run is judged by while it trains, as TRL logs it: the first found.
_REWARDS = (("rewards/margins", "reward margin (chosen - rejected)"), ("reward", "mean reward"))
# Events drawn on the loss panel, and their colour.
HEALTH_MARKS = {
    "loss_spike": "tab:orange",
    "loss_stalled": "tab:gray",
    "skipped_step": "tab:red",
    "rolled_back": "tab:purple",
    "diverged": "black",
}


def reward_series(history: list[dict[str, Any]]) -> tuple[str, str] | None:
    """(key, label) of the reward a preference run logged, None for other runs."""
    return next((s for s in _REWARDS if any(s[0] in row for row in history)), None)


def series(history: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of one metric from a job's history, in step order."""
    points = sorted(
        (float(row["step"]), float(row[key]))
        for row in history
        if row.get(key) is not None and row.get("step") is not None
    )
    return [p[0] for p in points], [p[1] for p in points]


def plot_histories(
    histories: dict[str, list[dict[str, Any]]],
    out: Path,
    marks: dict[str, list[tuple[int, str]]] | None = None,
) -> Path:
    """Draw each job's curves in its own column and write `out` (PNG); `marks`: each
    job's health events as (step, kind), drawn on its loss panel."""
    if not histories:
        raise ValueError("No job to plot. Fix: name at least one job id.")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = len(histories)
    rewards = any(reward_series(h) for h in histories.values())
    norms = any(series(h, "grad_norm_median")[0] for h in histories.values())
    rows = 2 + int(norms) + int(rewards)
    figure, axes = plt.subplots(
        rows, columns, figsize=(5 * columns, 3 * rows), squeeze=False, sharey="row", sharex="col"
    )
    for column, (job_id, history) in enumerate(histories.items()):
        top, bottom = axes[0][column], axes[1][column]
        drawn = 0
        for key, label in _SERIES:
            steps, values = series(history, key)
            if steps:
                top.plot(steps, values, marker="o" if len(steps) < 30 else None, label=label)
                drawn += len(steps)
        top.set_title(f"job {job_id}")
        top.set_ylabel("loss")
        top.grid(alpha=0.3)
        if drawn:
            top.legend()
        else:
            top.text(0.5, 0.5, "no loss logged yet", ha="center", transform=top.transAxes)
        steps, values = series(history, "learning_rate")
        bottom.plot(steps, values, color="tab:green")
        bottom.set_ylabel("learning rate")
        bottom.grid(alpha=0.3)
        _mark_events(top, (marks or {}).get(job_id, []))
        if norms:
            _grad_norms(axes[2][column], history)
        found = reward_series(history)
        if rewards:
            panel = axes[rows - 1][column]
            if found is not None:
                steps, values = series(history, found[0])
                panel.plot(steps, values, color="tab:purple", label=found[1])
                panel.legend()
            panel.set_ylabel("reward")
            panel.grid(alpha=0.3)
        axes[rows - 1][column].set_xlabel("step")
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=100)
    plt.close(figure)
    return out


def _mark_events(panel: Any, marks: list[tuple[int, str]]) -> None:
    """A dashed vertical line per health event, one legend entry per kind."""
    labelled: set[str] = set()
    for step, kind in marks:
        colour = HEALTH_MARKS.get(kind)
        if colour is None:
            continue
        label = kind.replace("_", " ") if kind not in labelled else None
        labelled.add(kind)
        panel.axvline(step, color=colour, linestyle="--", alpha=0.7, label=label)
    if labelled:
        panel.legend()


def _grad_norms(panel: Any, history: list[dict[str, Any]]) -> None:
    """Median gradient norm of each logging window, its min to max shaded."""
    steps, median = series(history, "grad_norm_median")
    low = series(history, "grad_norm_min")[1]
    high = series(history, "grad_norm_max")[1]
    if steps:
        panel.plot(steps, median, color="tab:blue", label="grad norm (median)")
        if len(low) == len(high) == len(steps):
            panel.fill_between(steps, low, high, alpha=0.2, color="tab:blue", label="min-max")
        panel.legend()
    panel.set_ylabel("gradient norm")
    panel.grid(alpha=0.3)
