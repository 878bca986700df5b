"""A model's inspected facts, kept on disk under the content of its config.json.

Inspecting a model builds it on the meta device, which needs torch and transformers:
2 to 4 s of imports in a front end (CLI, API server) that needs neither otherwise,
since the worker imports its own. With the facts kept in the home, a later job of the
same model, in any process, reads them in a millisecond and the CLI never loads the
training libraries.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from flextrain.models.inspect import ModelInfo, inspect_model

log = logging.getLogger("flextrain.models")


# Bumped whenever what `inspect_model` records changes without a change of ModelInfo's
# fields (those are part of the key already): older entries are then never read.
MODEL_INFO_CACHE_VERSION = 1


def inspect_model_cached(
    path: Path, cache_dir: Path | None, *, objective: str | None = None, num_labels: int = 2
) -> ModelInfo:
    """`inspect_model(path, objective=..., num_labels=...)`, kept in `cache_dir` under the
    content of its config.json (not kept when `cache_dir` is None).

    Inspecting builds the model on the meta device, which needs torch and transformers:
    2 to 4 s of imports (and as much again to unload them at exit) in a front end that
    needs neither otherwise, since the worker imports its own. A later job of the same
    model, in any process of this home, reads the facts from here in a millisecond.
    The key also holds the transformers version (it decides the modules built) and
    ModelInfo's fields; models with their own code (`auto_map`) are never cached.
    """
    key = f"{objective}\0{num_labels}"
    file = _model_info_file(path, cache_dir, key) if cache_dir is not None else None
    if file is not None and file.is_file():
        try:
            return _model_info_from_json(json.loads(file.read_text()))
        except (OSError, ValueError, TypeError, KeyError):
            pass  # unreadable or from an older layout: inspect again and overwrite
    info = inspect_model(path, objective=objective, num_labels=num_labels)
    if file is None or info.needs_remote_code:
        return info
    try:
        text = json.dumps(_model_info_to_json(info))
        if _model_info_from_json(json.loads(text)) != info:
            return info  # something in the config does not survive JSON: keep it uncached
        file.parent.mkdir(parents=True, exist_ok=True)
        temp = file.with_suffix(f".{os.getpid()}.tmp")
        temp.write_text(text)
        temp.replace(file)  # whole or not at all, whoever else writes it
    except (OSError, TypeError, ValueError) as exc:
        log.debug("model facts of %s not cached: %s", path, exc)
    return info


def _model_info_file(path: Path, cache_dir: Path, key: str) -> Path | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        config = (path / "config.json").read_bytes()
        transformers_version = version("transformers")
    except (OSError, PackageNotFoundError):
        return None
    digest = hashlib.sha256(config)
    fields = ",".join(f.name for f in dataclasses.fields(ModelInfo))
    digest.update(f"\0{transformers_version}\0{MODEL_INFO_CACHE_VERSION}\0{fields}\0{key}".encode())
    return cache_dir / f"{digest.hexdigest()[:32]}.json"


def _model_info_to_json(info: ModelInfo) -> dict[str, Any]:
    values = {f.name: getattr(info, f.name) for f in dataclasses.fields(info)}
    values["linear_module_names"] = sorted(info.linear_module_names)
    values["linear_layers"] = [list(layer) for layer in info.linear_layers]
    return values


def _model_info_from_json(values: dict[str, Any]) -> ModelInfo:
    config = dict(values["config"])
    if isinstance(config.get("id2label"), dict):  # JSON made its int keys strings
        config["id2label"] = {int(k): v for k, v in config["id2label"].items()}
    return ModelInfo(
        **{
            **values,
            "config": config,
            "linear_module_names": frozenset(values["linear_module_names"]),
            "linear_layers": tuple(
                (str(name), int(i), int(o)) for name, i, o in values["linear_layers"]
            ),
        }
    )
