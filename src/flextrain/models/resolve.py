"""Turn a model id into a folder on disk.

Four kinds of id, tried in order: a local Hugging Face model folder, a
built-in (`flextrain/...`), or a hub id fetched through huggingface_hub. An id
that cannot be had raises ModelNotFoundError with the reason and the way out,
never a library traceback.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from flextrain.models.builtin import BUILTIN_DESCRIPTIONS, BUILTIN_IDS, builtin_path

# Files a training run needs from the hub; skips other frameworks' weights.
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken", "*.py"]


class ModelNotFoundError(LookupError):
    """The model id names nothing this machine can load."""


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

    def __init__(self, builtin_dir: Path, *, allow_pickle: bool = False) -> None:
        self.builtin_dir = builtin_dir
        self.allow_pickle = allow_pickle

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
        local = Path(model_id).expanduser()
        if local.is_dir():
            if not (local / "config.json").exists():
                raise ModelNotFoundError(
                    f"Model folder '{model_id}' has no config.json. "
                    "Fix: point at a folder written by save_pretrained()."
                )
            if not self.allow_pickle:
                _refuse_pickle_only(model_id, local)
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
            return Path(snapshot_download(model_id, allow_patterns=_HUB_PATTERNS))
        except Exception as exc:  # hub errors vary: offline, 404, gated, network
            reason = type(exc).__name__
            raise ModelNotFoundError(
                f"Model '{model_id}' not found or inaccessible (offline?): {reason}. "
                "Fix: connect to the internet (and log in for gated models), use a local "
                f"model folder, or a built-in: {', '.join(BUILTIN_IDS)}."
            ) from exc

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
