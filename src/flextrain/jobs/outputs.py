"""Where a job may write: checked when it is created and again when it starts.

Refused up front, by the front end, rather than by a worker an hour in: a folder that
cannot be written, and one another job writes to (the two would overwrite each other's
checkpoints and model, and `try`, `evaluate` and `checkpoints` of one would read the
other's).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from flextrain.config.validation import ValidationIssue
from flextrain.jobs.store import JobStore


def output_dir_issue(output_dir: str | None) -> ValidationIssue | None:
    """Why the job's output folder cannot be written, or None.

    Probed by creating (and removing) a file in the folder, or in the nearest
    folder above it that exists (where it would be created): permission bits say
    nothing to root, nor about a read-only mount. A path through a regular file
    is named as such. Checked when a job is created and again when it starts, so
    that the refusal comes from the front end and never from a worker an hour in.
    """
    if not output_dir:
        return None  # the job's own folder in FLEXTRAIN_HOME, checked on creating it
    target = Path(output_dir).expanduser()
    probe = target
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    fix = "choose a folder you can write to (not on a read-only mount), or fix its permissions."
    if not probe.is_dir():
        return ValidationIssue(
            "output_dir",
            f"{target} cannot be created: {probe} is a file, not a folder.",
            "choose another output_dir, or move that file away.",
        )
    try:
        with tempfile.TemporaryFile(dir=probe, prefix=".flextrain-write-test-"):
            pass
    except OSError as exc:
        where = "" if probe == target else f" (its nearest existing folder {probe})"
        return ValidationIssue(
            "output_dir",
            f"{target}{where} is not writable: {exc.strerror or exc}.",
            fix,
        )
    return None


def output_dir_taken(store: JobStore, output_dir: str | None) -> ValidationIssue | None:
    """Why a new job may not write to `output_dir`: another job's folder (or one
    inside or around it), or a folder that already holds files. Two jobs in one
    folder overwrite each other's model and mix their checkpoints, and the `try`,
    `evaluate` and `checkpoints` of the first would then read the second's."""
    if not output_dir:
        return None  # the job's own folder, FLEXTRAIN_HOME/jobs/ID/output
    target = Path(output_dir).expanduser().resolve()
    fix = (
        "choose a new or empty folder, or leave output_dir unset (each job then writes "
        "to its own folder, FLEXTRAIN_HOME/jobs/<job id>/output)."
    )
    others = store.jobs_writing_under(str(target))
    if others:
        named = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
        noun = "job" if len(others) == 1 else "jobs"
        return ValidationIssue(
            "output_dir",
            f"{target} is the output folder of {noun} {named} (or inside or around "
            "it): the jobs would overwrite each other's checkpoints and model.",
            fix,
        )
    if target.is_dir() and any(target.iterdir()):
        return ValidationIssue("output_dir", f"{target} is not empty.", fix)
    return None
