"""The model registry under /api/training/models/registry: list, show, register,
promote, remove; and GET /api/training/models/diff of two versions.

A model is a name with numbered versions; `name` means the latest, `name:N` one
version (a path segment may hold the ':'). Who may do what: every role reads; a
trainer sees the folders registered by hand and the models of their own jobs (as
for jobs, admins and viewers see all). A trainer may register folders inside
FLEXTRAIN_HOME and the allowed roots, an admin any folder on the server. A new
version of a name that exists (by registering or promoting) is for the name's
owner (who registered its first version) or an admin. Removing is for the
version's owner (every version's, for a whole name) or an admin, and removes the
registration only, never the files. Writes are audit-logged by the middleware,
with the model's name as the target.
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
    ModelPromotion,
    ModelRegistration,
    ModelRemoved,
    RegisteredModelDetail,
)
from flextrain.public import ModelDiff, RegisteredModel, model_not_registered
from flextrain.service import TrainingService

router = APIRouter(
    prefix="/api/training/models/registry", tags=["models"], route_class=StrictJSONRoute
)
# Beside the registry's routes, not under them: any text after /registry/ may be a name.
diff_router = APIRouter(prefix="/api/training/models", tags=["models"], route_class=StrictJSONRoute)

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
def list_registered(
    user: ViewerDep, service: ServiceDep, all_versions: bool = False
) -> list[RegisteredModel]:
    """Registered models by name, the latest version of each (every version with
    all_versions=true): folders added by hand and models trained here."""
    models = service.list_registered_models(all_versions=all_versions)
    return [m for m in models if may_see(user, m)]


@router.get("/{name:path}", response_model=RegisteredModelDetail, responses=_ERRORS)
def show_registered(name: str, user: ViewerDep, service: ServiceDep) -> RegisteredModelDetail:
    """One registered version (`name` for the latest, `name:N`) with its lineage, the
    name's versions, and the jobs (that you may see) that trained from it."""
    model = _visible(service, user, name)
    jobs = [
        ModelJobUse(
            job_id=j.job_id,
            model_id=j.model_id,
            status=j.status,
            training_type=j.training_type,
            owner=j.owner,
            created_at=j.created_at,
        )
        for j in service.jobs_using_model(name)
        if can_see(user, j)
    ]
    versions = [v for v in service.model_versions(model.name) if may_see(user, v)]
    return RegisteredModelDetail(**model.model_dump(), versions=versions, jobs=jobs)


@router.post("", response_model=RegisteredModel, status_code=201, responses=_WRITE_ERRORS)
def register_model(
    body: ModelRegistration, request: Request, user: TrainerDep, service: ServiceDep
) -> RegisteredModel:
    """Register a model folder on the server under `name`, after checking it (config.json
    transformers can read, safetensors weights): version 1 of a new name, the next version
    of one that exists. Usable at once as a job's model_id."""
    request.state.audit_target = body.name
    if user.role != Role.ADMIN:
        _confine_folder(service, body.path)
        _may_extend(service, user, body.name)
    return service.register_model(body.path, body.name, body.description, owner=user.name)


@router.post("/promote", response_model=RegisteredModel, status_code=201, responses=_WRITE_ERRORS)
def promote_model(
    body: ModelPromotion, request: Request, user: TrainerDep, service: ServiceDep
) -> RegisteredModel:
    """Make a registered version, or a completed job's model, the newest version of
    `name` (the name means it from now on), with the source's lineage."""
    request.state.audit_target = body.name
    if user.role != Role.ADMIN:
        source = service.find_registered_model(body.source)
        if source is not None and not may_see(user, source):
            raise model_not_registered(body.source)
        job = service.get_job(body.source) if source is None else None
        if job is not None and not can_see(user, job):
            raise model_not_registered(body.source)
        _may_extend(service, user, body.name)
    return service.promote_model(body.source, body.name, body.description, owner=user.name)


@router.delete("/{name:path}", response_model=ModelRemoved, responses=_WRITE_ERRORS)
def remove_registered(name: str, user: TrainerDep, service: ServiceDep) -> ModelRemoved:
    """Remove one version (`name:N`) or every version of a name (`name`), for their owner
    or an admin; the model's files stay. Refused (409) while a job that has not finished
    names what goes."""
    model = _visible(service, user, name)
    going = [model] if ":" in name else service.model_versions(model.name)
    others = sorted({m.owner or "an admin" for m in going if m.owner != user.name})
    if user.role != Role.ADMIN and others:
        raise APIError(
            403,
            f"Model '{name}' has versions registered by {', '.join(others)}; only they or an "
            "admin may remove them.",
            field="name",
            fix="remove your own versions (name:N), or ask an admin.",
        )
    removed = service.remove_model_versions(name)
    paths = ", ".join(sorted({m.path for m in removed}))
    return ModelRemoved(
        name=removed[-1].name,
        path=removed[-1].path,
        versions=[m.version for m in removed],
        detail=f"Registration removed; the files in {paths} were left as they are.",
    )


@diff_router.get("/diff", response_model=ModelDiff, responses=_ERRORS)
def diff_models(a: str, b: str, user: ViewerDep, service: ServiceDep) -> ModelDiff:
    """Two registered versions side by side (a=team/llama:1&b=team/llama:2): lineage,
    the config settings that differ, and every metric with its change (b - a)."""
    _visible(service, user, a)
    _visible(service, user, b)
    return service.diff_models(a, b)


def _may_extend(service: TrainingService, user: User, name: str) -> None:
    """A new version of a name that exists is for the name's owner: who registered its
    first version."""
    if service.find_registered_model(name) is None:
        return  # a new name (or one the registry will refuse, saying why)
    first = service.model_versions(name)[0]
    if first.owner != user.name:
        raise APIError(
            403,
            f"Model '{first.name}' belongs to {first.owner or 'an admin'}; only they or an "
            "admin may add versions to it.",
            field="name",
            fix="choose a name of your own, or ask an admin.",
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
