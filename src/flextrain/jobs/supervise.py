"""Supervisor of a multi-process job: `python -m flextrain.jobs.supervise ... -- ARGV`.

Runs torchrun (ARGV) as its child and, when it ends, records what happened in the
job store: torchrun stops every rank when one fails, and its report names the
first failure (rank, host, exit code or signal, the rank's error file). The
ranks cannot record that themselves: a killed rank says nothing, and the others
only see a broken collective. The supervisor turns the report into FAILED with
that rank's error, a shutdown into INTERRUPTED (resumable), and leaves a cancel
as the service wrote it. Then it lets the scheduler start the next queued job.

SIGTERM/SIGINT/SIGHUP are forwarded to torchrun, which forwards them to every
rank (they checkpoint and stop); the service kills what is left after a grace
period.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Literal

from flextrain.config.enums import ACTIVE_STATUSES, TrainingStatus
from flextrain.jobs.environment import TrainingEnvironmentManager
from flextrain.jobs.oom import killed_by_oom, out_of_memory_advice
from flextrain.jobs.store import JobStore

_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


@dataclass(frozen=True)
class RankFailure:
    """torchrun's "root cause": the first rank that failed."""

    rank: int | None
    host: str | None
    exitcode: int | None
    error: str

    def describe(self) -> str:
        where = f"rank {self.rank}" if self.rank is not None else "a rank"
        if self.host:
            where += f" on {self.host}"
        if self.exitcode is not None and self.exitcode < 0:
            try:
                name = signal.Signals(-self.exitcode).name
            except ValueError:
                name = f"signal {-self.exitcode}"
            how = f"was killed by {name}"
            if self.exitcode == -signal.SIGKILL:
                how += " (out of memory, or killed by hand?)"
        elif self.exitcode is not None:
            how = f"exited with code {self.exitcode}"
        else:
            how = "failed"
        detail = f": {self.error}" if self.error and "Signal" not in self.error else ""
        return f"{where} {how}{detail}"


_FIELD = re.compile(r"^\s*(time|host|rank|exitcode|error_file|traceback)\s*:\s?(.*)$")
_ENTRY = re.compile(r"^\[\d+\]:\s*$")

# Errors a rank raises because a *peer* went away: never the cause of a failure.
_SECONDARY = (
    "connection reset by peer",
    "connection closed by peer",
    "broken pipe",
    "gloo",
    "nccl",
    "timed out",
    "timeout",
    "socket",
)


def parse_failures(log_text: str) -> list[RankFailure]:
    """Every rank failure in torchrun's last failure report, the root cause first.

    The report (torch.distributed.elastic's ChildFailedError) lists each failed rank
    under "Failures:" and "Root Cause (first observed failure):" with `host`,
    `rank : N (local_rank: M)`, `exitcode : C (pid: P)`, `error_file` and `traceback`;
    a Python exception's message is read from the rank's error file.
    """
    end = log_text.rfind("Root Cause (first observed failure)")
    if end < 0:
        return []
    begin = log_text.rfind("Failures:", 0, end)
    text = log_text[begin if begin >= 0 else end :]
    blocks: list[dict[str, str | list[str]]] = []
    current: dict[str, str | list[str]] | None = None
    in_trace = False
    for line in text.splitlines():
        if _ENTRY.match(line):
            current = {"trace": []}
            blocks.append(current)
            in_trace = False
            continue
        if current is None:
            continue
        if line.startswith("====") or line.startswith("----"):
            current, in_trace = None, False
            continue
        match = _FIELD.match(line)
        trace = current["trace"]
        assert isinstance(trace, list)
        if match:
            key, value = match.groups()
            in_trace = key == "traceback"
            if key not in current:
                current[key] = value.strip()
            if in_trace and value.strip():
                trace.append(value.strip())
        elif in_trace and line.strip():
            trace.append(line.strip())
    failures = []
    for block in blocks:
        lines = block.get("trace")
        error_file = block.get("error_file")
        error = _error_file_message(error_file if isinstance(error_file, str) else None)
        failures.append(
            RankFailure(
                rank=_first_int(_text(block.get("rank"))),
                host=_text(block.get("host")) or None,
                exitcode=_first_int(_text(block.get("exitcode"))),
                error=error or _last_meaningful(lines if isinstance(lines, list) else []),
            )
        )
    # torchrun's own root cause (the last entry) first, then the others in order; but
    # several ranks fail once one does (broken collectives, torchrun's SIGTERM to the
    # survivors), and the earliest of those may be seen before the one that caused them.
    ordered = failures[-1:] + failures[:-1]
    seen: set[tuple[int | None, str | None]] = set()
    unique = []
    for failure in ordered:
        if (failure.rank, failure.host) not in seen:
            seen.add((failure.rank, failure.host))
            unique.append(failure)
    return sorted(unique, key=_consequence_rank)


def parse_root_cause(log_text: str) -> RankFailure | None:
    """The failure that caused the others, from torchrun's last report (None if none)."""
    failures = parse_failures(log_text)
    return failures[0] if failures else None


def _consequence_rank(failure: RankFailure) -> int:
    """0 for a failure of its own (a kill, a crash, an exception), 1 for one caused by a
    peer's (a broken collective, torchrun's SIGTERM to the survivors)."""
    lowered = failure.error.lower()
    if failure.exitcode == -signal.SIGTERM or any(word in lowered for word in _SECONDARY):
        return 1
    return 0


def _text(value: str | list[str] | None) -> str | None:
    return value if isinstance(value, str) else None


def _first_int(text: str | None) -> int | None:
    if not text:
        return None
    match = re.match(r"\s*(-?\d+)", text)
    return int(match.group(1)) if match else None


def _error_file_message(path: str | None) -> str:
    """The exception message a rank's `@record` wrote to its error file."""
    if not path or path.startswith("<"):
        return ""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return ""
    message = data.get("message")
    if isinstance(message, dict):
        message = message.get("message")
    return str(message or "").strip().splitlines()[-1] if message else ""


def _last_meaningful(trace: list[str]) -> str:
    lines = [t for t in trace if t and not t.startswith("File ") and t != "<N/A>"]
    return lines[-1] if lines else ""


def settle(
    store: JobStore,
    job_id: str,
    returncode: int,
    signalled: str | None,
    log_path: Path | None,
    killed_by_oom: str | None = None,
) -> TrainingStatus | None:
    """Record how torchrun ended if the ranks did not (returns the status written).

    `killed_by_oom`: the kernel's OOM killer is known to have acted during the run
    (`flextrain.jobs.oom.killed_by_oom`); a rank that died of SIGKILL is then reported
    as out of memory, with what to change, instead of "killed".
    """
    job = store.get(job_id)
    if job is None or job.status not in ACTIVE_STATUSES:
        return None  # completed, cancelled or already settled by a rank
    now = datetime.now(UTC)
    if signalled:
        message = f"Stopped by {signalled} (not a cancel from flextrain); resume continues it."
        status, kind = TrainingStatus.INTERRUPTED, "interrupted"
        level_t: Literal["warning", "error"] = "warning"
    else:
        text = log_path.read_text(errors="replace")[-200_000:] if log_path else ""
        failure = parse_root_cause(text)
        if failure is not None and failure.exitcode == -signal.SIGKILL and killed_by_oom:
            config = job.settings
            batch = config.batch_size
            where = f"rank {failure.rank}" if failure.rank is not None else "a rank"
            message = "OutOfMemoryAdvice: " + out_of_memory_advice(
                config,
                batch if isinstance(batch, int) else 1,
                config.gradient_accumulation_steps,
                f"{where}: {killed_by_oom}; recovery is not done with several processes",
            )
        elif failure is not None:
            message = f"Distributed run failed: {failure.describe()}."
        elif returncode == 0:
            message = "The processes exited without the job completing."
        else:
            message = f"torchrun exited with code {returncode}; see the log."
        if log_path:
            message += f" Log: {log_path}"
        status, kind = TrainingStatus.FAILED, "rank_failed"
        level_t = "error"
    changed = store.transition(
        job_id,
        ACTIVE_STATUSES,
        status=status.value,
        error_message=message[:4000],
        completed_at=now,
    )
    if not changed:
        return None
    store.add_event(job_id, kind, message, level=level_t)
    return status


def main(argv: list[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    if "--" not in args_in:
        print("usage: python -m flextrain.jobs.supervise OPTIONS -- COMMAND...", file=sys.stderr)
        return 2
    split = args_in.index("--")
    parser = argparse.ArgumentParser(prog="flextrain.jobs.supervise")
    parser.add_argument("--job-id", required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--home", required=True)
    args = parser.parse_args(args_in[:split])
    command = args_in[split + 1 :]

    from flextrain.db import make_sessionmaker
    from flextrain.migrations import make_engine

    store = JobStore(make_sessionmaker(make_engine(args.database_url, migrate=False)))
    job = store.get(args.job_id)
    log_path = Path(job.log_path) if job is not None and job.log_path else None

    child = subprocess.Popen(command)
    received: list[str] = []

    # In a Slurm job step, slurmstepd signals every process of the step itself (torchrun
    # included): forwarding would deliver a second SIGTERM, on which torchrun abandons
    # its graceful shutdown and the ranks are killed before their checkpoint.
    in_slurm_step = "SLURM_STEP_ID" in os.environ

    def forward(signum: int, frame: FrameType | None) -> None:
        received.append(signal.Signals(signum).name)
        if in_slurm_step and signum == signal.SIGTERM:
            return
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signum)

    for sig in _SIGNALS:
        signal.signal(sig, forward)
    returncode = child.wait()
    sys.stdout.flush()
    latest = store.get(args.job_id)
    cancelled = latest is not None and latest.status == TrainingStatus.CANCELLED
    signalled = received[0] if received and not cancelled else None
    oom_kill = killed_by_oom(
        TrainingEnvironmentManager.for_home(Path(args.home)).jobs_dir / args.job_id
    )
    status = settle(store, args.job_id, returncode, signalled, log_path, oom_kill)
    if status is not None:
        print(f"[flextrain] job {args.job_id}: {status.value}", flush=True)
    _start_next(Path(args.home), args.database_url)
    return 0 if returncode == 0 else 1


def _start_next(home: Path, database_url: str) -> None:
    """Let the scheduler start what waited for this job's resources."""
    try:
        from flextrain.service import tick_after_exit
    except ImportError:
        return
    tick_after_exit(home, database_url)


if __name__ == "__main__":
    sys.exit(main())
