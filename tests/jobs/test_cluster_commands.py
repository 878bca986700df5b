"""The cluster executors' pure parts, without a cluster: the Slurm batch script, the
per-job cluster options, what sinfo's GRES says, and the Ray entrypoint.

The same script runs for real in tests/cluster (make test-cluster); these pin what it
says, so a change to it is a visible change here.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from flextrain.config.cluster import ClusterOptions
from flextrain.config.schemas import AdvancedTrainingConfig
from flextrain.config.validation import ConfigValidationError
from flextrain.jobs.cluster import node_constraints
from flextrain.jobs.rayjobs import entrypoint, submission_id
from flextrain.jobs.resources import Layout
from flextrain.jobs.slurm import BatchJob, _gres_gpus, batch_script
from flextrain.service import TrainingService
from flextrain.settings import Settings


def _batch(tmp_path: Path, **overrides: object) -> BatchJob:
    values: dict[str, object] = {
        "job_id": "abc123",
        "layout": Layout(processes=1, nodes=1),
        "worker_args": ["--job-id", "abc123", "--database-url", "sqlite:///x.db", "--home", "/h"],
        "python": "/venv/bin/python",
        "job_dir": tmp_path / "jobs" / "abc123",
        "log_file": tmp_path / "jobs" / "abc123" / "logs" / "train.log",
        "rank_logs": tmp_path / "jobs" / "abc123" / "logs" / "ranks",
        "options": ClusterOptions(),
    }
    values.update(overrides)
    return BatchJob(**values)  # type: ignore[arg-type]


def _sbatch_lines(script: str) -> list[str]:
    return [
        line.removeprefix("#SBATCH ") for line in script.splitlines() if line.startswith("#SBATCH")
    ]


def test_a_one_process_job_runs_the_worker_under_srun_and_can_be_requeued(tmp_path: Path) -> None:
    script = batch_script(_batch(tmp_path, signal_seconds=90, cpus_per_node=2))
    options = _sbatch_lines(script)
    assert "--job-name=flextrain-abc123" in options
    assert "--nodes=1" in options
    assert "--requeue" in options
    assert "--signal=B:USR1@90" in options
    assert "--cpus-per-task=2" in options
    assert f"--output={tmp_path}/jobs/abc123/slurm-%j.out" in options
    assert not any(o.startswith("--gpus") for o in options)
    run = next(line for line in script.splitlines() if "flextrain.train.worker" in line)
    assert "/venv/bin/python -m flextrain.train.worker --job-id abc123" in run
    assert "torch.distributed.run" not in script
    assert 'resume="--resume-latest"' in script
    assert 'scontrol requeue "$SLURM_JOB_ID"' in script


def test_several_processes_run_torchrun_meeting_on_the_first_node(tmp_path: Path) -> None:
    script = batch_script(_batch(tmp_path, layout=Layout(processes=4, nodes=2), gpus_per_node=4))
    options = _sbatch_lines(script)
    assert "--nodes=2" in options
    assert "--ntasks-per-node=1" in options
    assert "--gpus-per-node=4" in options
    assert "srun --kill-on-bad-exit=1 --ntasks-per-node=1 --nodes=2" in script
    assert "--nnodes 2 --nproc-per-node 4" in script
    # Node 0 hosts the rendezvous at its NodeAddr; each srun task knows its node.
    assert 'head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)' in script
    assert "grep -o 'NodeAddr=[^ ]*'" in script
    assert (
        'export FLEXTRAIN_RDZV_ENDPOINT="${addr:-$head}:$(( 29500 + SLURM_JOB_ID % 10000 ))"'
        in script
    )
    assert '[ "${SLURM_NODEID:-0}" = 0 ] && is_host=true' in script
    assert '--rdzv-endpoint "$FLEXTRAIN_RDZV_ENDPOINT"' in script
    assert '--rdzv-conf "join_timeout=600,is_host=$is_host"' in script
    assert "--rdzv-id abc123" in script
    assert "-m flextrain.jobs.supervise --job-id abc123" in script


def test_several_processes_on_one_node_need_no_rendezvous_endpoint(tmp_path: Path) -> None:
    script = batch_script(_batch(tmp_path, layout=Layout(processes=2, nodes=1)))
    assert "--nnodes 1 --nproc-per-node 2" in script
    assert "--standalone" in script
    assert "--rdzv-endpoint" not in script


def test_partition_account_qos_time_and_extra_options_become_sbatch_lines(tmp_path: Path) -> None:
    options = ClusterOptions(
        partition="gpu",
        account="lab",
        qos="high",
        time_limit="1-02:00:00",
        extra_sbatch=["--constraint=a100", "--exclusive"],
    )
    lines = _sbatch_lines(
        batch_script(_batch(tmp_path, options=options, extra_sbatch=("--mem=0",)))
    )
    for expected in (
        "--partition=gpu",
        "--account=lab",
        "--qos=high",
        "--time=1-02:00:00",
        "--constraint=a100",
        "--exclusive",
        "--mem=0",
    ):
        assert expected in lines


def test_the_script_is_valid_bash(tmp_path: Path) -> None:
    script = batch_script(_batch(tmp_path, layout=Layout(processes=2, nodes=2)))
    path = tmp_path / "job.sbatch"
    path.write_text(script)
    checked = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr


@pytest.mark.parametrize(
    "option",
    ["--x=1\nrm -rf /", "--x=$(id)", "-p debug", "--x='a'", "--x=a;b", "constraint=a100"],
)
def test_an_extra_option_that_could_leave_its_line_is_refused(option: str) -> None:
    with pytest.raises(ValidationError) as raised:
        AdvancedTrainingConfig(
            model_id="m",
            dataset_id="d",
            training_type="fine_tuning",
            cluster={"extra_sbatch": [option]},
        )
    assert "cluster.extra_sbatch" in str(raised.value)
    assert "Fix: write it as --name or --name=value" in str(raised.value)


def test_a_bad_setting_option_is_refused_when_the_script_is_written(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="slurm_extra_sbatch: '--x=\\$\\(id\\)' is not an sbatch"):
        batch_script(_batch(tmp_path, extra_sbatch=("--x=$(id)",)))


@pytest.mark.parametrize(
    ("field", "value"), [("partition", "gpu;rm"), ("time_limit", "2 hours"), ("qos", "a b")]
)
def test_cluster_names_and_times_are_checked(field: str, value: str) -> None:
    with pytest.raises(ValidationError) as raised:
        ClusterOptions(**{field: value})
    assert field in str(raised.value)


@pytest.mark.parametrize(
    ("gres", "gpus"),
    [("(null)", 0), ("gpu:4", 4), ("gpu:a100:8(S:0-1)", 8), ("gpu:a100:2,gpu:v100:2", 4)],
)
def test_gpus_per_node_are_read_from_gres(gres: str, gpus: int) -> None:
    assert _gres_gpus(gres) == gpus


def test_settings_take_extra_sbatch_options_separated_by_semicolons() -> None:
    settings = Settings(slurm_extra_sbatch="--constraint=a100; --exclusive")  # type: ignore[arg-type]
    assert settings.slurm_extra_sbatch == ["--constraint=a100", "--exclusive"]


def test_a_ray_job_runs_the_worker_or_torchrun_as_its_entrypoint() -> None:
    argv = ["/venv/bin/python", "-m", "flextrain.train.worker", "--job-id", "j1", "--home", "/h"]
    assert entrypoint(argv, 1) == shlex.join(argv)
    several = shlex.split(entrypoint(argv, 2))
    assert several[:3] == ["/venv/bin/python", "-m", "flextrain.jobs.supervise"]
    assert several[several.index("--") + 1 :][:4] == [
        "/venv/bin/python",
        "-m",
        "torch.distributed.run",
        "--standalone",
    ]
    assert several[-5:] == ["flextrain.train.worker", "--job-id", "j1", "--home", "/h"]
    assert submission_id("j1", 2) == "flextrain-j1-2"


def test_the_ray_executor_without_ray_says_how_to_install_it(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Ray absent, as on a machine without the extra: its modules cannot be imported.
    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.setitem(sys.modules, "ray.job_submission", None)
    monkeypatch.setitem(sys.modules, "ray.util.state", None)
    service = TrainingService(settings.model_copy(update={"executor": "ray"}))
    try:
        job = service.create_job(
            AdvancedTrainingConfig(
                model_id="flextrain/tiny-llama",
                dataset_id="demo/text",
                training_type="full_training",
                max_steps=2,
            )
        )
        with pytest.raises(ConfigValidationError) as raised:
            service.start_job(job.job_id)
        message = str(raised.value)
        assert "executor: FLEXTRAIN_EXECUTOR=ray needs Ray." in message
        assert "pip install 'flextrain[ray]'" in message
        assert service.require_job(job.job_id).cluster_job_id is None
    finally:
        service.engine.dispose()


def test_a_cluster_node_with_small_gpus_refuses_a_model_that_does_not_fit(
    service: TrainingService,
) -> None:
    """The memory check runs against the node a cluster would give (its GPUs' memory
    from FLEXTRAIN_CLUSTER_GPU_MEMORY_GB), naming the numbers."""
    node = node_constraints(
        cpus=8, memory_gb=64.0, gpus=1, gpu_memory_gb=0.001, platform="slurm partition gpu"
    )
    config = AdvancedTrainingConfig(
        model_id="flextrain/tiny-llama",
        dataset_id="demo/text",
        training_type="full_training",
        max_steps=2,
    )
    issues, _, _ = service.validate(config, hardware=node)
    errors = [str(i) for i in issues if i.severity == "error"]
    assert any("GB of GPU memory; 0.00 GB is available" in e for e in errors), errors
    roomy = node_constraints(
        cpus=8, memory_gb=64.0, gpus=1, gpu_memory_gb=80.0, platform="slurm partition gpu"
    )
    issues, _, _ = service.validate(config, hardware=roomy)
    assert not [i for i in issues if i.severity == "error" and "memory" in i.message.lower()]
    assert roomy.supports_bf16
    assert not node_constraints(
        cpus=8, memory_gb=64.0, gpus=1, gpu_memory_gb=16.0, platform="v100", bf16=False
    ).supports_bf16
