"""Per-job folders, checked before any training starts.

A job that would fail an hour in because the disk is full or the folder is
read-only should fail now, with the reason, and leave nothing behind.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from huggingface_hub import constants as hf_constants

from flextrain.config.enums import TrainingMode, TrainingType
from flextrain.errors import InvalidInputError
from flextrain.hardware.detect import HardwareConstraints
from flextrain.hardware.disk import existing_parent, free_bytes
from flextrain.jobs.spec import SPEC_FILE

_GIB = 1024**3


class EnvironmentSetupError(InvalidInputError, RuntimeError):
    """The job's folders cannot be created or used."""

    code = "environment_setup"
    field = "output_dir"


@dataclass(frozen=True)
class TrainingEnvironment:
    """A job's folders. The fields after `temp_dir` are the original module's, filled by
    `TrainingEnvironmentManager.setup_environment` (its API) and empty otherwise."""

    job_id: str
    root: Path
    output_dir: Path
    checkpoint_dir: Path
    logs_dir: Path
    data_dir: Path
    temp_dir: Path
    model_id: str | None = None
    training_type: TrainingType | None = None
    training_mode: TrainingMode | None = None
    model_cache_dir: Path | None = None
    hardware_constraints: HardwareConstraints | None = None
    environment_ready: bool = False
    setup_errors: list[str] = field(default_factory=list)

    @property
    def log_file(self) -> Path:
        return self.logs_dir / "train.log"

    @property
    def config_file(self) -> Path:
        """The config the worker process reads (written by the service)."""
        return self.root / SPEC_FILE

    @property
    def model_dir(self) -> Path:
        return self.output_dir / "model"


class TrainingEnvironmentManager:
    """Creates, checks and cleans the folders of each job under `jobs_dir`."""

    @classmethod
    def for_home(cls, home: Path) -> TrainingEnvironmentManager:
        """The manager of FLEXTRAIN_HOME `home` (its jobs live in home/jobs, as
        `Settings.jobs_dir` says), for processes given only the home: the workers."""
        return cls(home / "jobs")

    def __init__(
        self,
        jobs_dir: str | Path | None = None,
        min_free_gb: float = 0.5,
        *,
        base_dir: str | Path | None = None,
    ) -> None:
        # `base_dir`: the original module's name for it (and its default folder).
        self.jobs_dir = Path(jobs_dir or base_dir or "./training_environments")
        self.min_free_gb = min_free_gb

    @property
    def base_dir(self) -> Path:
        return self.jobs_dir

    async def setup_environment(
        self,
        model_id: str,
        training_type: TrainingType | str,
        training_mode: TrainingMode | str = TrainingMode.BASIC,
        job_id: str | None = None,
    ) -> TrainingEnvironment:
        """The original module's call: a new job's folders (disk and write checks first),
        with the machine's hardware. A folder that cannot be set up gives an environment
        with `environment_ready` False and `setup_errors` saying why, as the original did."""
        chosen = job_id or uuid.uuid4().hex[:12]

        def described(env: TrainingEnvironment, **rest: Any) -> TrainingEnvironment:
            return replace(
                env,
                model_id=model_id,
                training_type=TrainingType(training_type),
                training_mode=TrainingMode(training_mode),
                model_cache_dir=Path(hf_constants.HF_HUB_CACHE),
                **rest,
            )

        try:
            env = await asyncio.to_thread(self.setup, chosen)
        except EnvironmentSetupError as exc:
            return described(self.layout(chosen), setup_errors=[str(exc)])
        hardware = await asyncio.to_thread(HardwareConstraints.detect_current, env.root)
        return described(env, hardware_constraints=hardware, environment_ready=True)

    def cleanup_environment(self, environment: TrainingEnvironment) -> None:
        """The original module's name for `cleanup`: temporary files go, outputs stay."""
        self.cleanup(environment)

    def layout(self, job_id: str, output_dir: str | Path | None = None) -> TrainingEnvironment:
        """Where a job's files go, without touching the disk."""
        root = self.jobs_dir / job_id
        out = Path(output_dir).expanduser().resolve() if output_dir else root / "output"
        return TrainingEnvironment(
            job_id=job_id,
            root=root,
            output_dir=out,
            checkpoint_dir=out / "checkpoints",
            logs_dir=root / "logs",
            data_dir=root / "data",
            temp_dir=root / "tmp",
        )

    def setup(
        self,
        job_id: str,
        output_dir: str | Path | None = None,
        required_disk_gb: float | None = None,
    ) -> TrainingEnvironment:
        """Create the folders after checking free disk space and write permission."""
        env = self.layout(job_id, output_dir)
        # The job folder (logs, data copies) gets a floor; what the output folder must
        # hold (checkpoints, the model) the planner has estimated and checked already.
        self._check_disk(env.root, max(self.min_free_gb, required_disk_gb or 0.0))
        created: list[Path] = []
        try:
            for folder in (
                env.root,
                env.output_dir,
                env.checkpoint_dir,
                env.logs_dir,
                env.data_dir,
                env.temp_dir,
            ):
                if not folder.exists():
                    folder.mkdir(parents=True)
                    created.append(folder)
            for folder in (env.root, env.output_dir):
                self._check_writable(folder)
        except (OSError, EnvironmentSetupError) as exc:
            for folder in reversed(created):
                shutil.rmtree(folder, ignore_errors=True)
            if isinstance(exc, EnvironmentSetupError):
                raise
            raise EnvironmentSetupError(
                f"Cannot create job folders under {env.root}: {exc}. "
                "Fix: choose a writable FLEXTRAIN_HOME or output_dir."
            ) from exc
        return env

    def cleanup(self, env: TrainingEnvironment) -> None:
        """Remove temporary files; outputs, checkpoints and logs stay."""
        shutil.rmtree(env.temp_dir, ignore_errors=True)
        shutil.rmtree(env.data_dir, ignore_errors=True)

    def remove(self, env: TrainingEnvironment) -> None:
        """Delete everything of a job (used when creating it failed half-way)."""
        shutil.rmtree(env.root, ignore_errors=True)

    @staticmethod
    def _check_disk(path: Path, need_gb: float) -> None:
        probe = existing_parent(path)
        free_gb = free_bytes(probe) / _GIB
        if free_gb < need_gb:
            raise EnvironmentSetupError(
                f"Only {free_gb:.2f} GB free at {probe}; this job needs {need_gb:.2f} GB. "
                "Fix: free disk space or set output_dir / FLEXTRAIN_HOME on a larger disk."
            )

    @staticmethod
    def _check_writable(folder: Path) -> None:
        probe = folder / f".write-test-{uuid.uuid4().hex[:8]}"
        try:
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            raise EnvironmentSetupError(
                f"Cannot write to {folder}: {exc.strerror}. "
                "Fix: fix the folder's permissions or choose another output_dir."
            ) from exc
