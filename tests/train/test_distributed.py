"""Multi-process training through torchrun on this CPU (gloo): DDP gives the same result
as one process, two nodes meet over a loopback rendezvous, a dead rank fails the job
with its own error and leaves nothing running, and a cancel stops every rank."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from flextrain.config.enums import TrainingStatus, TrainingType
from flextrain.config.schemas import AdvancedTrainingConfig
from flextrain.jobs.checkpoints import list_checkpoints
from flextrain.jobs.store import TrainingJob
from flextrain.jobs.supervise import parse_root_cause
from flextrain.service import TrainingService
from flextrain.train.distributed import decoder_layer_classes, strategy_arguments
from tests.train.helpers import reload_logits


def _config(**overrides: object) -> AdvancedTrainingConfig:
    values: dict[str, object] = {
        "model_id": "flextrain/tiny-llama",
        "dataset_id": "demo/text",
        "training_type": TrainingType.FULL_TRAINING,
        "max_steps": 24,
        "learning_rate": 3e-3,
        "batch_size": 8,
        "max_length": 48,
        "logging_steps": 4,
        "num_threads": 1,
        "eval_split": 0.1,
        "evaluate_before_training": False,
        "save_total_limit": 1,
        "gradient_checkpointing": False,
        "monitor_interval": 0.5,
        "seed": 7,
    }
    values.update(overrides)
    return AdvancedTrainingConfig(**values)  # type: ignore[arg-type]


def _run(service: TrainingService, config: AdvancedTrainingConfig, timeout: float = 240) -> str:
    job = service.create_job(config)
    service.start_job(job.job_id)
    done = service.wait(job.job_id, timeout=timeout, poll=0.2)
    assert done.status == TrainingStatus.COMPLETED, (
        done.status,
        done.error_message,
        service.read_log(job.job_id, 60),
    )
    return job.job_id


def _tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def _alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    out = []
    for proc in procs:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                out.append(proc)
        except psutil.Error:
            pass
    return out


def _rank_process(pid: int, rank: int, timeout: float = 60) -> psutil.Process:
    """The worker process torchrun started as `rank` under the job's supervisor."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in _tree(pid):
            try:
                if "flextrain.train.worker" in " ".join(proc.cmdline()) and proc.environ().get(
                    "RANK"
                ) == str(rank):
                    return proc
            except psutil.Error:
                continue
        time.sleep(0.1)
    raise AssertionError(f"no rank {rank} under pid {pid}")


def _wait_step(service: TrainingService, job_id: str, step: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = service.require_job(job_id)
        assert not job.is_finished, (job.status, job.error_message, service.read_log(job_id, 40))
        if job.current_step >= step:
            return
        time.sleep(0.1)
    raise AssertionError(f"job never reached step {step}")


def _start_long_ddp_job(
    service: TrainingService, step: int
) -> tuple[TrainingJob, int, list[psutil.Process]]:
    """A 2-process job far from its end, once it has trained `step` steps: the job, its
    supervisor's pid and every process of its tree."""
    job = service.create_job(_config(batch_size=4, num_processes=2, max_steps=5000))
    started = service.start_job(job.job_id)
    assert started.pid is not None
    _wait_step(service, job.job_id, step)
    return job, started.pid, _tree(started.pid)


def test_two_process_ddp_trains_to_the_same_loss_as_one_process(
    service: TrainingService,
) -> None:
    # The same 8 examples per optimizer step: 8 in one process, or 4 in each of two.
    single = _run(service, _config(batch_size=8))
    ddp = _run(service, _config(batch_size=4, num_processes=2))
    one, two = service.require_job(single), service.require_job(ddp)
    assert two.metrics["world_size"] == 2
    assert one.metrics.get("world_size") == 1
    assert two.current_step == one.current_step == 24
    # Both learnt (from ln(vocab) ~ 6.9) and ended within a few percent of each other; the
    # examples are dealt to the ranks in a different order, so not bit for bit.
    assert one.eval_loss is not None
    assert two.eval_loss is not None
    assert two.eval_loss < 6.0
    assert abs(two.eval_loss - one.eval_loss) / one.eval_loss < 0.05, (
        one.eval_loss,
        two.eval_loss,
    )
    # Rank 0 alone wrote the result, and it reloads to what was trained.
    got, recorded = reload_logits(Path(two.model_path or ""))
    assert got == pytest.approx(recorded, abs=1e-4)
    events = [e.kind for e in service.events(ddp)]
    assert "launched" in events
    # Every rank's own log is kept in the job's logs folder.
    logs = service.environment(ddp).logs_dir / "ranks"
    rank_logs = sorted(p.parent.name for p in logs.rglob("stdout.log"))
    assert rank_logs == ["0", "1"], list(logs.rglob("*"))


def test_killing_one_rank_fails_the_job_with_its_error_and_leaves_nothing_running(
    service: TrainingService,
) -> None:
    job, pid, procs = _start_long_ddp_job(service, step=2)
    rank1 = _rank_process(pid, 1)
    killed_at = time.monotonic()
    rank1.send_signal(signal.SIGKILL)
    done = service.wait(job.job_id, timeout=60, poll=0.2)
    took = time.monotonic() - killed_at
    assert done.status == TrainingStatus.FAILED, (done.status, service.read_log(job.job_id, 40))
    assert "rank 1" in (done.error_message or "")
    assert "SIGKILL" in (done.error_message or "")
    assert took < 45, took  # not the 600 s collective timeout
    deadline = time.monotonic() + 15
    while _alive(procs) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(procs), [p.cmdline() for p in _alive(procs)]
    assert [e.kind for e in service.events(job.job_id)][-1] == "rank_failed"


def test_cancel_stops_every_rank_at_the_same_step_with_a_checkpoint(
    service: TrainingService,
) -> None:
    job, _, procs = _start_long_ddp_job(service, step=3)
    done = service.cancel_job(job.job_id, timeout=60)
    assert done.status == TrainingStatus.CANCELLED
    assert not _alive(procs), [p.cmdline() for p in _alive(procs)]
    saved = list_checkpoints(service.environment(job.job_id).checkpoint_dir)
    assert saved
    assert saved[-1].step >= 3
    # It was cancelled, not failed: the supervisor left the status as the service wrote it.
    assert service.require_job(job.job_id).status == TrainingStatus.CANCELLED


@pytest.mark.parametrize(
    ("script", "rank", "expect"),
    [
        ("raise ValueError('bad shard on this rank')", 1, "bad shard on this rank"),
        ("os.kill(os.getpid(), signal.SIGKILL)", 1, "SIGKILL"),
    ],
)
def test_torchruns_failure_report_names_the_rank_and_its_error(
    tmp_path: Path, script: str, rank: int, expect: str
) -> None:
    program = tmp_path / "fail.py"
    program.write_text(
        textwrap.dedent(
            f"""
            import os, signal, time
            from torch.distributed.elastic.multiprocessing.errors import record

            @record
            def main():
                if os.environ["RANK"] == "{rank}":
                    {script}
                time.sleep(30)

            main()
            """
        )
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            "--monitor-interval",
            "0.2",
            str(program),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode != 0
    failure = parse_root_cause(result.stdout + result.stderr)
    assert failure is not None, result.stderr[-3000:]
    assert failure.rank == rank
    assert expect in failure.describe(), failure


def test_fsdp_wraps_each_decoder_layer_and_saves_a_full_state_dict(
    service: TrainingService, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import AutoModelForCausalLM

    path = service.models.resolve("flextrain/tiny-llama").path
    model = AutoModelForCausalLM.from_pretrained(path)
    assert decoder_layer_classes(model) == ["LlamaDecoderLayer"]
    cfg = _config(num_processes=2, distributed_strategy="fsdp", distributed_timeout=120)
    assert strategy_arguments(cfg, model) == {}  # not a rank of several: nothing to add
    monkeypatch.setenv("WORLD_SIZE", "2")
    args = strategy_arguments(cfg, model)
    assert args["ddp_backend"] == "gloo"
    assert args["ddp_timeout"] == 120
    assert args["fsdp"] is True
    assert args["fsdp_config"]["transformer_layer_cls_to_wrap"] == ["LlamaDecoderLayer"]
    assert args["fsdp_config"]["state_dict_type"] == "FULL_STATE_DICT"
    ddp = strategy_arguments(_config(num_processes=2), model)
    assert "fsdp" not in ddp
    assert ddp["ddp_find_unused_parameters"] is False


def test_fsdp_job_on_cpu_saves_a_full_model_that_reloads(service: TrainingService) -> None:
    job_id = _run(service, _config(batch_size=4, num_processes=2, distributed_strategy="fsdp"))
    done = service.require_job(job_id)
    assert done.metrics["world_size"] == 2
    assert done.eval_loss is not None
    assert done.eval_loss < 6.0
    got, recorded = reload_logits(Path(done.model_path or ""))
    assert got == pytest.approx(recorded, abs=1e-4)
