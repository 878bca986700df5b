"""The one family of flextrain's own errors, and what each front end answers for them.

Every error a user can cause derives from `FlextrainError`, which carries a stable
`code` (for scripts and the REST body), the HTTP status the REST API answers with and
the exit code of the CLI. The front ends map the family in one place each
(`api/errors.py`, `cli/common.py`) instead of keeping their own lists of classes,
so a new error needs no change there. The kinds below are the bases to derive from;
an error keeps its Python base too (LookupError, ValueError) for callers that catch
those.

This module imports nothing of flextrain's: every layer may use it.
"""

from __future__ import annotations

from typing import ClassVar


class FlextrainError(Exception):
    """An error of flextrain's own: a message naming the field and the fix.

    `field` and `fix` may be set per instance; a class's `field` is the default, the
    request field its kind is usually about. The message itself may also hold a
    "Fix: ..." sentence, which the front ends split off.
    """

    code: ClassVar[str] = "error"
    http_status: ClassVar[int] = 400
    exit_code: ClassVar[int] = 2
    # Seconds a REST client should wait before sending the request again (the
    # Retry-After header); None: sending it again as it is will not help.
    retry_after: ClassVar[int | None] = None
    field: str | None = None
    fix: str | None = None


def given(exc: BaseException, name: str) -> str | None:
    """The `field` or `fix` that `exc` was raised with, not its class's default (a
    class's `field` is the field its kind is usually about)."""
    value = vars(exc).get(name)
    return value if isinstance(value, str) and value else None


class NotFoundError(FlextrainError):
    """What the request names does not exist (a job, model, dataset, user ...)."""

    code = "not_found"
    http_status = 404


class InvalidInputError(FlextrainError):
    """The request is well-formed but its values cannot be used as given."""

    code = "invalid"
    http_status = 422


class ConflictError(FlextrainError):
    """The request is valid but the state of things does not allow it now."""

    code = "conflict"
    http_status = 409


class UnavailableError(FlextrainError):
    """Something flextrain needs (its database, the hub) did not answer: try again."""

    code = "unavailable"
    http_status = 503
    exit_code = 1
