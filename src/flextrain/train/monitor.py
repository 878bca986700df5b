"""The worker's monitor: heartbeat, system-metric samples and memory warnings.

It runs in a thread rather than in Trainer callbacks: a long step, an
evaluation or a checkpoint save would otherwise stop the heartbeat, and a
job that is alive would look dead to the service.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

from flextrain.hardware.usage import UsageSample, UsageSampler
from flextrain.jobs.store import JobStore

# Warn when memory use passes this share of what there is; warn again only after
# it fell below REARM_FRACTION (no event storm from a value hovering at the line).
WARN_FRACTION = 0.90
REARM_FRACTION = 0.85


class JobMonitor:
    def __init__(
        self,
        store: JobStore,
        job_id: str,
        interval: float,
        *,
        warn_fraction: float = WARN_FRACTION,
        sampler: UsageSampler | None = None,
    ) -> None:
        self.store = store
        self.job_id = job_id
        self.interval = interval
        self.warn_fraction = warn_fraction
        self.rearm_fraction = min(REARM_FRACTION, warn_fraction * 0.95)
        self.sampler = sampler or UsageSampler()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="flextrain-monitor", daemon=True)
        self._armed: dict[str, bool] = {}

    def start(self) -> None:
        self.tick()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.interval + 5)
        self.sampler.close()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.tick()
            except Exception as exc:  # a database hiccup must not kill the run
                print(f"[flextrain] monitor: {type(exc).__name__}: {exc}", flush=True)

    def tick(self) -> UsageSample:
        """One heartbeat and one sample; a warning event when memory passes the line."""
        self.store.heartbeat(self.job_id)
        sample = self.sampler.sample()
        self.store.add_sample(self.job_id, sample.to_dict())
        self._check("system", sample.memory_fraction, sample.memory_total_gb, sample)
        for gpu in sample.gpus:
            self._check(f"gpu{gpu.index}", gpu.memory_fraction, gpu.memory_total_gb, sample)
        return sample

    def _check(self, name: str, fraction: float, total_gb: float, sample: UsageSample) -> None:
        armed = self._armed.get(name, True)
        if armed and fraction >= self.warn_fraction:
            self._armed[name] = False
            what = "System memory" if name == "system" else f"GPU {name[3:]} memory"
            message = (
                f"{what} at {100 * fraction:.0f}% of {total_gb:.1f} GiB "
                f"(this job's process: {sample.process_rss_gb:.2f} GiB). The job may run out "
                "of memory: lower batch_size or max_length, turn on gradient_checkpointing, "
                "or stop other programs."
            )
            data: dict[str, Any] = {"device": name, "fraction": fraction, "total_gb": total_gb}
            self.store.add_event(self.job_id, "memory_warning", message, level="warning", data=data)
            print(f"[flextrain] warning: {message}", file=sys.stdout, flush=True)
        elif not armed and fraction < self.rearm_fraction:
            self._armed[name] = True
