"""What the registry reads from a model folder: that it is one, what it holds, and the
lineage file the trainer wrote beside a trained model.

Kept apart from the registry's bookkeeping (names, versions, rows): these functions
touch the disk and transformers, the registry only the database.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flextrain.models.refs import MAX_PATH, ModelRegistryError


@dataclass(frozen=True)
class Facts:
    """What inspection says about a folder; all empty when it could not be read."""

    architecture: str | None = None
    model_type: str | None = None
    num_parameters: int | None = None
    training_types: list[str] = field(default_factory=list)
    model_class: str | None = None  # the class built for the objective inspected with


def model_folder(path: str | Path) -> Path:
    """`path` as an absolute folder, or ModelRegistryError naming what is wrong."""
    text = str(path)
    if not text.strip() or "\x00" in text:
        raise ModelRegistryError("path is empty or not a valid path. Fix: give a model folder.")
    try:
        folder = Path(text).expanduser().resolve()
        exists, is_dir = folder.exists(), folder.is_dir()
    except (OSError, RuntimeError) as exc:  # too long, a symlink loop, no home for '~'
        raise ModelRegistryError(f"path '{text}' cannot be read ({exc}). Fix: check it.") from None
    if len(str(folder)) > MAX_PATH:
        raise ModelRegistryError(
            f"path is over {MAX_PATH} characters once resolved. Fix: move the model to a "
            "shorter path."
        )
    if not exists:
        raise ModelRegistryError(
            f"path '{text}' does not exist. Fix: check the path; give the folder "
            "save_pretrained() wrote (it holds config.json and *.safetensors)."
        )
    if not is_dir:
        model_file = folder.name == "config.json" or folder.suffix == ".safetensors"
        parent = f": its folder, {folder.parent}" if model_file else ""
        raise ModelRegistryError(
            f"path '{text}' is a file, not a folder. Fix: give the folder save_pretrained() "
            f"wrote (it holds config.json and *.safetensors){parent}."
        )
    return folder


# peft's task_type, for an adapter saved without flextrain.json (or an older one).
_PEFT_TASKS = {"SEQ_CLS": "sequence_classification", "CAUSAL_LM": "causal_lm"}


def trained_facts(folder: Path, lineage: dict[str, Any], *, adapter: bool) -> Facts:
    """What a job's model folder is: as the task model it runs as (with its head), so a
    LoRA classifier of a BERT reads BertForSequenceClassification, not the BertModel its
    base's config.json names. An adapter folder holds no config.json: its base's is
    built with the job's objective instead."""
    peft = _json_file(folder / "adapter_config.json")
    objective = lineage.get("objective") or _PEFT_TASKS.get(str(peft.get("task_type")))
    labels = lineage.get("labels")
    num_labels = len(labels) if isinstance(labels, list) and labels else 2
    if not adapter:
        return inspect_folder(folder, strict=False, objective=objective, num_labels=num_labels)
    base = lineage.get("base_model_path") or peft.get("base_model_name_or_path")
    if not base or not (Path(str(base)) / "config.json").is_file():
        return Facts()
    # Built with the task's head, so its class is the model the adapter runs on; its
    # `architectures` (the base's own class) would misname it.
    facts = inspect_folder(
        Path(str(base)), strict=False, objective=objective, num_labels=num_labels
    )
    return Facts(
        architecture=facts.model_class or facts.architecture,
        model_type=facts.model_type,
        num_parameters=facts.num_parameters,
        training_types=facts.training_types,
    )


def inspect_folder(
    folder: Path, *, strict: bool, objective: str | None = None, num_labels: int = 2
) -> Facts:
    """Architecture, parameters and training types of the model in `folder`, from its
    config alone (built with the head for `objective`, when given). A config
    transformers cannot read is an error when `strict`, else leaves the facts empty (a
    trained model is registered whatever inspection says)."""
    from flextrain.models.compatibility import supported_types
    from flextrain.models.inspect import inspect_model

    try:
        info = inspect_model(folder, objective=objective, num_labels=num_labels)
    except Exception as exc:  # transformers raises many kinds for a config it cannot read
        if not strict:
            return Facts()
        raise ModelRegistryError(
            f"transformers cannot read '{folder / 'config.json'}' ({type(exc).__name__}: "
            f"{str(exc)[:200]}). Fix: use a folder written by save_pretrained() for a model "
            "type this transformers version knows."
        ) from None
    supported, _ = supported_types(info)
    architecture = info.architectures[0] if info.architectures else info.model_type
    return Facts(
        architecture=architecture[:200],
        model_type=info.model_type[:64],
        num_parameters=info.num_parameters,
        training_types=[t.value for t in supported],
        model_class=info.model_class[:200],
    )


def folder_size(folder: Path) -> int:
    """Bytes of the files directly in `folder`: what loading the model reads (not the
    checkpoints or logs a training output may keep in subfolders)."""
    try:
        return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
    except OSError:
        return 0


def lineage_file(folder: Path) -> dict[str, Any]:
    """The `flextrain.json` the trainer writes beside a model (base model, metrics)."""
    return _json_file(folder / "flextrain.json")


def _json_file(path: Path) -> dict[str, Any]:
    """A JSON object from `path`; empty when it is missing or not one."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def finite(value: Any) -> Any:
    """`value` with NaN and infinities as None: a run that diverged logs them, and neither
    PostgreSQL's JSON nor a JSON response can hold them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return value
