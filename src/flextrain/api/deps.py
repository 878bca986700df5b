"""Who is calling: bearer-token authentication and role checks as dependencies.

With authentication off (`flextrain serve --no-auth`, loopback only) every
request acts as a local admin, so a single user on their own machine needs no
token.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from flextrain.accounts.users import Role, User
from flextrain.config.schemas import BasicTrainingConfig
from flextrain.data.registry import DatasetNotFoundError
from flextrain.jobs.store import TrainingJob
from flextrain.service import JobNotFoundError, TrainingService

LOCAL_USER = User(
    name="local", role=Role.ADMIN, token_hint="", created_at=datetime(2026, 1, 1, tzinfo=UTC)
)


def get_service(request: Request) -> TrainingService:
    service: TrainingService = request.app.state.service
    return service


ServiceDep = Annotated[TrainingService, Depends(get_service)]


def current_user(request: Request, service: ServiceDep) -> User:
    if not request.app.state.auth_enabled:
        request.state.user = LOCAL_USER
        return LOCAL_USER
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HTTPException(
            401,
            "Authentication required: send 'Authorization: Bearer <token>' "
            "(create one with `flextrain users create NAME --role trainer`).",
            headers={"WWW-Authenticate": "Bearer"},
        )
    user = service.users.authenticate(token.strip())
    if user is None:
        raise HTTPException(
            401,
            "The token is not valid or was revoked: ask an admin for a new one.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    request.state.user = user
    return user


UserDep = Annotated[User, Depends(current_user)]


def require(role: Role) -> Callable[[User], User]:
    """A dependency that lets through users whose role is at least `role`."""

    def check(user: UserDep) -> User:
        if not user.role.allows(role):
            raise HTTPException(
                403,
                f"Your role '{user.role.value}' may not do this; it needs '{role.value}' "
                "or higher.",
            )
        return user

    return check


ViewerDep = Annotated[User, Depends(require(Role.VIEWER))]
TrainerDep = Annotated[User, Depends(require(Role.TRAINER))]
AdminDep = Annotated[User, Depends(require(Role.ADMIN))]


def can_see(user: User, job: TrainingJob) -> bool:
    """Admins and viewers (a read-only monitoring role) see every job; trainers their own."""
    return user.role != Role.TRAINER or job.owner == user.name


def visible_job(service: TrainingService, user: User, job_id: str) -> TrainingJob:
    """The job, or 404 when it does not exist *or* belongs to someone the user may not see
    (a 403 would confirm that the id exists)."""
    job = service.get_job(job_id)
    if job is None or not can_see(user, job):
        raise JobNotFoundError(f"No training job with id '{job_id}'.")
    return job


def owned_job(service: TrainingService, user: User, job_id: str) -> TrainingJob:
    """A job the user may change: their own, or any job for an admin."""
    job = visible_job(service, user, job_id)
    if user.role != Role.ADMIN and job.owner != user.name:
        raise HTTPException(
            403, f"Job {job_id} belongs to another user; only an admin may change it."
        )
    return job


def can_use_dataset(service: TrainingService, user: User, name: str) -> bool:
    """Admins and viewers see every dataset; trainers the shared ones and their own."""
    access = service.datasets.access(name)
    if access is None:
        return False
    owner, shared = access
    return user.role != Role.TRAINER or shared or owner == user.name


def confine_dataset(service: TrainingService, user: User, dataset_id: str | None) -> None:
    """Non-admins name datasets by registered id (optionally @version) that they may
    see, never by a server file path: a path would let them read facts (rows, labels)
    of any file the server can open."""
    if dataset_id is None or user.role == Role.ADMIN:
        return
    name = dataset_id.rpartition("@")[0] or dataset_id
    if not can_use_dataset(service, user, name):
        names = [n for n in service.datasets.names() if can_use_dataset(service, user, n)]
        raise DatasetNotFoundError(
            f"Dataset '{dataset_id}' is not registered. Fix: use one of {', '.join(names)}, "
            "upload it (POST /api/datasets), or ask an admin to register it; file paths are "
            "for admins only."
        )


def user_output_root(service: TrainingService, user: User) -> Path:
    return service.settings.home / "outputs" / user.name


def confine_config(service: TrainingService, user: User, config: BasicTrainingConfig) -> None:
    """What a non-admin's job may name: registered datasets, and an output_dir inside
    their own folder under FLEXTRAIN_HOME/outputs (never another job's folder)."""
    confine_dataset(service, user, config.dataset_id)
    if user.role == Role.ADMIN or config.output_dir is None:
        return
    root = user_output_root(service, user).resolve()
    target = Path(config.output_dir).expanduser()
    target = (root / target if not target.is_absolute() else target).resolve()
    if target != root and root not in target.parents:
        raise HTTPException(
            403,
            f"output_dir '{config.output_dir}' is outside your folder {root}. Fix: leave "
            "output_dir empty (the job's own folder) or name a folder inside yours.",
        )
    config.output_dir = str(target)
