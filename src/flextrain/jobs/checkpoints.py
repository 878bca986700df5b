"""A job's Trainer checkpoints: list them, export one as a loadable model, prune the rest.

Checkpoints are the bulk of a job's disk use (optimizer state alone is about
twice the weights), and after a run only one or two of them matter. The
Trainer writes each as `checkpoint-<step>`; a folder without its
`trainer_state.json` yet, or one still named `tmp-checkpoint-<step>`, is being
written and is never listed, exported or deleted. flextrain's Trainer
(`train.trainer.FlexTrainer`) writes every checkpoint under that staging name
and renames it when complete, so a full disk or a kill mid-save never leaves a
`checkpoint-<step>` that resume would pick up half-written.
"""

from __future__ import annotations

import errno
import json
import re
import shutil
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from flextrain.errors import NotFoundError
from flextrain.hardware.disk import free_bytes

_NAME = re.compile(r"checkpoint-(\d+)")
_STATE_FILE = "trainer_state.json"
# A checkpoint being written: `tmp-checkpoint-<step>/checkpoint-<step>`. Neither
# `_NAME` here nor the Trainer's rotation (`checkpoint-*`) matches it.
STAGING_PREFIX = "tmp-checkpoint-"

# What `Trainer._save_checkpoint` adds on top of `save_model`: only a resumed run
# needs it. Everything else in the folder is what `save_pretrained` wrote, so it
# is exactly what `from_pretrained` reads (custom code and processor files too,
# which a list of wanted files would have to guess). DeepSpeed's extras as well.
_RESUME_ONLY = (
    "optimizer.pt",
    "optimizer.bin",
    "scheduler.pt",
    "scaler.pt",
    "rng_state*.pth",
    "training_args.bin",
    _STATE_FILE,
    "latest",
    "zero_to_fp32.py",
)


class CheckpointNotFoundError(NotFoundError, LookupError):
    """No complete checkpoint has the requested step."""

    code = "checkpoint_not_found"
    field = "step"


@dataclass(frozen=True)
class CheckpointInfo:
    step: int
    epoch: float | None
    path: Path
    size_bytes: int
    modified: datetime
    is_best: bool
    loss: float | None
    eval_loss: float | None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["path"] = str(self.path)
        data["modified"] = self.modified.isoformat()
        return data


def _read_state(folder: Path) -> dict[str, Any] | None:
    """The folder's trainer state; None while it is missing or half-written."""
    try:
        state = json.loads((folder / _STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def _complete(checkpoint_dir: Path) -> list[tuple[int, Path, dict[str, Any]]]:
    """(step, folder, trainer state) of each complete checkpoint, by step."""
    if not checkpoint_dir.is_dir():
        return []
    found = []
    for folder in checkpoint_dir.iterdir():
        match = _NAME.fullmatch(folder.name)
        if match is None or not folder.is_dir():
            continue
        state = _read_state(folder)
        if state is not None:
            found.append((int(match.group(1)), folder, state))
    return sorted(found, key=lambda item: item[0])


def _files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()]


def _last_logged(history: list[dict[str, Any]], key: str, step: int) -> float | None:
    values = [
        row[key]
        for row in history
        if isinstance(row, dict) and key in row and row.get("step", 0) <= step
    ]
    return float(values[-1]) if values else None


def _best_name(states: list[tuple[int, Path, dict[str, Any]]]) -> str | None:
    """The best checkpoint's folder name: as the newest trainer state records it (a run
    that keeps the best model, by its own metric), else the checkpoint whose step was
    evaluated with the lowest eval_loss. The Trainer only tracks a best checkpoint when
    asked to load it at the end; a user comparing checkpoints wants it every time.

    Compared by name, not by full path: the Trainer stores the path it wrote
    to, which no longer matches once FLEXTRAIN_HOME is moved or mounted elsewhere.
    """
    if not states:
        return None
    best = states[-1][2].get("best_model_checkpoint")
    if best:
        return Path(best).name
    scored = [
        (loss, folder.name)
        for step, folder, state in states
        if (loss := _evaluated_at(state.get("log_history") or [], "eval_loss", step)) is not None
    ]
    return min(scored)[1] if scored else None


def _evaluated_at(history: list[dict[str, Any]], key: str, step: int) -> float | None:
    """`key` of the evaluation made at exactly `step` (the checkpoint's own weights)."""
    for row in reversed(history):
        if isinstance(row, dict) and row.get("step") == step and key in row:
            return float(row[key])
    return None


def list_checkpoints(checkpoint_dir: Path) -> list[CheckpointInfo]:
    """Complete checkpoints, oldest step first."""
    states = _complete(checkpoint_dir)
    best = _best_name(states)
    infos = []
    for step, folder, state in states:
        files = _files(folder)
        stats = [f.stat() for f in files]
        mtime = max((s.st_mtime for s in stats), default=folder.stat().st_mtime)
        history = state.get("log_history") or []
        epoch = state.get("epoch")
        infos.append(
            CheckpointInfo(
                step=step,
                epoch=float(epoch) if epoch is not None else None,
                path=folder,
                size_bytes=sum(s.st_size for s in stats),
                modified=datetime.fromtimestamp(mtime, tz=UTC),
                is_best=folder.name == best,
                loss=_last_logged(history, "loss", step),
                eval_loss=_last_logged(history, "eval_loss", step),
            )
        )
    return infos


def latest_checkpoint(checkpoint_dir: Path) -> Path | None:
    states = _complete(checkpoint_dir)
    return states[-1][1] if states else None


# A save that failed with less than this free where it wrote failed for want of space.
_NEARLY_FULL = 8 * 1024**2


def is_disk_full(exc: BaseException, folder: Path) -> bool:
    """Whether `exc` (or what caused it), raised while writing into `folder`, is a write
    refused for lack of space. Ask before removing what the failed write left.

    Each writer says it its own way: Python's OSError has ENOSPC (or EDQUOT, a
    quota), safetensors' Rust error quotes the OS ("No space left on device (os
    error 28)"), but torch.save (optimizer state) only reports a stream error
    ("unexpected pos ..."): then the disk's free space tells.
    """
    try:
        if free_bytes(folder) < _NEARLY_FULL:
            return True
    except OSError:
        pass
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(current)
        if "No space left on device" in text or "os error 28" in text or "StorageFull" in text:
            return True
        current = current.__cause__ or current.__context__
    return False


def disk_full_message(checkpoint_dir: Path, step: int) -> str:
    """What a user reads when a checkpoint did not fit: what is kept and what to do."""
    latest = latest_checkpoint(checkpoint_dir)
    kept = (
        f"{latest.name}, the latest complete checkpoint, is kept and resume continues from it"
        if latest is not None
        else "no earlier checkpoint exists, so resume starts over"
    )
    return (
        f"No space left on device while saving checkpoint-{step} in {checkpoint_dir}: the "
        f"partial checkpoint was removed; {kept}. Fix: free space on that disk (`flextrain "
        "jobs checkpoints JOB --prune` deletes all but the latest and best checkpoints; a "
        "lower save_total_limit keeps fewer), or move output_dir to a larger disk, then "
        "`flextrain jobs resume JOB`."
    )


def disk_usage(checkpoint_dir: Path) -> int:
    """Bytes in complete checkpoints (what pruning could ever free)."""
    return sum(info.size_bytes for info in list_checkpoints(checkpoint_dir))


def _not_found(
    checkpoint_dir: Path, steps: list[int], wanted: list[str]
) -> CheckpointNotFoundError:
    label = "step" if len(wanted) == 1 else "steps"
    available = ", ".join(str(s) for s in steps) or "none yet"
    return CheckpointNotFoundError(
        f"No checkpoint at {label} {', '.join(wanted)} in {checkpoint_dir}; "
        f"available steps: {available}."
    )


def _checkpoint_at(checkpoint_dir: Path, step: int | None) -> Path:
    states = _complete(checkpoint_dir)
    steps = [s for s, _, _ in states]
    if step is None and states:
        return states[-1][1]
    for s, folder, _ in states:
        if s == step:
            return folder
    raise _not_found(checkpoint_dir, steps, ["latest" if step is None else str(step)])


def export_checkpoint(checkpoint_dir: Path, step: int | None, destination: Path) -> Path:
    """Copy one checkpoint's model files (no resume state) to `destination`.

    `step` None means the latest. The files go to a hidden sibling first and
    are renamed into place at the end, so a full disk or a crash never leaves a
    half-copied model that looks complete.
    """
    source = _checkpoint_at(checkpoint_dir, step)
    destination = destination.expanduser().resolve()
    if destination.exists() and (not destination.is_dir() or any(destination.iterdir())):
        raise FileExistsError(
            f"{destination} already exists and is not an empty folder. "
            "Fix: name a new folder (or empty this one)."
        )
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = destination.parent / f".{destination.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        staging.mkdir()
        for item in source.iterdir():
            if item.is_file() and not any(fnmatch(item.name, p) for p in _RESUME_ONLY):
                shutil.copy2(item, staging / item.name)
        if destination.exists():
            destination.rmdir()  # empty, checked above; rename cannot replace a folder
        staging.rename(destination)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return destination


def prune_checkpoints(checkpoint_dir: Path, keep: list[int] | None = None) -> tuple[list[int], int]:
    """Delete every complete checkpoint but `keep` (default: the latest and the best).

    Returns the deleted steps and the bytes freed. Unknown steps in `keep` are
    refused before anything is deleted: a typo must not cost the one wanted.
    """
    infos = list_checkpoints(checkpoint_dir)
    steps = [info.step for info in infos]
    if keep is None:
        kept = {info.step for info in infos if info.is_best}
        kept.update(steps[-1:])
    else:
        unknown = [s for s in keep if s not in steps]
        if unknown:
            raise _not_found(checkpoint_dir, steps, [str(s) for s in unknown])
        kept = set(keep)
    deleted: list[int] = []
    freed = 0
    for info in infos:
        if info.step in kept:
            continue
        shutil.rmtree(info.path)
        deleted.append(info.step)
        freed += info.size_bytes
    return deleted, freed
