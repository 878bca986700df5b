"""Who is calling: bearer-token authentication and role checks as dependencies.

With authentication off (`flextrain serve --no-auth`, loopback only) every
request acts as a local admin, so a single user on their own machine needs no
token.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from flextrain.accounts.users import Role, User
from flextrain.api.errors import APIError
from flextrain.api.limits import FailedAuthLimiter
from flextrain.config.enums import TrainingStatus
from flextrain.config.schemas import (
    AdvancedTrainingConfig,
    BasicTrainingConfig,
    ExpertTrainingConfig,
)
from flextrain.public import BUILTIN_IDS, JobNotFoundError, TrainingJob, dataset_not_registered
from flextrain.service import TrainingService

# The only job id the service makes (uuid4().hex[:12]); nothing else reaches the store.
JOB_ID = re.compile(r"^[0-9a-f]{12}$")

LOCAL_USER = User(
    name="local", role=Role.ADMIN, token_hint="", created_at=datetime(2026, 1, 1, tzinfo=UTC)
)


async def get_service(request: Request) -> TrainingService:
    # async: a plain attribute read, not worth a hop to the thread pool on every request.
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
    limiter = auth_limiter(request)
    client = request.client.host if request.client else "unknown"
    _refuse_if_throttled(limiter, client)
    user = service.users.authenticate(token.strip())
    if user is None:
        limiter.record_failure(client)
        raise HTTPException(
            401,
            "The token is not valid or was revoked: ask an admin for a new one.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    request.state.user = user
    return user


UserDep = Annotated[User, Depends(current_user)]


def auth_limiter(request: Request) -> FailedAuthLimiter:
    """The app's limiter of failed token checks (made on first use for apps built by hand)."""
    limiter: FailedAuthLimiter | None = getattr(request.app.state, "auth_limiter", None)
    if limiter is None:
        service: TrainingService = request.app.state.service
        limiter = FailedAuthLimiter(service.settings.max_failed_auth_per_minute)
        request.app.state.auth_limiter = limiter
    return limiter


def _refuse_if_throttled(limiter: FailedAuthLimiter, client: str) -> None:
    """Too many wrong tokens from one address: refuse every token check from it (even a
    right one) until the oldest failure is a minute old, so guessing gains nothing."""
    wait = limiter.retry_after(client)
    if wait is not None:
        raise APIError(
            429,
            f"Too many failed authentications from {client}: at most "
            f"{limiter.max_failures} per minute (max_failed_auth_per_minute). Fix: check the "
            f"token and retry after {wait} s.",
            field="Authorization",
            headers={"Retry-After": str(wait)},
        )


def require(role: Role) -> Callable[[User], Awaitable[User]]:
    """A dependency that lets through users whose role is at least `role`."""

    async def check(user: UserDep) -> User:  # no I/O: runs on the event loop
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
    check_job_id(job_id)
    job = service.get_job(job_id)
    if job is None or not can_see(user, job):
        raise JobNotFoundError(f"No training job with id '{job_id}'.")
    return job


def check_job_id(job_id: str) -> None:
    """Only an id of the service's own format goes on to the store or a folder name."""
    if not JOB_ID.match(job_id):
        shown = job_id if len(job_id) <= 40 else job_id[:40] + "..."
        raise JobNotFoundError(
            f"No training job with id {shown!r}. Job ids are 12 lowercase hex characters, "
            "e.g. 3f2a9c1b0d4e (see GET /api/training/jobs)."
        )


def check_queue_quota(service: TrainingService, user: User) -> None:
    """A non-admin may have at most max_queued_jobs_per_user jobs waiting in the queue."""
    if user.role == Role.ADMIN:
        return
    limit = service.settings.max_queued_jobs_per_user
    queued = service.count_jobs(status=TrainingStatus.QUEUED, owner=user.name)
    if queued >= limit:
        raise APIError(
            429,
            f"You have {queued} queued jobs, the most a user may have "
            f"(max_queued_jobs_per_user={limit}). Fix: wait until some start, or cancel one.",
            field="queue",
        )


def owned_job(service: TrainingService, user: User, job_id: str) -> TrainingJob:
    """A job the user may change: their own, or any job for an admin."""
    job = visible_job(service, user, job_id)
    if user.role != Role.ADMIN and job.owner != user.name:
        raise APIError(
            403,
            f"Job {job_id} belongs to another user; only an admin may change it.",
            field="job_id",
            fix="change your own jobs, or ask an admin.",
        )
    return job


def can_use_dataset(service: TrainingService, user: User, name: str) -> bool:
    """Admins and viewers see every dataset; trainers the shared ones and their own."""
    access = service.dataset_access(name)
    if access is None:
        return False
    owner, shared = access
    return user.role != Role.TRAINER or shared or owner == user.name


def confine_dataset(
    service: TrainingService, user: User, dataset_id: str | None, field: str = "dataset_id"
) -> None:
    """Non-admins name datasets by registered id (optionally @version) that they may
    see, never by a server file path: a path would let them read facts (rows, labels)
    of any file the server can open."""
    if dataset_id is None or user.role == Role.ADMIN:
        return
    name = dataset_id.rpartition("@")[0] or dataset_id
    if not can_use_dataset(service, user, name):
        names = [n for n in service.dataset_names() if can_use_dataset(service, user, n)]
        raise dataset_not_registered(dataset_id, names, field=field, paths_allowed=False)


def user_output_root(service: TrainingService, user: User) -> Path:
    return service.settings.home / "outputs" / user.name


def allowed_roots(service: TrainingService) -> list[Path]:
    """Folders a non-admin may name files in: FLEXTRAIN_HOME and FLEXTRAIN_ALLOWED_ROOTS,
    symlinks resolved."""
    settings = service.settings
    return [
        settings.home.resolve(),
        *(root.expanduser().resolve() for root in settings.allowed_roots),
    ]


def is_inside(path: Path, root: Path) -> bool:
    """`path` is `root` or below it; both already resolved (so '..' and links are gone)."""
    return path == root or root in path.parents


def confine_model(service: TrainingService, user: User, model_id: str) -> None:
    """A non-admin's model_id may be a built-in, a hub id, or a local folder inside the
    allowed roots. The folder is resolved first, so '..' and symlinks that lead out are
    refused however they are spelled; a path outside is refused whether or not it exists
    (no probing of the server's disk)."""
    if user.role == Role.ADMIN or model_id in BUILTIN_IDS:
        return
    local = Path(model_id.strip()).expanduser()
    looks_local = model_id.strip().startswith(("/", ".", "~")) or model_id.count("/") > 1
    if not (looks_local or local.exists()):
        return  # a hub id
    target = local.resolve()
    roots = allowed_roots(service)
    if not any(is_inside(target, root) for root in roots):
        raise HTTPException(
            403,
            f"model_id '{model_id}' is a local folder outside the folders you may use "
            f"({', '.join(map(str, roots))}). Fix: use a built-in or hub model or one trained "
            "here, or ask an admin to add its folder to FLEXTRAIN_ALLOWED_ROOTS.",
        )


def confine_upload(service: TrainingService, name: str) -> None:
    """The folder an upload is stored in must stay inside the datasets root once resolved:
    a symlink planted there (say `home/datasets/team%2Fx -> /elsewhere`) is refused."""
    root = service.dataset_storage.resolve()
    if not is_inside(service.dataset_folder(name).resolve(), root):
        raise HTTPException(
            403,
            f"name '{name}': its dataset folder leads outside {root} (a symbolic link). "
            "Fix: choose another name, or ask an admin to remove the link.",
        )


def confine_reads(service: TrainingService, user: User, config: BasicTrainingConfig) -> None:
    """What a non-admin's config may read: registered datasets (training and eval) and a
    model that is not a local folder outside the allowed roots."""
    confine_dataset(service, user, config.dataset_id)
    if isinstance(config, AdvancedTrainingConfig):
        confine_dataset(service, user, config.eval_file, field="eval_file")
    confine_model(service, user, config.model_id)


def confine_distributed(
    service: TrainingService, user: User, config: AdvancedTrainingConfig
) -> None:
    """A non-admin may not point the server at other machines (`rdzv_endpoint`: the
    workers would connect wherever it says; the default, this machine, needs no name)
    nor make it read a file outside their own folder and the allowed roots as a
    DeepSpeed config (`deepspeed_config`)."""
    if config.rdzv_endpoint:
        raise APIError(
            403,
            f"rdzv_endpoint '{config.rdzv_endpoint[:100]}': naming where the nodes meet is "
            "for admins only (the server's workers would connect there).",
            field="rdzv_endpoint",
            fix="leave rdzv_endpoint empty (this machine, at a free port), or ask an admin.",
        )
    if not config.deepspeed_config:
        return
    roots = [
        user_output_root(service, user).resolve(),
        *(root.expanduser().resolve() for root in service.settings.allowed_roots),
    ]
    own = roots[0]
    target = Path(config.deepspeed_config).expanduser()
    target = (own / target if not target.is_absolute() else target).resolve()
    if not any(is_inside(target, root) for root in roots):
        raise APIError(
            403,
            f"deepspeed_config '{config.deepspeed_config[:200]}' is outside the folders you "
            f"may name files in ({', '.join(map(str, roots))}; paths are resolved).",
            field="deepspeed_config",
            fix="put the DeepSpeed JSON in your folder and name it there, or leave "
            "deepspeed_config empty (ZeRO stage 2).",
        )
    config.deepspeed_config = str(target)


def confine_config(service: TrainingService, user: User, config: BasicTrainingConfig) -> None:
    """What a non-admin's job may name: registered datasets (training and eval), a model
    that is not a local folder outside the allowed roots, no code_dir (user code is
    admin-only), and an output_dir inside their own folder under FLEXTRAIN_HOME/outputs
    (never another job's folder). Paths are resolved before the containment check, so
    '..' and symlinks that lead out are refused."""
    confine_reads(service, user, config)
    if user.role == Role.ADMIN:
        return
    # With user code named, the expert route refuses it with its own message.
    if isinstance(config, ExpertTrainingConfig) and config.code_dir and not config.user_code:
        raise HTTPException(
            403,
            f"code_dir '{config.code_dir}': loading user code is for admins only. Fix: leave "
            "code_dir empty and use the built-in losses, optimizers and lr_schedule_expr.",
        )
    if isinstance(config, AdvancedTrainingConfig):
        confine_distributed(service, user, config)
    if config.output_dir is None:
        return
    root = user_output_root(service, user).resolve()
    target = Path(config.output_dir).expanduser()
    target = (root / target if not target.is_absolute() else target).resolve()
    if not is_inside(target, root):
        raise HTTPException(
            403,
            f"output_dir '{config.output_dir}' is outside your folder {root} (paths are "
            "resolved: '..' and symbolic links count). Fix: leave output_dir empty (the "
            "job's own folder) or name a folder inside yours.",
        )
    config.output_dir = str(target)
