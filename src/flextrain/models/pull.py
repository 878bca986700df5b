"""`pull`: download a hub model's training files into the shared hub cache, resumably.

Order: the model's file listing, a HEAD per file (so a gated model or a bad token
fails before any byte moves, and every size is known), the disk-space check, then
the downloads, largest progress first reported as bytes done of bytes total.

Why the files are streamed here rather than by `snapshot_download`: see
flextrain.models.hub. Each file lands in `CACHE/.flextrain-partial/<repo>/<etag>`
through huggingface_hub's `http_get` (which asks for the missing bytes with
`Range` and retries a dropped connection from where it stopped), is checked
against its ETag and moved into `blobs/`; `snapshot_download` then links the
snapshot, writes `refs/` and the tree listing exactly as the resolver expects.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flextrain.hardware.disk import free_bytes
from flextrain.models.hub import (
    DEFAULT_RESERVE_BYTES,
    HUB_PATTERNS,
    PARTIAL_DIR,
    DiskSpaceError,
    HubAccess,
    HubError,
    HubModelNotFoundError,
    HubOfflineError,
    hub_errors,
    offline_message,
)

# owner/name of a hub repo: what the hub accepts, and never a path.
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,95})?$")
_GIB = 1024**3


@dataclass(frozen=True)
class PullProgress:
    """Where a pull stands: bytes here (cached, resumed or downloaded) of all bytes."""

    model_id: str
    filename: str | None
    bytes_done: int
    bytes_total: int
    files_done: int
    files_total: int

    @property
    def percent(self) -> float:
        if self.bytes_total <= 0:
            return 100.0 if self.files_done >= self.files_total else 0.0
        return round(100.0 * self.bytes_done / self.bytes_total, 1)


@dataclass(frozen=True)
class PullResult:
    model_id: str
    revision: str
    commit: str
    path: Path
    files: list[str]
    bytes_total: int
    bytes_downloaded: int
    bytes_resumed: int = 0
    bytes_cached: int = 0


Progress = Callable[[PullProgress], None]


@dataclass(frozen=True)
class _File:
    name: str
    etag: str
    size: int
    url: str
    same_host: bool


def check_model_id(model_id: str) -> str:
    """`model_id` if it is a hub id (owner/name); never a path."""
    model_id = model_id.strip()
    if not HUB_ID.match(model_id) or ".." in model_id:
        raise HubModelNotFoundError(
            f"model_id '{model_id[:100]}' is not a hub id. Fix: use owner/name as on the hub, "
            "e.g. HuggingFaceTB/SmolLM2-135M (find one with `flextrain models search`)."
        )
    return model_id


def _check_revision(model_id: str, revision: str) -> str:
    """A branch, tag or commit; it names a file under the cache's refs/, so no '..'."""
    revision = revision.strip()
    if not revision or ".." in revision or revision.startswith("/") or "\\" in revision:
        raise HubModelNotFoundError(
            f"revision '{revision[:100]}' of '{model_id}' is not a branch, tag or commit. "
            "Fix: use e.g. main, v1.0 or a commit hash."
        )
    return revision


def pull(
    model_id: str,
    *,
    revision: str = "main",
    cache_dir: str | Path | None = None,
    access: HubAccess | None = None,
    progress: Progress | None = None,
    reserve_bytes: int = DEFAULT_RESERVE_BYTES,
) -> PullResult:
    """Download `model_id`'s config, tokenizer and safetensors weights into the hub cache
    (default: huggingface_hub's, the one the resolver reads). Already cached files are
    skipped and a partial file continues; `progress` is called as bytes arrive (it may
    raise to stop the pull, keeping what arrived). Refuses before downloading when the
    cache's disk would keep less than `reserve_bytes` free."""
    from huggingface_hub import HfApi, constants, snapshot_download
    from huggingface_hub.file_download import repo_folder_name
    from huggingface_hub.utils import filter_repo_objects

    model_id = check_model_id(model_id)
    revision = _check_revision(model_id, revision)
    access = access or HubAccess.from_env()
    if access.offline:
        raise HubOfflineError(offline_message(model_id))
    cache = Path(cache_dir or constants.HF_HUB_CACHE).expanduser()
    api = HfApi(endpoint=access.endpoint, token=access.token)
    with hub_errors(model_id, access):
        info = api.model_info(model_id, revision=revision, files_metadata=True)
        names = [s.rfilename for s in info.siblings or []]
        wanted = sorted(filter_repo_objects(names, allow_patterns=HUB_PATTERNS))
        if not any(n.endswith(".safetensors") for n in wanted):
            raise HubError(
                f"Model '{model_id}' has no safetensors weights ({_weights(names)}); flextrain "
                "loads safetensors only, since pickle weights can run code when loaded. Fix: "
                "choose a model with model.safetensors, or convert it and use the local folder."
            )
        files = [_head(model_id, name, info.sha, access) for name in wanted]

    storage = cache / repo_folder_name(repo_id=model_id, repo_type="model")
    partials = cache / PARTIAL_DIR / storage.name
    cached = sum(f.size for f in files if (storage / "blobs" / f.etag).exists())
    todo = [f for f in files if not (storage / "blobs" / f.etag).exists()]
    have = {f.etag: _partial_size(partials / f.etag, f.size) for f in todo}
    needed = sum(f.size - have[f.etag] for f in todo)
    check_disk_space(cache, needed, reserve_bytes, model_id)

    total = sum(f.size for f in files)
    state = {"done": cached + sum(have.values()), "files": len(files) - len(todo)}
    lock = threading.Lock()

    def report(filename: str | None) -> None:
        if progress is not None:
            progress(
                PullProgress(model_id, filename, state["done"], total, state["files"], len(files))
            )

    report(None)
    downloaded = 0
    for f in todo:

        def on_bytes(n: int, name: str = f.name) -> None:
            with lock:
                state["done"] += n
            report(name)

        with hub_errors(model_id, access):
            _fetch(f, partials / f.etag, storage / "blobs" / f.etag, access, on_bytes)
        downloaded += f.size - have[f.etag]
        state["files"] += 1
        report(f.name)

    with hub_errors(model_id, access):
        path = snapshot_download(
            model_id,
            revision=revision,
            cache_dir=cache,
            endpoint=access.endpoint,
            token=access.token,
            allow_patterns=HUB_PATTERNS,
            tqdm_class=_silent_bar(),
        )
    return PullResult(
        model_id=model_id,
        revision=revision,
        commit=str(info.sha),
        path=Path(path),
        files=wanted,
        bytes_total=total,
        bytes_downloaded=downloaded,
        bytes_resumed=sum(have.values()),
        bytes_cached=cached,
    )


def check_disk_space(cache: Path, needed: int, reserve: int, model_id: str) -> None:
    """Refuse a pull that would leave the cache's disk with less than `reserve` free."""
    free = free_bytes(cache)
    if needed + reserve > free:
        raise DiskSpaceError(
            f"Not enough disk space to pull '{model_id}': it needs {needed / _GIB:.2f} GiB "
            f"({needed:,} bytes) and {reserve / _GIB:.2f} GiB must stay free, but {cache} has "
            f"{free / _GIB:.2f} GiB ({free:,} bytes) free. Fix: free space there, or point "
            "HF_HUB_CACHE (or HF_HOME) at a larger disk."
        )


def _weights(names: list[str]) -> str:
    found = [n for n in names if n.endswith((".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack"))]
    return "found " + ", ".join(found[:3]) if found else "no weight files"


def _head(model_id: str, name: str, commit: str | None, access: HubAccess) -> _File:
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    url = hf_hub_url(model_id, name, revision=commit, endpoint=access.endpoint)
    meta = get_hf_file_metadata(url, token=access.token, endpoint=access.endpoint)
    if meta.etag is None or meta.size is None:
        raise HubError(
            f"The hub sent no ETag or size for '{model_id}/{name}', so the download could not "
            "be checked. Fix: check HF_ENDPOINT points at a Hugging Face Hub."
        )
    same_host = urlsplit(meta.location).netloc == urlsplit(url).netloc
    return _File(name, meta.etag, int(meta.size), meta.location, same_host)


def _partial_size(path: Path, size: int) -> int:
    """Bytes of a partial download to keep; one longer than the file is discarded."""
    if not path.exists():
        return 0
    have = path.stat().st_size
    if have > size:
        path.unlink()
        return 0
    return have


def _fetch(
    f: _File, partial: Path, blob: Path, access: HubAccess, on_bytes: Callable[[int], None]
) -> None:
    """Stream one file into `partial` (continuing what is there), check it, move it to `blob`."""
    from filelock import FileLock
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import build_hf_headers

    headers = build_hf_headers(token=access.token)
    if not f.same_host:  # a signed CDN url: the token must not leave the hub
        headers.pop("authorization", None)
    partial.parent.mkdir(parents=True, exist_ok=True)
    # Two pulls of one model (CLI and server, say) must not append to one partial file.
    with FileLock(str(partial) + ".lock"):
        if blob.exists():  # the other pull finished it meanwhile
            on_bytes(f.size - (partial.stat().st_size if partial.exists() else 0))
            partial.unlink(missing_ok=True)
            return
        with partial.open("ab") as out:
            http_get(
                f.url,
                out,
                resume_size=out.tell(),
                headers=headers,
                expected_size=f.size,
                displayed_filename=f.name,
                tqdm_class=_byte_counter(on_bytes),
            )
        if not _matches_etag(partial, f.etag):
            partial.unlink()
            raise HubError(
                f"'{f.name}' arrived corrupted (its content does not match the hub's ETag "
                f"{f.etag}). Fix: run the same pull again; the file will be fetched anew."
            )
        blob.parent.mkdir(parents=True, exist_ok=True)
        os.replace(partial, blob)
    Path(str(partial) + ".lock").unlink(missing_ok=True)


def _matches_etag(path: Path, etag: str) -> bool:
    """sha256 for LFS files, the git blob id for others; other ETags are not checked."""
    if re.fullmatch(r"[0-9a-f]{64}", etag):
        digest = hashlib.sha256()
    elif re.fullmatch(r"[0-9a-f]{40}", etag):
        digest = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    else:
        return True
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest() == etag


def _byte_counter(on_bytes: Callable[[int], None]) -> Any:
    """A tqdm class for `http_get` that shows nothing and reports each chunk's bytes
    (negative when a server ignored Range and the file restarts)."""

    class ByteCounter(_silent_bar()):  # type: ignore[misc]
        def update(self, n: float | None = 1) -> bool | None:
            on_bytes(int(n or 0))
            return None

    return ByteCounter


def _silent_bar() -> Any:
    """A tqdm class that never draws: flextrain reports progress its own way."""
    from tqdm.auto import tqdm  # type: ignore[import-untyped]

    class Silent(tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return Silent
