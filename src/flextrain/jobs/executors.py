"""Which executor runs jobs: the one FLEXTRAIN_EXECUTOR names.

Apart from `jobs.executor` (the seam and the local executor) so that the cluster
executors, which implement that seam, are not imported by it.
"""

from __future__ import annotations

from flextrain.jobs.executor import Executor, LocalExecutor
from flextrain.jobs.store import JobStore
from flextrain.settings import Settings


def make_executor(settings: Settings, store: JobStore) -> Executor:
    """The executor `settings.executor` names (FLEXTRAIN_EXECUTOR; default local).
    The cluster executors are imported only when chosen: Ray is an optional extra."""
    if settings.executor == "slurm":
        from flextrain.jobs.slurm import SlurmExecutor

        return SlurmExecutor(settings, store)
    if settings.executor == "ray":
        from flextrain.jobs.rayjobs import RayExecutor

        return RayExecutor(settings, store)
    return LocalExecutor(settings, store)
