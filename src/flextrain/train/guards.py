"""The run's guards against a diverged loss and a full disk, built once per run and
shared by the supervised and the preference runner (see health.py, diskguard.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from flextrain.estimate.disk import TOKENIZER_FILES
from flextrain.hardware.disk import files_bytes
from flextrain.jobs.checkpoints import latest_checkpoint
from flextrain.jobs.resume import checkpoint_step
from flextrain.jobs.spec import RunSpec
from flextrain.jobs.store import JobStore
from flextrain.train import distributed
from flextrain.train.diskguard import DiskGuard
from flextrain.train.health import Advice, HealthCallback, HealthMonitor, RollbackRequest
from flextrain.train.stop import DiskPausedError, TrainingDivergedError


@dataclass
class Guards:
    monitor: HealthMonitor
    callback: HealthCallback
    disk: DiskGuard
    reporter: bool

    @classmethod
    def for_run(cls, spec: RunSpec, store: JobStore, reporter: bool) -> Guards:
        options = spec.config.health
        advice = Advice(fp16=spec.precision == "fp16", clipping=spec.config.max_grad_norm > 0)
        monitor = HealthMonitor(options, advice, agree=distributed.agree)
        return cls(
            monitor=monitor,
            callback=HealthCallback(monitor, store, spec.job_id, reporter=reporter),
            disk=DiskGuard(
                store,
                spec.job_id,
                Path(spec.checkpoint_dir),
                options,
                reporter=reporter,
                tokenizer_bytes=files_bytes(Path(spec.model_path), TOKENIZER_FILES),
            ),
            reporter=reporter,
        )

    def roll_back(self, checkpoint_step: int | None) -> float:
        """Count a rollback and have the next training loop run at half the learning
        rate; returns the new share of the configured rate. The rate is scaled against
        the one the checkpoint it goes back to was saved with (its optimizer and
        scheduler state carry it)."""
        self.monitor.rollbacks += 1
        total = self.callback.total_factor * 0.5
        self.callback.total_factor = total
        saved = self.callback.saved_at.get(checkpoint_step, 1.0) if checkpoint_step else 1.0
        self.callback.scale_learning_rate(total / saved)
        return total

    def rolled_back(self, spec: RunSpec, store: JobStore, request: RollbackRequest) -> str | None:
        """Record a rollback (log line, event, the metrics of the steps to train again
        dropped) and return the checkpoint to continue from (None: the start)."""
        latest = latest_checkpoint(Path(spec.checkpoint_dir))
        step = checkpoint_step(latest) if latest else 0
        factor = self.roll_back(step)
        message = (
            f"{request.what.capitalize()} at step {request.step}: back to "
            f"{latest.name if latest else 'the start'} at half the learning rate "
            f"({factor:g} of the configured {spec.config.learning_rate:g}; rollback "
            f"{self.monitor.rollbacks} of at most {spec.config.health.max_rollbacks})."
        )
        print(f"[flextrain] {message}", flush=True)
        if self.reporter:
            store.drop_metrics_after(spec.job_id, step)
            store.add_event(
                spec.job_id,
                "rolled_back",
                message,
                level="warning",
                data={"step": request.step, "checkpoint_step": step, "lr_factor": factor},
            )
        return str(latest) if latest else None

    @staticmethod
    def diverged(exc: TrainingDivergedError, checkpoint_dir: Path) -> TrainingDivergedError:
        """`exc` with the checkpoint the job keeps: the last one, written before the step
        that diverged."""
        latest = latest_checkpoint(checkpoint_dir)
        kept = (
            f" The last good checkpoint, {latest.name}, is kept: resume continues from it."
            if latest is not None
            else " No checkpoint was saved before it: resume starts over."
        )
        return TrainingDivergedError(f"{exc}{kept}", exc.step)

    def raise_if_paused(self) -> None:
        """DiskPausedError when the disk guard stopped the run before a checkpoint."""
        if self.disk.paused:
            raise DiskPausedError(self.disk.paused)
