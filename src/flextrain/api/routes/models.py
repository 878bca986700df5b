"""Hub search and model pulls under /api/training/models.

A pull runs in a thread of the server process and its progress lives in that
process's memory (`PullTracker` on `app.state`): a restart forgets the pull ids,
not the files, and pulling again continues where the last one stopped (files
already in the cache are skipped, a partial one resumes). The same model and
revision pulled twice at once share one download.
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from flextrain.accounts.users import User
from flextrain.api.deps import ServiceDep, TrainerDep, ViewerDep
from flextrain.api.errors import APIError
from flextrain.api.routes.model_registry import may_see
from flextrain.api.routing import StrictJSONRoute
from flextrain.api.schemas import (
    ErrorBody,
    ModelSearchResult,
    PullRequest,
    PullStatus,
    TrainableModel,
)
from flextrain.public import HubAccess, ModelFilters, PullProgress
from flextrain.service import TrainingService

router = APIRouter(prefix="/api/training/models", tags=["models"], route_class=StrictJSONRoute)

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "No valid token."},
    403: {"model": ErrorBody, "description": "The role may not do this."},
    422: {"model": ErrorBody, "description": "Invalid input; each field named."},
}
# Pulls remembered per server process; the oldest finished ones are forgotten first.
MAX_REMEMBERED_PULLS = 200


class PullTracker:
    """The server's pulls by id, each updated by its own download thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pulls: OrderedDict[str, PullStatus] = OrderedDict()

    def get(self, pull_id: str) -> PullStatus | None:
        with self._lock:
            status = self._pulls.get(pull_id)
            return status.model_copy() if status is not None else None

    def start(self, body: PullRequest, user: str, access: HubAccess) -> PullStatus:
        with self._lock:
            for status in self._pulls.values():
                same = (status.model_id, status.revision) == (body.model_id, body.revision)
                if same and status.status == "running":
                    return status.model_copy()
            status = PullStatus(
                pull_id=uuid.uuid4().hex[:12],
                model_id=body.model_id,
                revision=body.revision,
                status="running",
                requested_by=user,
                started_at=datetime.now(UTC),
            )
            self._pulls[status.pull_id] = status
            self._forget_old()
        threading.Thread(
            target=self._run, args=(status.pull_id, access), name=f"pull-{status.pull_id}"
        ).start()
        return status.model_copy()

    def _run(self, pull_id: str, access: HubAccess) -> None:
        status = self._pulls[pull_id]

        def on_progress(event: PullProgress) -> None:
            with self._lock:
                status.bytes_done = event.bytes_done
                status.bytes_total = event.bytes_total
                status.percent = event.percent
                status.files_done = event.files_done
                status.files_total = event.files_total

        try:
            result = TrainingService.pull_model(
                status.model_id, revision=status.revision, access=access, progress=on_progress
            )
        except Exception as exc:  # reported through the status, never lost in a thread
            with self._lock:
                status.status = "failed"
                status.error = str(exc) or type(exc).__name__
                status.finished_at = datetime.now(UTC)
            return
        with self._lock:
            status.status = "completed"
            status.path = str(result.path)
            status.percent = 100.0
            status.finished_at = datetime.now(UTC)

    def _forget_old(self) -> None:
        finished = [k for k, v in self._pulls.items() if v.status != "running"]
        while len(self._pulls) > MAX_REMEMBERED_PULLS and finished:
            del self._pulls[finished.pop(0)]


def pull_tracker(request: Request) -> PullTracker:
    tracker: PullTracker | None = getattr(request.app.state, "model_pulls", None)
    if tracker is None:
        tracker = PullTracker()
        request.app.state.model_pulls = tracker
    return tracker


def search_listing(
    service: TrainingService, user: User, filters: ModelFilters
) -> tuple[list[TrainableModel], list[str]]:
    """Built-in, registered (those `user` may see) and, when asked and online, hub models,
    and the listing's notes."""
    listing = service.list_trainable_models(filters, lambda m: may_see(user, m))
    items = [TrainableModel(**m.model_dump()) for m in listing.models]
    return items, listing.notes


@router.get("/search", response_model=ModelSearchResult, responses=_ERRORS)
def search_models(
    filters: Annotated[ModelFilters, Query()], user: ViewerDep, service: ServiceDep
) -> ModelSearchResult:
    """Models a job could start from, with the training types each supports: built-ins and
    registered models always, hub models when a filter is given (or include_hub=true) and
    the server is online. `notes` says when the hub was not searched, and why."""
    items, notes = search_listing(service, user, filters)
    return ModelSearchResult(items=items, notes=notes)


@router.post(
    "/pull",
    response_model=PullStatus,
    status_code=202,
    responses={
        **_ERRORS,
        409: {"model": ErrorBody, "description": "The server is offline (HF_HUB_OFFLINE)."},
    },
)
def start_pull(
    body: PullRequest, request: Request, user: TrainerDep, service: ServiceDep
) -> PullStatus:
    """Start downloading a hub model into the server's hub cache; poll
    GET /api/training/models/pulls/{pull_id} for progress. Gated models need the server's
    HF_TOKEN to have access; failures (gated, not found, disk space) appear as the pull's
    `error`."""
    request.state.audit_target = body.model_id
    access = service.pull_access(body.model_id)
    return pull_tracker(request).start(body, user.name, access)


@router.get(
    "/pulls/{pull_id}",
    response_model=PullStatus,
    responses={**_ERRORS, 404: {"model": ErrorBody, "description": "No such pull."}},
)
def pull_status(pull_id: str, request: Request, user: ViewerDep) -> PullStatus:
    """Progress of a pull: bytes done of total, percent, status, and the error if it failed."""
    status = pull_tracker(request).get(pull_id)
    if status is None:
        raise APIError(
            404,
            f"No pull with id '{pull_id[:40]}' on this server (pulls are kept in the server's "
            "memory and forgotten on restart). Fix: POST /api/training/models/pull again; "
            "files already pulled are not downloaded twice.",
            field="pull_id",
        )
    return status
