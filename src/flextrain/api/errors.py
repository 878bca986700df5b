"""Every known error becomes a 4xx with a message naming the field and the fix.

Bad input never reaches the user as a 500: request-body errors are 422 with
each field; a config the validator rejects is 422 with every issue; unknown
ids 404; wrong job state 409. A database that stays locked or unreachable past
its wait budget is 503 with Retry-After: the request was fine, try it again.

Every 4xx body has at least one entry in `errors`, each with a `field` and a
`fix`: an exception's own `field`/`fix` attributes where it has them (the data
layer's errors, `APIError`), else the field its type is about (a job id, a model
id ...) and the message's "Fix: ..." sentence, else a fix for its kind.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from flextrain.accounts.users import UserError, UserNotFoundError
from flextrain.api.schemas import ErrorBody, FieldError
from flextrain.config.errors import field_path
from flextrain.config.validation import ConfigValidationError
from flextrain.data.checks import DataReport, Severity
from flextrain.data.manager import VALIDATION_FIX, DatasetValidationError
from flextrain.data.registry import DatasetFormatError, DatasetNotFoundError
from flextrain.db import StoreUnavailableError
from flextrain.jobs.checkpoints import CheckpointNotFoundError
from flextrain.jobs.environment import EnvironmentSetupError
from flextrain.models.hub import HubError
from flextrain.models.registry import (
    ModelInUseError,
    ModelNameTakenError,
    ModelNotRegisteredError,
    ModelRegistryError,
)
from flextrain.models.resolve import ModelFilesError, ModelNotFoundError
from flextrain.models.trained import AfterTrainingError, OutputExistsError
from flextrain.service import JobNotFoundError, JobStateError

log = logging.getLogger("flextrain.api")


class APIError(HTTPException):
    """An HTTPException that names the request field at fault and the fix.

    `detail` is the sentence for people (it may hold its own "Fix: ..."); `fix`
    defaults to that sentence's fix.
    """

    def __init__(
        self,
        status_code: int,
        detail: str,
        *,
        field: str,
        fix: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(status_code, detail, dict(headers) if headers else None)
        self.field = field
        self.fix = fix or split_fix(detail)[1]


_FIX = re.compile(r"\s*\bFix:\s*")
# A message that starts by naming a request field: "shape: ...", "name 'x' ...",
# "model_id is empty."
_FIELD_PREFIX = re.compile(r"^([a-z_][a-z0-9_.]*)(?=: | '| \"| is )")


def split_fix(message: str) -> tuple[str, str | None]:
    """(what is wrong, the fix) of a message written "... Fix: ..."."""
    parts = _FIX.split(message, maxsplit=1)
    if len(parts) == 2 and parts[1].strip():
        return parts[0].strip(), parts[1].strip()
    return message.strip(), None


# The request field each kind of error is about, most specific first (isinstance).
_FIELDS: tuple[tuple[type[Exception], str], ...] = (
    (DatasetValidationError, "file"),
    (JobNotFoundError, "job_id"),
    (JobStateError, "job_id"),
    (CheckpointNotFoundError, "step"),
    (ModelNotRegisteredError, "name"),
    (ModelNotFoundError, "model_id"),
    (HubError, "model_id"),
    (DatasetNotFoundError, "dataset_id"),
    (DatasetFormatError, "dataset_id"),
    (UserNotFoundError, "name"),
    (UserError, "name"),
    (OutputExistsError, "out_dir"),
    (AfterTrainingError, "job_id"),
    (EnvironmentSetupError, "output_dir"),
    (ModelRegistryError, "name"),
    (StoreUnavailableError, "database"),
)
_FIXES: tuple[tuple[type[Exception], str], ...] = (
    (JobNotFoundError, "use the id of a job you can see (GET /api/training/jobs lists them)."),
    (
        JobStateError,
        "check the job's status (GET /api/training/jobs/{job_id}): start a pending job, "
        "cancel a queued or running one, resume an interrupted, failed or cancelled one.",
    ),
    (
        CheckpointNotFoundError,
        "use a step the job has (GET /api/training/jobs/{job_id}/checkpoints lists them).",
    ),
    (
        ModelNotFoundError,
        "use a model GET /api/models lists (built-in, registered or trained), or a hub id.",
    ),
    (DatasetNotFoundError, "use a registered dataset (GET /api/datasets lists them)."),
    (DatasetFormatError, "correct the data as the message says, then upload it again."),
    (UserNotFoundError, "use the name of an existing user (GET /api/users lists them)."),
    (UserError, "correct the value as the message says."),
    (AfterTrainingError, "correct the request as the message says."),
    (StoreUnavailableError, "send the same request again in a few seconds."),
)
_STATUS_FIELDS = {401: "Authorization", 403: "role", 404: "path", 405: "method", 413: "file"}
_STATUS_FIXES = {
    401: "send 'Authorization: Bearer <token>' with a valid token (an admin creates one "
    "with `flextrain users create NAME --role trainer`).",
    403: "act on your own jobs and datasets, or ask an admin (who may do this).",
    404: "check the URL: GET /openapi.json lists every route.",
    405: "use a method this route allows (see the Allow header, or GET /openapi.json).",
}


def _lookup(table: tuple[tuple[type[Exception], str], ...], exc: Exception) -> str | None:
    return next((value for kind, value in table if isinstance(exc, kind)), None)


def field_error(exc: Exception, status: int) -> FieldError:
    """The field at fault and the fix, for any error answered with a 4xx."""
    what, fix_in_message = split_fix(_detail(exc))
    prefix = _FIELD_PREFIX.match(what)
    field = (
        getattr(exc, "field", None)
        or (prefix.group(1) if prefix else None)
        or _lookup(_FIELDS, exc)
        or _STATUS_FIELDS.get(status, "request")
    )
    fix = (
        getattr(exc, "fix", None)
        or fix_in_message
        or _lookup(_FIXES, exc)
        or _STATUS_FIXES.get(status)
        or f"correct {field} as the message says, then send the request again."
    )
    return FieldError(field=field, message=what, fix=fix)


def _body(status: int, body: ErrorBody, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content=body.model_dump(), headers=headers)


def _detail(exc: Exception) -> str:
    if isinstance(exc, StarletteHTTPException):
        return str(exc.detail)
    # str() of a KeyError quotes its message: strip the quotes.
    return str(exc).strip("'\"") if isinstance(exc, KeyError) else str(exc)


def _answer(status: int, exc: Exception, headers: dict[str, str] | None = None) -> JSONResponse:
    errors = [field_error(exc, status)]
    return _body(status, ErrorBody(detail=_detail(exc), errors=errors), headers)


def _field(loc: tuple[object, ...] | list[object]) -> str:
    """The field as the user wrote it: `batch_size`, not pydantic's `batch_size.int` for
    one member of its union (only the first part of `loc` says where in the request: a
    body field may itself be called "path")."""
    return field_path(loc, default="body")


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


def _pydantic_fix(error: Mapping[str, object], field: str, message: str) -> str:
    """A fix for one of pydantic's errors, from its type and context."""
    kind = error.get("type")
    ctx = error.get("ctx")
    if kind == "json_invalid":
        return "send one valid JSON document (check the quotes, commas and brackets there)."
    if kind == "missing":
        return f"give {field} a value."
    if kind == "extra_forbidden":
        return f"remove {field}: this request has no such field (see GET /openapi.json)."
    if kind in ("enum", "literal_error") and isinstance(ctx, dict) and ctx.get("expected"):
        return f"use one of {ctx['expected']}."
    what, fix = split_fix(message.removeprefix("Value error, "))
    if fix:
        return fix
    if what.startswith("Input should be "):
        return f"make {field} {what.removeprefix('Input should be ').rstrip('.')}."
    return f"change {field}: {what[:1].lower()}{what[1:].rstrip('.')}."


async def request_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = []
    for e in exc.errors():
        # A body that is not JSON: its loc is ("body", position), and the whole body is wrong.
        field = "body" if e.get("type") == "json_invalid" else _field(e.get("loc", ()))
        message = _message(e)
        errors.append(
            FieldError(field=field, message=message, fix=_pydantic_fix(e, field, message))
        )
    if not errors:  # never seen, but the shape promises one
        errors = [FieldError(field="body", message="invalid", fix="send a valid request.")]
    summary = "; ".join(f"{e.field}: {e.message}" for e in errors[:5])
    return _body(422, ErrorBody(detail=f"Invalid request: {summary}", errors=errors))


async def config_invalid(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ConfigValidationError)
    errors = [
        FieldError(
            field=i.field or "config",
            message=i.message,
            fix=i.fix or f"change {i.field or 'the config'} as the message says.",
        )
        for i in exc.errors
    ]
    if not errors:
        errors = [field_error(exc, 422)]
    return _body(422, ErrorBody(detail=str(exc), errors=errors))


def issue_errors(
    report: DataReport, severity: Severity, *, field: str = "file", fix: str = VALIDATION_FIX
) -> list[FieldError]:
    """A report's errors (or warnings) as FieldErrors, the first SHOWN_ISSUES in file
    order, and one more entry counting the rest."""
    shown = [i for i in report.shown_issues() if i.severity == severity]
    errors = []
    for issue in shown:
        message, own_fix = split_fix(str(issue))
        errors.append(FieldError(field=field, message=message, fix=own_fix or fix))
    total = report.error_count if severity == "error" else report.warning_count
    if total > len(shown):
        errors.append(
            FieldError(field=field, message=f"... and {total - len(shown)} more", fix=fix)
        )
    return errors


async def data_invalid(request: Request, exc: Exception) -> JSONResponse:
    """Data with errors: one entry for each error shown (in file order), so a client
    can list every bad row and unreadable line, not only the first."""
    assert isinstance(exc, DatasetValidationError)
    fix = "correct or remove this row, then send the file again."
    errors = issue_errors(exc.report, "error", field=exc.field or "file", fix=fix)
    return _body(422, ErrorBody(detail=str(exc), errors=errors or [field_error(exc, 422)]))


async def not_found(request: Request, exc: Exception) -> JSONResponse:
    return _answer(404, exc)


async def conflict(request: Request, exc: Exception) -> JSONResponse:
    return _answer(409, exc)


async def unprocessable(request: Request, exc: Exception) -> JSONResponse:
    return _answer(422, exc)


async def unavailable(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StoreUnavailableError)
    log.warning("%s %s: %s", request.method, request.url.path, exc)
    return _answer(503, exc, headers={"Retry-After": "5"})


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return _answer(
        exc.status_code,
        exc,
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
    app.add_exception_handler(DatasetValidationError, data_invalid)
    app.add_exception_handler(StoreUnavailableError, unavailable)
    # A bad name or folder to register is 422; a taken name or a model in use, 409.
    app.add_exception_handler(ModelRegistryError, unprocessable)
    for taken in (ModelNameTakenError, ModelInUseError):
        app.add_exception_handler(taken, conflict)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)
