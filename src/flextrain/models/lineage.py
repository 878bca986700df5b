"""What tells two model versions apart: a hash of the training config, and a diff.

The config hash answers "were these trained the same way?" at a glance, so it
leaves out what names or places a run without changing what it learns: the run's
name, its output folder, and where its metrics are reported. The diff lays two
versions side by side: lineage (base model, data, job), every config setting that
differs (nested settings as dotted keys), and every metric with its change.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

from pydantic import BaseModel, Field

# Settings that do not change what a run learns: left out of the config hash.
UNHASHED_SETTINGS = frozenset({"run_name", "output_dir", "tracking", "monitor_interval"})
# Lineage fields the diff compares, in the order it lists them.
LINEAGE_FIELDS = (
    "base_model",
    "dataset_id",
    "dataset_version",
    "config_hash",
    "job_id",
    "path",
    "adapter",
    "architecture",
    "num_parameters",
)


def config_hash(config: dict[str, Any] | None) -> str | None:
    """SHA-256 of the config's settings as canonical JSON (sorted keys), without the
    UNHASHED_SETTINGS; None for a model with no recorded config (registered by hand)."""
    if not config:
        return None
    kept = {k: v for k, v in config.items() if k not in UNHASHED_SETTINGS}
    text = json.dumps(kept, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class Change(BaseModel):
    """One setting or lineage field whose values differ."""

    key: str
    a: Any = Field(description="The value in the first version (null: not set there).")
    b: Any = Field(description="The value in the second version (null: not set there).")


class MetricChange(BaseModel):
    """One metric in either version, with how it moved."""

    key: str
    a: float | None = None
    b: float | None = None
    change: float | None = Field(None, description="b - a, when both are numbers.")


class ModelDiff(BaseModel):
    """Two registered versions side by side."""

    a: str = Field(description="The first version, as name:version.")
    b: str = Field(description="The second version, as name:version.")
    same_config: bool = Field(description="The config hashes are equal (and recorded).")
    configs_known: bool = Field(
        description="Both versions have a recorded training config (a folder registered by "
        "hand has none)."
    )
    lineage: list[Change] = Field(default_factory=list)
    config: list[Change] = Field(default_factory=list)
    metrics: list[MetricChange] = Field(default_factory=list)


def flatten(value: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as dotted keys ({"health": {"on_divergence": ...}} becomes
    {"health.on_divergence": ...}); lists stay whole."""
    flat: dict[str, Any] = {}
    for key, item in value.items():
        dotted = f"{prefix}{key}"
        if isinstance(item, dict) and item:
            flat.update(flatten(item, dotted + "."))
        else:
            flat[dotted] = item
    return flat


def diff(
    a_ref: str,
    a: dict[str, Any],
    b_ref: str,
    b: dict[str, Any],
) -> ModelDiff:
    """The differences between two versions, each given as its registration's fields
    (a RegisteredModel's `model_dump()`)."""
    lineage = [
        Change(key=key, a=a.get(key), b=b.get(key))
        for key in LINEAGE_FIELDS
        if a.get(key) != b.get(key)
    ]
    a_config, b_config = flatten(a.get("config") or {}), flatten(b.get("config") or {})
    config = [
        Change(key=key, a=a_config.get(key), b=b_config.get(key))
        for key in sorted(set(a_config) | set(b_config))
        if a_config.get(key) != b_config.get(key)
    ]
    a_metrics, b_metrics = _numbers(a.get("metrics")), _numbers(b.get("metrics"))
    metrics = []
    for key in sorted(set(a_metrics) | set(b_metrics)):
        x, y = a_metrics.get(key), b_metrics.get(key)
        change = y - x if x is not None and y is not None else None
        metrics.append(MetricChange(key=key, a=x, b=y, change=change))
    hashes = a.get("config_hash"), b.get("config_hash")
    return ModelDiff(
        a=a_ref,
        b=b_ref,
        same_config=hashes[0] is not None and hashes[0] == hashes[1],
        configs_known=None not in hashes,
        lineage=lineage,
        config=config,
        metrics=metrics,
    )


def _numbers(metrics: dict[str, Any] | None) -> dict[str, float]:
    """The finite numeric metrics (booleans and text are no measurements)."""
    return {
        k: float(v)
        for k, v in (metrics or {}).items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    }
