"""The model registry under /api/training/models/registry: list, show, register, remove.

Who may do what: every role reads; a trainer sees the folders registered by hand
and the models of their own jobs (as for jobs, admins and viewers see all). A
trainer may register folders inside FLEXTRAIN_HOME and the allowed roots, an admin
any folder on the server. Removing is for the registration's owner or an admin,
and removes the registration only, never the files. Writes are audit-logged by
the middleware, with the model's name as the target.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request

from flextrain.accounts.users import Role, User
from flextrain.api.deps import (
    ServiceDep,
    TrainerDep,
    ViewerDep,
    allowed_roots,
    can_see,
    is_inside,
)
from flextrain.api.errors import APIError
from flextrain.api.routing import StrictJSONRoute
from flextrain.api.schemas import (
    ErrorBody,
    ModelJobUse,
    ModelRegistration,
    ModelRemoved,
    RegisteredModelDetail,
)
from flextrain.public import RegisteredModel, model_not_registered
from flextrain.service import TrainingService

router = APIRouter(
    prefix="/api/training/models/registry", tags=["models"], route_class=StrictJSONRoute
)

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody},
    403: {"model": ErrorBody},
    404: {"model": ErrorBody},
    422: {"model": ErrorBody},
}
_WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    409: {"model": ErrorBody, "description": "The name is taken, or a waiting job uses it."},
}


def may_see(user: User, model: RegisteredModel) -> bool:
    """Folders registered by hand are for everyone; a trained model is as private as the
    job that made it (a trainer sees their own)."""
    return user.role != Role.TRAINER or model.source == "local" or model.owner == user.name


def _visible(service: TrainingService, user: User, name: str) -> RegisteredModel:
    """The registration, or 404 when there is none *or* the user may not see it."""
    model = service.find_registered_model(name)
    if model is None or not may_see(user, model):
        raise model_not_registered(name)
    return model


@router.get("", response_model=list[RegisteredModel], responses=_ERRORS)
def list_registered(user: ViewerDep, service: ServiceDep) -> list[RegisteredModel]:
    """Registered models by name: folders added by hand and models trained here."""
    return [m for m in service.list_registered_models() if may_see(user, m)]


@router.get("/{name:path}", response_model=RegisteredModelDetail, responses=_ERRORS)
def show_registered(name: str, user: ViewerDep, service: ServiceDep) -> RegisteredModelDetail:
    """One registered model with its lineage and the jobs (that you may see) that trained
    from it, by its name or its folder."""
    model = _visible(service, user, name)
    jobs = [
        ModelJobUse(
            job_id=j.job_id,
            status=j.status,
            training_type=j.training_type,
            owner=j.owner,
            created_at=j.created_at,
        )
        for j in service.jobs_using_model(model.name)
        if can_see(user, j)
    ]
    return RegisteredModelDetail(**model.model_dump(), jobs=jobs)


@router.post("", response_model=RegisteredModel, status_code=201, responses=_WRITE_ERRORS)
def register_model(
    body: ModelRegistration, request: Request, user: TrainerDep, service: ServiceDep
) -> RegisteredModel:
    """Register a model folder on the server under `name`, after checking it (config.json
    transformers can read, safetensors weights). Usable at once as a job's model_id."""
    request.state.audit_target = body.name
    if user.role != Role.ADMIN:
        _confine_folder(service, body.path)
    return service.register_model(body.path, body.name, body.description, owner=user.name)


@router.delete("/{name:path}", response_model=ModelRemoved, responses=_WRITE_ERRORS)
def remove_registered(name: str, user: TrainerDep, service: ServiceDep) -> ModelRemoved:
    """Remove a registration (its owner or an admin); the model's files stay. Refused (409)
    while a job that has not finished names the model."""
    model = _visible(service, user, name)
    if user.role != Role.ADMIN and model.owner != user.name:
        raise APIError(
            403,
            f"Model '{model.name}' was registered by {model.owner or 'an admin'}; only they "
            "or an admin may remove it.",
            field="name",
            fix="remove your own registrations, or ask an admin.",
        )
    removed = service.remove_registered_model(model.name)
    return ModelRemoved(
        name=removed.name,
        path=removed.path,
        detail=f"Registration removed; the files in {removed.path} were left as they are.",
    )


def _confine_folder(service: TrainingService, path: str) -> None:
    """A trainer's folder must lie inside FLEXTRAIN_HOME or the allowed roots once '..'
    and symbolic links are resolved; checked before anything looks at the folder, so a
    refusal says nothing about what exists elsewhere on the server."""
    roots = allowed_roots(service)
    try:
        target = Path(path).expanduser().resolve()
    except (OSError, RuntimeError, ValueError):
        target = None
    if target is None or not any(is_inside(target, root) for root in roots):
        raise HTTPException(
            403,
            f"path '{path[:200]}' is outside the folders you may register "
            f"({', '.join(map(str, roots))}). Fix: copy the model there, or ask an admin to "
            "register it or to add its folder to FLEXTRAIN_ALLOWED_ROOTS.",
        )
