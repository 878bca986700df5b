"""How many optimizer steps a run makes, from its rows and its batch: one formula.

The expression schedule's plot at creation, the time estimate and the worker's own
schedule all count steps; computed in one place, they cannot disagree about where the
warm-up ends or how long an epoch is.
"""

from __future__ import annotations


def steps_per_epoch(rows: int, rows_per_step: int) -> int:
    """Optimizer steps in one pass over `rows` (the last, partial batch is a step)."""
    return max(1, -(-rows // max(1, rows_per_step)))


def total_steps(rows: int, rows_per_step: int, epochs: float, max_steps: int = 0) -> int:
    """The run's optimizer steps: `max_steps` when set (above 0), else the epochs'."""
    if max_steps > 0:
        return max_steps
    return int(steps_per_epoch(rows, rows_per_step) * epochs)


def warmup_steps(steps: int, ratio: float, total: int) -> int:
    """Warm-up steps: `steps` when given, else `ratio` of the run (as the Trainer does)."""
    return steps or int(ratio * total)
