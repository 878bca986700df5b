"""Every known error becomes a 4xx with a message naming the field and the fix.

Bad input never reaches the user as a 500: request-body errors are 422 with
each field; a config the validator rejects is 422 with every issue; unknown
ids 404; wrong job state 409. A database that stays locked or unreachable past
its wait budget is 503 with Retry-After: the request was fine, try it again.

flextrain's own errors are one family (`flextrain.errors.FlextrainError`), answered
by one handler: the status is the error's `http_status` and the body carries its
`code`, so a new error needs no change here. Only the errors whose body says more
than one entry have their own handler (every issue of a config, every bad row of a
data file).

Every 4xx body has at least one entry in `errors`, each with a `field` and a
`fix`: the `field`/`fix` an exception was raised with (the data layer's errors,
`APIError`), else a field named at the start of its message, else the field its
class is about (`FlextrainError.field`: a job id, a model id ...); the message's
"Fix: ..." sentence, else a fix for its kind (`_FIXES`), else one for the status.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from flextrain.api.schemas import ErrorBody, FieldError
from flextrain.config.errors import field_path
from flextrain.config.validation import ConfigValidationError
from flextrain.errors import FlextrainError, given
from flextrain.public import VALIDATION_FIX, DataReport, DatasetValidationError, Severity

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


# The fix for each kind of error whose message has none, by the error's `code`; the
# error's most specific class first (its MRO). The texts name REST routes, so they are
# the REST API's, not the errors'.
_FIXES: dict[str, str] = {
    "job_not_found": "use the id of a job you can see (GET /api/training/jobs lists them).",
    "job_state": "check the job's status (GET /api/training/jobs/{job_id}): start a pending "
    "job, cancel a queued or running one, resume an interrupted, failed, cancelled, "
    "diverged or paused one.",
    "checkpoint_not_found": "use a step the job has "
    "(GET /api/training/jobs/{job_id}/checkpoints lists them).",
    "model_not_found": "use a model GET /api/models lists (built-in, registered or trained), "
    "or a hub id.",
    "dataset_not_found": "use a registered dataset (GET /api/datasets lists them).",
    "dataset_format": "correct the data as the message says, then upload it again.",
    "user_not_found": "use the name of an existing user (GET /api/users lists them).",
    "user_invalid": "correct the value as the message says.",
    "after_training": "correct the request as the message says.",
    "store_unavailable": "send the same request again in a few seconds.",
}
_STATUS_FIELDS = {401: "Authorization", 403: "role", 404: "path", 405: "method", 413: "file"}
_STATUS_FIXES = {
    401: "send 'Authorization: Bearer <token>' with a valid token (an admin creates one "
    "with `flextrain users create NAME --role trainer`).",
    403: "act on your own jobs and datasets, or ask an admin (who may do this).",
    404: "check the URL: GET /openapi.json lists every route.",
    405: "use a method this route allows (see the Allow header, or GET /openapi.json).",
}


def _kind_fix(exc: Exception) -> str | None:
    if not isinstance(exc, FlextrainError):
        return None
    codes = (vars(kind).get("code") for kind in type(exc).__mro__)
    return next((_FIXES[code] for code in codes if code in _FIXES), None)


def field_error(exc: Exception, status: int) -> FieldError:
    """The field at fault and the fix, for any error answered with a 4xx."""
    what, fix_in_message = split_fix(_detail(exc))
    prefix = _FIELD_PREFIX.match(what)
    field = (
        given(exc, "field")
        or (prefix.group(1) if prefix else None)
        or (type(exc).field if isinstance(exc, FlextrainError) else None)
        or _STATUS_FIELDS.get(status, "request")
    )
    fix = (
        given(exc, "fix")
        or fix_in_message
        or _kind_fix(exc)
        or _STATUS_FIXES.get(status)
        or f"correct {field} as the message says, then send the request again."
    )
    return FieldError(field=field, message=what, fix=fix)


def _body(status: int, body: ErrorBody, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content=body.model_dump(), headers=headers)


def _code(exc: Exception) -> str | None:
    return exc.code if isinstance(exc, FlextrainError) else None


def _detail(exc: Exception) -> str:
    if isinstance(exc, StarletteHTTPException):
        return str(exc.detail)
    # str() of a KeyError quotes its message: strip the quotes.
    return str(exc).strip("'\"") if isinstance(exc, KeyError) else str(exc)


def _answer(status: int, exc: Exception, headers: dict[str, str] | None = None) -> JSONResponse:
    errors = [field_error(exc, status)]
    body = ErrorBody(detail=_detail(exc), code=_code(exc), errors=errors)
    return _body(status, body, headers)


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
        errors = [field_error(exc, exc.http_status)]
    return _body(exc.http_status, ErrorBody(detail=str(exc), code=exc.code, errors=errors))


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
    status = exc.http_status
    errors = issue_errors(exc.report, "error", field=exc.field or "file", fix=fix)
    errors = errors or [field_error(exc, status)]
    return _body(status, ErrorBody(detail=str(exc), code=exc.code, errors=errors))


async def flextrain_error(request: Request, exc: Exception) -> JSONResponse:
    """Any of flextrain's own errors: its status, its code, the field and the fix; a
    Retry-After header where sending the request again later can work."""
    assert isinstance(exc, FlextrainError)
    if exc.http_status >= 500:  # the request was fine: say so in the log
        log.warning("%s %s: %s", request.method, request.url.path, exc)
    retry = exc.retry_after
    return _answer(exc.http_status, exc, None if retry is None else {"Retry-After": str(retry)})


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
    # The most specific handler wins (the exception's MRO).
    app.add_exception_handler(RequestValidationError, request_validation)
    app.add_exception_handler(ConfigValidationError, config_invalid)  # every issue
    app.add_exception_handler(DatasetValidationError, data_invalid)  # every bad row
    app.add_exception_handler(FlextrainError, flextrain_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)
