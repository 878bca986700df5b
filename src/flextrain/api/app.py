"""`create_app()`: the REST API and the web page, built from settings, no globals.

The app holds one TrainingService (the same one the CLI and the Python API
use). Route functions are plain `def`, so FastAPI runs the service's blocking
calls (database, process launch) in its thread pool; only the event stream is
async.
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib.metadata import version
from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from flextrain.api import errors
from flextrain.api.audit import AuditMiddleware
from flextrain.api.guard import BodySizeLimit, RequestGuard, SecurityHeaders
from flextrain.api.limits import FailedAuthLimiter, UploadSizeLimit
from flextrain.api.routes import admin, checkpoints, model_registry, models, resources, training
from flextrain.api.routes.after import router as after_router
from flextrain.service import TrainingService
from flextrain.settings import Settings

LOOPBACK = {"127.0.0.1", "::1", "localhost"}
# Where data files are uploaded (and checked before an upload): their own size limit.
UPLOAD_PATHS = ("/api/datasets", "/api/datasets/validate")


def static_dir() -> Path:
    return Path(str(files("flextrain.web") / "static"))


def create_app(
    settings: Settings | None = None,
    *,
    service: TrainingService | None = None,
    auth: bool = True,
    hosts: Iterable[str] = (),
) -> FastAPI:
    """The API. `auth=False` (loopback only; `flextrain serve` enforces it) acts
    as a local admin for every request. It answers to the Host names loopback,
    `hosts` (the address `flextrain serve` listens on) and the `allowed_hosts` setting."""
    service = service or TrainingService(settings)
    app = FastAPI(
        title="flextrain",
        version=version("flextrain"),
        description="Check, estimate and run real training jobs for Hugging Face models.",
    )
    app.state.service = service
    app.state.auth_enabled = auth
    errors.install(app)
    app.include_router(training.router)
    app.include_router(checkpoints.router)
    app.include_router(resources.router)
    app.include_router(admin.router)
    app.include_router(after_router)
    app.include_router(models.router)
    app.include_router(model_registry.router)
    app.include_router(model_registry.diff_router)
    app.state.auth_limiter = FailedAuthLimiter(service.settings.max_failed_auth_per_minute)
    # Added before the audit middleware, so the audit log wraps them and records their
    # 413s, 403s and 400s; the security headers go on every answer, errors included.
    settings = service.settings
    app.add_middleware(UploadSizeLimit, path=UPLOAD_PATHS, max_mb=settings.max_upload_mb)
    app.add_middleware(BodySizeLimit, skip=UPLOAD_PATHS)
    app.add_middleware(
        RequestGuard,
        hosts=[*LOOPBACK, *hosts, *settings.allowed_hosts],
        origins=settings.allowed_origins,
    )
    app.add_middleware(AuditMiddleware, service=service)
    app.add_middleware(SecurityHeaders)

    static = static_dir()
    app.mount("/static", StaticFiles(directory=static), name="static")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(static / "index.html", media_type="text/html")

    return app


def check_bind(host: str, auth: bool) -> None:
    """Refuse to expose an API without authentication beyond this machine."""
    if not auth and host not in LOOPBACK:
        raise ValueError(
            f"Refusing to listen on {host} with authentication off: anyone who can reach "
            "it could start jobs. Bind to 127.0.0.1, or drop --no-auth and use tokens."
        )
