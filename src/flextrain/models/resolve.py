"""Turn a model id into a folder on disk.

Four kinds of id, tried in order: a local Hugging Face model folder, a
built-in (`flextrain/...`), or a hub id fetched through huggingface_hub. An id
that cannot be had raises ModelNotFoundError with the reason and the way out,
never a library traceback.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from flextrain.errors import NotFoundError
from flextrain.models.builtin import BUILTIN_DESCRIPTIONS, BUILTIN_IDS, builtin_path

# Files a training run needs from the hub; skips other frameworks' weights.
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken", "*.py"]


class ModelNotFoundError(NotFoundError, LookupError):
    """The model id names nothing this machine can load."""

    code = "model_not_found"
    field = "model_id"


class ModelFilesError(ModelNotFoundError):
    """The model folder is there but a weight file in it is corrupt, truncated or missing.

    A ModelNotFoundError (the model cannot be loaded), answered as bad input, not
    as "not found": the fix is to repair or re-save the folder.
    """

    code = "model_files"
    http_status = 422


@dataclass(frozen=True)
class ResolvedModel:
    model_id: str
    path: Path
    source: Literal["local", "builtin", "hub"]


class ModelResolver:
    """Resolves model ids; built-ins are generated under `builtin_dir` on first use.

    A local folder must hold safetensors weights unless `allow_pickle` (the admin
    setting FLEXTRAIN_ALLOW_PICKLE_WEIGHTS): unpickling a `pytorch_model.bin` can run
    whatever code its author put in it.
    """

    def __init__(
        self,
        builtin_dir: Path,
        *,
        allow_pickle: bool = False,
        registered: Callable[[str], Path | None] | None = None,
    ) -> None:
        self.builtin_dir = builtin_dir
        self.allow_pickle = allow_pickle
        # The model registry's lookup: a registered name's folder, None for other ids.
        self.registered = registered

    def resolve(self, model_id: str) -> ResolvedModel:
        """Folder with config, weights and tokenizer for `model_id`."""
        return self._resolve(model_id, config_only=False)

    def resolve_config(self, model_id: str) -> ResolvedModel:
        """Folder holding at least `config.json`; never downloads weights."""
        return self._resolve(model_id, config_only=True)

    def _resolve(self, model_id: str, *, config_only: bool) -> ResolvedModel:
        model_id = model_id.strip()
        if not model_id:
            raise ModelNotFoundError("model_id is empty. Fix: name a model folder or id.")
        if model_id in BUILTIN_IDS:
            return ResolvedModel(model_id, builtin_path(model_id, self.builtin_dir), "builtin")
        # A registered name stands for its folder (and wins over a hub id spelled alike).
        named = self.registered(model_id) if self.registered is not None else None
        local = named or Path(model_id).expanduser()
        if _is_dir(local):
            if not (local / "config.json").exists():
                raise ModelNotFoundError(
                    f"Model folder '{model_id}' has no config.json. "
                    "Fix: point at a folder written by save_pretrained()."
                )
            if not self.allow_pickle:
                _refuse_pickle_only(model_id, local)
            check_weight_files(model_id, local)
            return ResolvedModel(model_id, local.resolve(), "local")
        if model_id.startswith(("/", ".", "~")) or model_id.count("/") > 1:
            raise ModelNotFoundError(
                f"Model folder '{model_id}' does not exist. Fix: check the path."
            )
        return ResolvedModel(model_id, self._from_hub(model_id, config_only), "hub")

    def _from_hub(self, model_id: str, config_only: bool) -> Path:
        from huggingface_hub import hf_hub_download, snapshot_download

        try:
            if config_only:
                return Path(hf_hub_download(model_id, "config.json")).parent
            folder = Path(snapshot_download(model_id, allow_patterns=_HUB_PATTERNS))
        except Exception as exc:  # hub errors vary: offline, 404, gated, network
            reason = type(exc).__name__
            raise ModelNotFoundError(
                f"Model '{model_id}' not found or inaccessible (offline?): {reason}. "
                "Fix: connect to the internet (and log in for gated models), use a local "
                f"model folder, or a built-in: {', '.join(BUILTIN_IDS)}."
            ) from exc
        if not any(folder.glob("*.safetensors")) and not (folder / _SAFE_INDEX).is_file():
            # Offline, the cache answers with what it has: after a compatibility check
            # that is the config alone, and the worker would fail on the missing weights.
            raise ModelNotFoundError(
                f"Model '{model_id}': the local copy in the hub cache ({folder}) has no "
                "safetensors weights (only what a compatibility check fetched). Fix: "
                f"`flextrain models pull {model_id}` while online."
            )
        return folder

    def missing_weights(self, model_id: str) -> str | None:
        """Why a local model folder cannot give pretrained weights, or None when it can
        or is not a local folder (built-ins are generated complete; hub downloads fetch
        the weights the hub lists). Without the fix: the caller knows the way out.

        A folder with only `config.json` is enough to inspect a model or to train one
        from scratch (`full_training` builds it from the config), so resolving does not
        refuse it; creating a job that loads the weights asks this.
        """
        resolved = self.resolve_config(model_id)
        if resolved.source != "local":
            return None
        folder = resolved.path
        if any(folder.glob("*.safetensors")) or (folder / _SAFE_INDEX).is_file():
            return None
        if self.allow_pickle and any(
            p for pattern in _PICKLE_WEIGHTS for p in folder.glob(pattern)
        ):
            return None
        found = ", ".join(sorted(p.name for p in folder.iterdir())) or "nothing"
        return (
            f"Model folder '{model_id}' has no weight file: model.safetensors is missing "
            f"(the folder holds {found})."
        )

    @staticmethod
    def builtins() -> dict[str, str]:
        return dict(BUILTIN_DESCRIPTIONS)


_PICKLE_WEIGHTS = ("pytorch_model*.bin", "*.pt", "*.pth", "*.ckpt")


def _refuse_pickle_only(model_id: str, folder: Path) -> None:
    """A folder with pickle weights and no safetensors cannot be loaded safely."""
    if any(folder.glob("*.safetensors")):
        return
    pickles = sorted(p.name for pattern in _PICKLE_WEIGHTS for p in folder.glob(pattern))
    if pickles:
        raise ModelNotFoundError(
            f"Model folder '{model_id}' has only pickle weights ({', '.join(pickles)}), which "
            "can run code when loaded. Fix: save it with safetensors "
            "(save_pretrained() writes model.safetensors), or have an admin set "
            "allow_pickle_weights (FLEXTRAIN_ALLOW_PICKLE_WEIGHTS=1) if the file is trusted."
        )


_SAFE_INDEX = "model.safetensors.index.json"
# A safetensors header is JSON of at most this size (the format's own limit).
_MAX_HEADER = 100 * 1024 * 1024


def check_weight_files(model_id: str, folder: Path) -> None:
    """Refuse a folder whose safetensors weights cannot be read: a file that is not
    safetensors or was cut short (a copy or download that stopped), or an index that
    names a shard the folder lacks.

    Reads each file's header only (8 bytes of length, then JSON with every tensor's
    byte range), so it costs milliseconds however large the weights: the worker
    would otherwise fail minutes later, after the queue and the data preparation.
    """
    fix = "Fix: copy the model folder again (or save it again with save_pretrained()), then retry."
    index = folder / _SAFE_INDEX
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
            shards = sorted(set(weight_map.values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            raise ModelFilesError(
                f"Model folder '{model_id}': {_SAFE_INDEX} is not a valid index (no "
                f"weight_map). {fix}"
            ) from None
        missing = [name for name in shards if not (folder / name).is_file()]
        if missing:
            raise ModelFilesError(
                f"Model folder '{model_id}': {_SAFE_INDEX} names {len(shards)} weight "
                f"file(s) and {', '.join(missing)} "
                f"{'is' if len(missing) == 1 else 'are'} missing. {fix}"
            )
    for weights in sorted(folder.glob("*.safetensors")):
        problem = _safetensors_problem(weights)
        if problem:
            raise ModelFilesError(
                f"Model folder '{model_id}': {weights.name} is truncated or not a "
                f"safetensors file ({problem}). {fix}"
            )


def _safetensors_problem(path: Path) -> str | None:
    """What is wrong with a safetensors file's framing, or None if it is whole."""
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                return f"{size} bytes, shorter than the 8-byte header length"
            length = int.from_bytes(head, "little")
            if length > _MAX_HEADER or 8 + length > size:
                return f"header of {length} bytes announced, the file has {size}"
            header = json.loads(fh.read(length))
    except OSError as exc:
        return f"cannot be read: {exc.strerror or exc}"
    except (ValueError, UnicodeDecodeError):
        return "its header is not JSON"
    if not isinstance(header, dict):
        return "its header is not a JSON object"
    end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2):
            return f"tensor {name} has no data_offsets"
        end = max(end, int(offsets[1]))
    data = size - 8 - length
    if end > data:
        return f"the tensors need {end} bytes of data, the file holds {data}"
    return None


def _is_dir(path: Path) -> bool:
    """Whether `path` is a folder; a name the file system cannot even look up (a part
    over 255 bytes, say) is not one, rather than an OSError the user never caused."""
    try:
        return path.is_dir()
    except OSError:
        return False
