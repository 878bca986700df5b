"""Loss, eval loss and learning rate against step, as a PNG (matplotlib, no display);
for preference runs also the reward margin (or, for GRPO, the mean reward).

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


def plot_histories(histories: dict[str, list[dict[str, Any]]], out: Path) -> Path:
    """Draw each job's curves in its own column and write `out` (PNG)."""
    if not histories:
        raise ValueError("No job to plot. Fix: name at least one job id.")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = len(histories)
    rewards = any(reward_series(h) for h in histories.values())
    rows = 3 if rewards else 2
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
        found = reward_series(history)
        if rewards:
            panel = axes[2][column]
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
