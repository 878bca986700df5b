"""Every known error becomes a 4xx with a message naming the field and the fix.

Bad input never reaches the user as a 500: request-body errors are 422 with
each field; a config the validator rejects is 422 with every issue; unknown
ids 404; wrong job state 409. A database that stays locked or unreachable past
its wait budget is 503 with Retry-After: the request was fine, try it again.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from flextrain.accounts.users import UserError, UserNotFoundError
from flextrain.api.schemas import ErrorBody, FieldError
from flextrain.config.validation import ConfigValidationError
from flextrain.data.registry import DatasetFormatError, DatasetNotFoundError
from flextrain.db import StoreUnavailableError
from flextrain.jobs.checkpoints import CheckpointNotFoundError
from flextrain.jobs.environment import EnvironmentSetupError
from flextrain.models.hub import HubError
from flextrain.models.registry import ModelInUseError, ModelNameTakenError, ModelRegistryError
from flextrain.models.resolve import ModelFilesError, ModelNotFoundError
from flextrain.models.trained import AfterTrainingError, OutputExistsError
from flextrain.service import JobNotFoundError, JobStateError

log = logging.getLogger("flextrain.api")


def _body(status: int, body: ErrorBody, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content=body.model_dump(), headers=headers)


def _field(loc: tuple[object, ...] | list[object]) -> str:
    parts = [str(p) for p in loc]
    # Only the first part says where (a body field may itself be called "path").
    if parts and parts[0] in ("body", "query", "path", "header", "cookie"):
        parts = parts[1:]
    return ".".join(parts) or "body"


def _message(error: dict[str, object]) -> str:
    """Pydantic's message; for a body that is not JSON, with the parser's reason and
    where (FastAPI's own message is only "JSON decode error")."""
    message = str(error.get("msg", "invalid"))
    ctx = error.get("ctx")
    if error.get("type") == "json_invalid" and isinstance(ctx, dict) and ctx.get("error"):
        loc = error.get("loc", ())
        where = loc[-1] if isinstance(loc, (tuple, list)) and loc else "?"
        message = f"{message}: {ctx['error']} at character {where}"
    return message


async def request_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        FieldError(
            # A body that is not JSON: its loc is ("body", position), and the whole body is wrong.
            field="body" if e.get("type") == "json_invalid" else _field(e.get("loc", ())),
            message=_message(e),
        )
        for e in exc.errors()
    ]
    summary = "; ".join(f"{e.field}: {e.message}" for e in errors[:5])
    return _body(422, ErrorBody(detail=f"Invalid request: {summary}", errors=errors))


async def config_invalid(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ConfigValidationError)
    errors = [FieldError(field=i.field, message=i.message, fix=i.fix) for i in exc.errors]
    return _body(422, ErrorBody(detail=str(exc), errors=errors))


async def not_found(request: Request, exc: Exception) -> JSONResponse:
    return _body(404, ErrorBody(detail=str(exc).strip("'\"")))


async def conflict(request: Request, exc: Exception) -> JSONResponse:
    return _body(409, ErrorBody(detail=str(exc)))


async def unprocessable(request: Request, exc: Exception) -> JSONResponse:
    return _body(422, ErrorBody(detail=str(exc)))


async def unavailable(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StoreUnavailableError)
    log.warning("%s %s: %s", request.method, request.url.path, exc)
    return _body(503, ErrorBody(detail=str(exc)), headers={"Retry-After": "5"})


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return _body(
        exc.status_code,
        ErrorBody(detail=str(exc.detail)),
        headers=dict(exc.headers) if exc.headers else None,
    )


async def unexpected(request: Request, exc: Exception) -> JSONResponse:
    """A bug, not bad input: logged with its traceback, answered without one."""
    log.exception("Unhandled error on %s %s", request.method, request.url.path)
    return _body(
        500, ErrorBody(detail=f"Internal error ({type(exc).__name__}); see the server log.")
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, request_validation)
    app.add_exception_handler(ConfigValidationError, config_invalid)
    for exc_type in (JobNotFoundError, ModelNotFoundError, DatasetNotFoundError, UserNotFoundError):
        app.add_exception_handler(exc_type, not_found)
    app.add_exception_handler(CheckpointNotFoundError, not_found)
    app.add_exception_handler(JobStateError, conflict)
    # After training: a job or data that does not fit is 422; a folder in the way, 409.
    app.add_exception_handler(AfterTrainingError, unprocessable)
    app.add_exception_handler(OutputExistsError, conflict)
    app.add_exception_handler(HubError, conflict)  # offline, gated, no disk space: 409
    # ModelFilesError is a ModelNotFoundError; the most specific handler wins: a 422,
    # since the folder is there and its files are what is wrong.
    for bad_input in (DatasetFormatError, UserError, EnvironmentSetupError, ModelFilesError):
        app.add_exception_handler(bad_input, unprocessable)
    app.add_exception_handler(StoreUnavailableError, unavailable)
    # A bad name or folder to register is 422; a taken name or a model in use, 409.
    app.add_exception_handler(ModelRegistryError, unprocessable)
    for taken in (ModelNameTakenError, ModelInUseError):
        app.add_exception_handler(taken, conflict)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)
