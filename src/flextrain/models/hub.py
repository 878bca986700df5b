"""Find models on the Hugging Face Hub and pull them into the shared hub cache.

Search goes through `HfApi.list_models` (task, library, license and size filters,
sorted by downloads); each hit's `config.json` is fetched so the compatibility
checker can say which training types it supports. `pull` downloads exactly the
files the resolver would (`resolve._HUB_PATTERNS`, safetensors weights only) into
the cache the resolver reads, so a pulled model then trains offline.

Why `pull` streams the files itself instead of calling `snapshot_download`:
huggingface_hub 2.x writes each download to a process-unique temporary file and
deletes it on failure, so an interrupted multi-GB file starts again from zero.
Here each file goes to a partial file named after its ETag under
`CACHE/.flextrain-partial/`, fetched with huggingface_hub's own `http_get` (which
sends `Range` for the bytes already there and retries a dropped connection from
where it stopped), checked against the ETag (sha256 for LFS files, the git blob
id otherwise), and moved into `blobs/`. `snapshot_download` then writes the
snapshot links, `refs/` and the tree listing, finding every blob already there.

huggingface_hub reads `HF_ENDPOINT` and `HF_HUB_OFFLINE` once, when it is imported;
`HubAccess.from_env()` reads them when called and the endpoint is passed to every
call, so a changed environment (a test's local hub, a server started with a mirror)
is honoured.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field

from flextrain.config.enums import TrainingType
from flextrain.errors import ConflictError
from flextrain.models.builtin import BUILTIN_IDS, MINILM_ID
from flextrain.models.compatibility import ModelCompatibility
from flextrain.models.resolve import _HUB_PATTERNS, ModelNotFoundError

log = logging.getLogger("flextrain.models.hub")
HUB_PATTERNS = list(_HUB_PATTERNS)
PARTIAL_DIR = ".flextrain-partial"
# Left free after a pull: a full disk breaks the job database and checkpoints too.
DEFAULT_RESERVE_BYTES = 512 * 1024**2
LOGIN_FIX = (
    "set HF_TOKEN to a token from https://huggingface.co/settings/tokens, or run "
    "`huggingface-cli login` (`hf auth login`)"
)
# What each head lets a model do, in the hub's task names.
_HEAD_TASKS = {
    "causal_lm": "text-generation",
    "masked_lm": "fill-mask",
    "sequence_classification": "text-classification",
}
_BUILTIN_FACTS: dict[str, tuple[str, str | None]] = {  # task, license
    MINILM_ID: ("sentence-similarity", "apache-2.0"),
}


class HubError(ConflictError, RuntimeError):
    """The hub could not give what was asked; the message names the fix.

    A 409 (offline, gated, no disk space: the request was fine, the situation is not);
    the CLI's `models` commands have always exited 1 for it.
    """

    code = "hub"
    exit_code = 1
    field = "model_id"


class HubOfflineError(HubError):
    """HF_HUB_OFFLINE is set, or the hub cannot be reached."""

    code = "hub_offline"


class HubAccessError(HubError):
    """A gated or private model, or a missing or invalid token."""

    code = "hub_access"


class HubModelNotFoundError(ModelNotFoundError, HubError):
    """No such model or revision on the hub: a ModelNotFoundError first (404, exit 2)."""

    code = "hub_model_not_found"
    http_status = 404
    exit_code = 2


class DiskSpaceError(HubError):
    """The cache's disk has too little room for the files to pull."""

    code = "disk_space"


@dataclass(frozen=True)
class HubAccess:
    """Where the hub is and how to reach it.

    `endpoint` None is huggingface_hub's own (huggingface.co); `token` None lets
    huggingface_hub use HF_TOKEN or the token saved by `huggingface-cli login`.
    """

    endpoint: str | None = None
    token: str | None = None
    offline: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> HubAccess:
        from huggingface_hub import constants

        env = os.environ if environ is None else environ
        # Either switch blocks requests: huggingface_hub checks its import-time value.
        offline = _truthy(env.get("HF_HUB_OFFLINE")) or constants.is_offline_mode()
        endpoint = (env.get("HF_ENDPOINT") or "").rstrip("/") or None
        return cls(endpoint=endpoint, token=env.get("HF_TOKEN") or None, offline=offline)

    @property
    def where(self) -> str:
        return self.endpoint or "https://huggingface.co"


def _truthy(value: str | None) -> bool:
    return (value or "").strip().upper() in {"1", "ON", "YES", "TRUE"}


# -- search -----------------------------------------------------------------------------
class ModelFilters(BaseModel):
    """What to list. Hub search runs when `include_hub` is true, or, left unset, when
    any filter is given (a plain listing stays local, fast and offline)."""

    search: str | None = Field(None, max_length=200, description="Text the model id contains.")
    task: str | None = Field(
        None, max_length=100, description="Hub task (pipeline tag), e.g. text-generation."
    )
    library: str | None = Field(None, max_length=100, description="e.g. transformers.")
    license: str | None = Field(None, max_length=100, description="e.g. apache-2.0, mit.")
    max_parameters: int | None = Field(None, ge=1, description="At most this many parameters.")
    include_hub: bool | None = Field(
        None, description="Search the hub too (default: when any filter is given)."
    )
    limit: int = Field(10, ge=1, le=100, description="Most hub results.")

    def wants_hub(self) -> bool:
        if self.include_hub is not None:
            return self.include_hub
        return any(
            v is not None
            for v in (self.search, self.task, self.library, self.license, self.max_parameters)
        )


class TrainableEntry(BaseModel):
    """One model a job could start from, with what it can be trained for."""

    model_config = {"protected_namespaces": ()}

    model_id: str
    description: str = ""
    source: Literal["builtin", "local", "hub"] = "builtin"
    num_parameters: int | None = None
    supported_training_types: list[TrainingType] = Field(default_factory=list)
    is_compatible: bool = False
    task: str | None = None
    library: str | None = None
    license: str | None = None
    downloads: int | None = None
    gated: bool = False
    path: str | None = None
    note: str | None = Field(None, description="Why facts are missing, or what pulling needs.")


@dataclass
class TrainableListing:
    models: list[TrainableEntry]
    notes: list[str] = field(default_factory=list)


class LocalModel(Protocol):
    """A registry entry (flextrain.models.registry.RegisteredModel has these)."""

    name: str
    path: str
    num_parameters: int | None
    training_types: list[str]


Check = Callable[[str], ModelCompatibility]


def list_trainable(
    filters: ModelFilters,
    *,
    check: Check,
    local: Iterable[LocalModel] = (),
    access: HubAccess | None = None,
) -> TrainableListing:
    """Built-ins and registered models always, hub models when asked and online.

    `check` is the service's compatibility check; built-ins and hub hits go through it
    (a hub hit by its downloaded config.json), registered models keep the facts the
    registry recorded when they were added.
    """
    models: list[TrainableEntry] = []
    for model_id in BUILTIN_IDS:
        models.append(_builtin_entry(model_id, check))
    for entry in local:
        models.append(_local_entry(entry))
    models = [m for m in models if _matches(m, filters)]
    notes: list[str] = []
    if filters.wants_hub():
        access = access or HubAccess.from_env()
        if access.offline:
            notes.append(
                "The hub was not searched: HF_HUB_OFFLINE is set. Fix: unset it (or set "
                "HF_HUB_OFFLINE=0) to search huggingface.co; local and built-in models are listed."
            )
        else:
            try:
                models.extend(hub_entries(filters, check=check, access=access))
            except HubError as exc:
                notes.append(f"The hub was not searched: {exc}")
            except Exception as exc:  # an odd answer from a mirror must not sink the listing
                log.warning("Hub search failed", exc_info=True)
                notes.append(
                    f"The hub search failed ({type(exc).__name__}: {str(exc)[:200]}). Fix: "
                    f"check that {access.where} is a Hugging Face Hub (HF_ENDPOINT)."
                )
    return TrainableListing(models=models, notes=notes)


def _builtin_entry(model_id: str, check: Check) -> TrainableEntry:
    from flextrain.models.resolve import ModelResolver

    report = check(model_id)
    task, license_ = _BUILTIN_FACTS.get(model_id, (_task_of(report.task_heads), None))
    return TrainableEntry(
        model_id=model_id,
        description=ModelResolver.builtins()[model_id],
        source="builtin",
        num_parameters=report.num_parameters,
        supported_training_types=list(report.supported_training_types),
        is_compatible=report.is_compatible,
        task=task,
        library="transformers",
        license=license_,
    )


def _local_entry(entry: LocalModel) -> TrainableEntry:
    types = [TrainingType(t) for t in entry.training_types if t in TrainingType._value2member_map_]
    return TrainableEntry(
        model_id=entry.name,
        description=getattr(entry, "description", "") or f"registered folder {entry.path}",
        source="local",
        num_parameters=entry.num_parameters,
        supported_training_types=types,
        is_compatible=bool(types),
        library="transformers",
        path=entry.path,
    )


def _task_of(heads: list[str]) -> str | None:
    return next((_HEAD_TASKS[h] for h in heads if h in _HEAD_TASKS), None)


def _matches(entry: TrainableEntry, f: ModelFilters) -> bool:
    text = f"{entry.model_id} {entry.description}".lower()
    return (
        (f.search is None or f.search.lower() in text)
        and (f.task is None or entry.task == f.task)
        and (f.library is None or entry.library == f.library)
        and (f.license is None or entry.license == f.license)
        and (
            f.max_parameters is None
            or (entry.num_parameters is not None and entry.num_parameters <= f.max_parameters)
        )
    )


def hub_entries(filters: ModelFilters, *, check: Check, access: HubAccess) -> list[TrainableEntry]:
    """Hub models matching `filters`, most downloaded first, each checked by its config."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=access.endpoint, token=access.token)
    tags = [t for t in (filters.library, filters.license and f"license:{filters.license}") if t]
    with hub_errors("search", access):
        hits = list(
            api.list_models(
                search=filters.search,
                pipeline_tag=filters.task,
                filter=tags or None,
                num_parameters=f"max:{filters.max_parameters}" if filters.max_parameters else None,
                sort="downloads",
                limit=filters.limit,
                expand=[
                    "downloads",
                    "likes",
                    "pipeline_tag",
                    "library_name",
                    "tags",
                    "gated",
                    "safetensors",
                ],
            )
        )
    out = []
    for hit in hits:
        entry = _hub_entry(hit)
        # The hub filters by tag (a library may be a tag, not library_name); task and
        # license are checked again in case it ignored one.
        again = filters.model_copy(update={"search": None, "max_parameters": None, "library": None})
        if not _matches(entry, again):
            continue
        if filters.max_parameters and (entry.num_parameters or 0) > filters.max_parameters:
            continue
        out.append(_with_compatibility(entry, check, access))
    return out


def _hub_entry(hit: Any) -> TrainableEntry:
    tags: list[str] = list(hit.tags or [])
    license_ = next((t.split(":", 1)[1] for t in tags if t.startswith("license:")), None)
    library = hit.library_name or next((t for t in tags if t == "transformers"), None)
    total = hit.safetensors.total if hit.safetensors is not None else None
    return TrainableEntry(
        model_id=hit.id,
        description=f"hub model, {hit.downloads or 0:,} downloads",
        source="hub",
        num_parameters=total,
        task=hit.pipeline_tag,
        library=library,
        license=license_,
        downloads=hit.downloads,
        gated=bool(hit.gated),
    )


def _with_compatibility(entry: TrainableEntry, check: Check, access: HubAccess) -> TrainableEntry:
    """The checker's verdict from the model's config.json (a few KB, cached)."""
    from huggingface_hub import hf_hub_download

    try:
        with hub_errors(entry.model_id, access):
            folder = Path(
                hf_hub_download(
                    entry.model_id, "config.json", endpoint=access.endpoint, token=access.token
                )
            ).parent
        report = check(str(folder))
    except HubAccessError:
        note = f"gated: accept its terms on the hub, then {LOGIN_FIX}, to check and pull it"
        return entry.model_copy(update={"note": note})
    except Exception as exc:  # a hub config transformers cannot read must not end the listing
        note = f"not checked: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        return entry.model_copy(update={"note": note})
    return entry.model_copy(
        update={
            "num_parameters": entry.num_parameters or report.num_parameters,
            "supported_training_types": list(report.supported_training_types),
            "is_compatible": report.is_compatible,
            "note": "gated: needs a token with access to pull" if entry.gated else None,
        }
    )


# -- errors -----------------------------------------------------------------------------
@contextmanager
def hub_errors(model_id: str, access: HubAccess) -> Iterator[None]:
    """huggingface_hub's exceptions as HubErrors whose message names the fix."""
    import httpx2
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        yield
    except GatedRepoError as exc:
        status = exc.response.status_code if exc.response is not None else 401
        why = (
            "your token has not been granted access"
            if status == 403
            else "no token was sent (not logged in)"
        )
        raise HubAccessError(
            f"Model '{model_id}' is gated: {why}. Fix: accept its terms on "
            f"{access.where}/{model_id}, then {LOGIN_FIX}."
        ) from None
    except RevisionNotFoundError:
        raise HubModelNotFoundError(
            f"Model '{model_id}' has no such revision on {access.where}. Fix: use a branch, "
            "tag or commit the model has (default: main)."
        ) from None
    except RepositoryNotFoundError:
        raise HubModelNotFoundError(
            f"Model '{model_id}' was not found on {access.where} (or it is private). Fix: check "
            f"the id (e.g. `flextrain models search {model_id.split('/')[-1]}`); for a private "
            f"model, {LOGIN_FIX}."
        ) from None
    except OfflineModeIsEnabled:
        raise HubOfflineError(offline_message(model_id)) from None
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status == 401:
            raise HubAccessError(
                f"The hub refused the token for '{model_id}' (invalid or expired). Fix: "
                f"{LOGIN_FIX}, or unset HF_TOKEN to go anonymous."
            ) from None
        raise HubError(
            f"The hub answered {status} for '{model_id}': {str(exc).strip().splitlines()[0]}. "
            "Fix: try again later."
        ) from None
    except (httpx2.ConnectError, httpx2.TimeoutException, httpx2.RemoteProtocolError) as exc:
        raise HubOfflineError(
            f"Could not reach {access.where} for '{model_id}' ({type(exc).__name__}). Fix: check "
            "the network (and HF_ENDPOINT), then run the same command again: finished files are "
            "kept and a partial one continues."
        ) from None


def offline_message(model_id: str) -> str:
    return (
        f"Cannot pull '{model_id}': HF_HUB_OFFLINE is set, so the hub is not contacted. Fix: "
        "unset it (or HF_HUB_OFFLINE=0) and connect to the internet, or use a local model "
        f"folder or a built-in: {', '.join(BUILTIN_IDS)}."
    )
