"""Errors about jobs: the one a front end asked for and the state it is in."""

from __future__ import annotations

from flextrain.errors import ConflictError, NotFoundError


class JobNotFoundError(NotFoundError, LookupError):
    """No job has this id."""

    code = "job_not_found"
    field = "job_id"


class JobStateError(ConflictError, RuntimeError):
    """The job is in a state that does not allow the requested action."""

    code = "job_state"
    field = "job_id"
