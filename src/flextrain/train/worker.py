"""Worker process entry point: `python -m flextrain.train.worker --job-id ...`.

Runs one job and records its end in the store: COMPLETED with the model path,
FAILED with the error (traceback in the job's log), or leaves the CANCELLED
that a front end wrote. SIGTERM (cancel) unwinds through `finally` so
temporary files are removed.
"""

from __future__ import annotations

import argparse
import signal
import sys
import traceback
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from flextrain.config.enums import TrainingStatus
from flextrain.db import make_engine, make_sessionmaker
from flextrain.jobs.environment import TrainingEnvironment, TrainingEnvironmentManager
from flextrain.jobs.spec import RunSpec
from flextrain.jobs.store import JobStore


class _Terminated(BaseException):
    """Raised from the SIGTERM handler; BaseException so library code can't swallow it."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise _Terminated()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flextrain.train.worker")
    parser.add_argument("--job-id", required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--home", required=True)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)

    # The service that launched this worker has already migrated the database.
    store = JobStore(make_sessionmaker(make_engine(args.database_url, migrate=False)))
    job = store.get(args.job_id)
    if job is None:
        print(f"Job {args.job_id} not found in {args.database_url}", file=sys.stderr)
        return 2
    if job.is_finished:  # cancelled before the worker got going
        print(f"Job {args.job_id} is already {job.status.value}; nothing to do.")
        return 0
    spec_file = Path(args.home) / "jobs" / args.job_id / "job.json"
    spec_env: TrainingEnvironment | None = None
    try:
        spec = RunSpec.model_validate_json(spec_file.read_text())
        spec_env = TrainingEnvironmentManager(Path(args.home) / "jobs").layout(
            spec.job_id, spec.config.output_dir
        )
        print(
            f"[flextrain] job {spec.job_id}: {spec.config.training_type.value} "
            f"of {spec.config.model_id} on {spec.config.dataset_id} ({spec.objective}, "
            f"{spec.precision}, {spec.num_threads} threads)",
            flush=True,
        )
        store.update(args.job_id, status=TrainingStatus.PREPARING)
        from flextrain.train.callbacks import JobCancelledError
        from flextrain.train.runner import run_training

        try:
            run_training(spec, store)
        except JobCancelledError:
            print("[flextrain] cancelled by request", flush=True)
            return 0
        store.update(
            args.job_id,
            status=TrainingStatus.COMPLETED,
            progress=1.0,
            model_path=spec.model_dir,
            completed_at=datetime.now(UTC),
        )
        print(f"[flextrain] completed; model saved to {spec.model_dir}", flush=True)
        return 0
    except _Terminated:
        print("[flextrain] terminated (cancel)", flush=True)
        store.update(args.job_id, status=TrainingStatus.CANCELLED, completed_at=datetime.now(UTC))
        return 143
    except BaseException as exc:
        traceback.print_exc()
        message = f"{type(exc).__name__}: {exc}".strip()
        store.update(
            args.job_id,
            status=TrainingStatus.FAILED,
            error_message=message[:4000],
            completed_at=datetime.now(UTC),
        )
        return 1
    finally:
        if spec_env is not None:
            TrainingEnvironmentManager(Path(args.home) / "jobs").cleanup(spec_env)


if __name__ == "__main__":
    sys.exit(main())
