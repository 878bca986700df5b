"""Health, the caller's identity, users and the audit log."""

from __future__ import annotations

from importlib.metadata import version
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from sqlalchemy import text

from flextrain.accounts.users import User
from flextrain.api.deps import AdminDep, ServiceDep, UserDep
from flextrain.api.routing import StrictJSONRoute
from flextrain.api.schemas import AuditPage, ErrorBody, Health, Me, UserCreate, UserCreated

router = APIRouter(prefix="/api", tags=["admin"], route_class=StrictJSONRoute)

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody},
    403: {"model": ErrorBody},
    404: {"model": ErrorBody},
    422: {"model": ErrorBody},
}


@router.get("/health", response_model=Health)
def health(request: Request, service: ServiceDep) -> Health:
    """No token needed: for load balancers and `flextrain serve` start-up checks."""
    with service.engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    return Health(
        status="ok",
        version=version("flextrain"),
        database="ok",
        auth=bool(request.app.state.auth_enabled),
    )


@router.get("/me", response_model=Me, responses=_ERRORS)
def me(user: UserDep) -> Me:
    return Me(name=user.name, role=user.role)


@router.get("/users", response_model=list[User], responses=_ERRORS, tags=["users"])
def list_users(user: AdminDep, service: ServiceDep) -> list[User]:
    return service.users.list_users()


@router.post(
    "/users", response_model=UserCreated, status_code=201, responses=_ERRORS, tags=["users"]
)
def create_user(body: UserCreate, user: AdminDep, service: ServiceDep) -> UserCreated:
    created, token = service.users.create(body.name, body.role)
    return UserCreated(user=created, token=token)


@router.post("/users/{name}/revoke", response_model=User, responses=_ERRORS, tags=["users"])
def revoke_user(name: str, user: AdminDep, service: ServiceDep) -> User:
    return service.users.revoke(name)


@router.get("/audit", response_model=AuditPage, responses=_ERRORS, tags=["audit"])
def audit(
    user: AdminDep,
    service: ServiceDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=1 << 40)] = 0,
    actor: str | None = None,
    outcome: str | None = None,
) -> AuditPage:
    """Every mutating request and every refused one, newest first."""
    return AuditPage(
        items=service.audit.entries(limit=limit, offset=offset, actor=actor, outcome=outcome),
        total=service.audit.count(),
        limit=limit,
        offset=offset,
    )
