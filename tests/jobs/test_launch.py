"""The launch command of each layout and strategy, built without launching anything."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flextrain.config.enums import TrainingType
from flextrain.config.schemas import AdvancedTrainingConfig, BasicTrainingConfig
from flextrain.jobs.launch import build_launch_command, cluster_command, supervised
from flextrain.jobs.resources import Allocation, Layout
from flextrain.jobs.workerenv import MALLOC_VARIABLE, preload_allocator, tcmalloc_path
from flextrain.settings import Settings

WORKER_TAIL = ["-m", "flextrain.train.worker", "--job-id", "abc", "--database-url"]


def _settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path, database_url="sqlite:///x.db")


def _flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_one_process_runs_the_worker_directly(tmp_path: Path) -> None:
    argv, env = build_launch_command(
        "abc", Layout(), _settings(tmp_path), python="/py", base_env={"KEEP": "1"}
    )
    assert argv == [
        "/py",
        "-m",
        "flextrain.train.worker",
        "--job-id",
        "abc",
        "--database-url",
        "sqlite:///x.db",
        "--home",
        str(tmp_path),
    ]
    assert env["KEEP"] == "1"
    assert env["TOKENIZERS_PARALLELISM"] == "false"
    assert "CUDA_VISIBLE_DEVICES" not in env
    assert "OMP_NUM_THREADS" not in env


def test_allocation_fixes_gpus_and_threads(tmp_path: Path) -> None:
    _, env = build_launch_command(
        "abc", Layout(), _settings(tmp_path), Allocation(gpus=(2, 3), threads=4), base_env={}
    )
    assert env["CUDA_VISIBLE_DEVICES"] == "2,3"
    assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"  # the order NVML numbers them in
    assert env["OMP_NUM_THREADS"] == "4"


@pytest.mark.parametrize("strategy", ["ddp", "fsdp", "deepspeed"])
def test_several_processes_on_one_machine_go_through_torchrun_standalone(
    tmp_path: Path, strategy: str
) -> None:
    config = AdvancedTrainingConfig(
        model_id="m",
        dataset_id="d",
        training_type=TrainingType.FULL_TRAINING,
        num_processes=2,
        distributed_strategy=strategy,
        distributed_timeout=120,
    )
    argv, env = build_launch_command(
        "abc",
        Layout.of(config),
        _settings(tmp_path),
        Allocation(threads=1),
        python="/py",
        base_env={},
    )
    assert argv[:3] == ["/py", "-m", "torch.distributed.run"]
    assert _flag(argv, "--nproc-per-node") == "2"
    assert _flag(argv, "--nnodes") == "1"
    assert "--standalone" in argv
    assert "--rdzv-endpoint" not in argv
    # A failed rank fails the run (no elastic restarts), and its peers are stopped soon.
    assert _flag(argv, "--max-restarts") == "0"
    assert float(_flag(argv, "--monitor-interval")) <= 1.0
    # Every rank's output in the job's logs folder, tee'd into the job log.
    assert _flag(argv, "--log-dir") == str(tmp_path / "jobs" / "abc" / "logs" / "ranks")
    assert _flag(argv, "--redirects") == "3"
    assert _flag(argv, "--tee") == "3"
    # The strategy is the worker's business (TrainingArguments), not torchrun's.
    tail = argv[argv.index("-m", 3) :]
    assert tail[: len(WORKER_TAIL)] == WORKER_TAIL
    assert env["OMP_NUM_THREADS"] == "1"
    assert env["TORCH_NCCL_ASYNC_ERROR_HANDLING"] == "1"


def test_multi_node_uses_a_c10d_rendezvous_hosted_by_the_first_node(tmp_path: Path) -> None:
    config = Layout(processes=1, nodes=2, timeout_s=90)
    first, _ = build_launch_command(
        "abc", config, _settings(tmp_path), rdzv_endpoint="node0:29400", base_env={}
    )
    other, _ = build_launch_command(
        "abc", config, _settings(tmp_path), rdzv_endpoint="node0:29400", join=True, base_env={}
    )
    for argv in (first, other):
        assert _flag(argv, "--nnodes") == "2"
        assert _flag(argv, "--rdzv-backend") == "c10d"
        assert _flag(argv, "--rdzv-endpoint") == "node0:29400"
        assert _flag(argv, "--rdzv-id") == "abc"
        assert "--standalone" not in argv
        assert "join_timeout=90" in _flag(argv, "--rdzv-conf")
    assert "is_host=true" in _flag(first, "--rdzv-conf")
    assert "is_host=false" in _flag(other, "--rdzv-conf")
    # Apart from who hosts the rendezvous, every node runs the same command.
    strip = [a for a in first if "is_host" not in a]
    assert strip == [a for a in other if "is_host" not in a]


def test_multi_node_without_an_endpoint_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="rdzv_endpoint"):
        build_launch_command("abc", Layout(nodes=2), _settings(tmp_path), base_env={})


def test_supervised_wraps_the_command_after_a_separator(tmp_path: Path) -> None:
    wrapped = supervised(
        ["torchrun", "x"], job_id="abc", settings=_settings(tmp_path), python="/py"
    )
    assert wrapped[:3] == ["/py", "-m", "flextrain.jobs.supervise"]
    assert wrapped[wrapped.index("--") + 1 :] == ["torchrun", "x"]
    assert _flag(wrapped, "--job-id") == "abc"


def test_is_distributed_counts_processes_times_nodes() -> None:
    assert not Layout().distributed
    assert not Layout(processes=1, nodes=1).distributed
    assert Layout(processes=2).distributed
    assert Layout(nodes=2).distributed


def test_the_layout_is_read_from_the_typed_config() -> None:
    base = {"model_id": "m", "dataset_id": "d", "training_type": TrainingType.FULL_TRAINING}
    assert Layout.of(BasicTrainingConfig(**base)) == Layout()
    given = AdvancedTrainingConfig(
        **base, num_processes=2, num_nodes=3, num_threads=4, distributed_timeout=90
    )
    assert Layout.of(given) == Layout(processes=2, nodes=3, threads=4, timeout_s=90)


# --- the allocator ---------------------------------------------------------------------


def test_tcmalloc_is_found_where_the_machine_has_it(tmp_path: Path) -> None:
    assert tcmalloc_path((str(tmp_path),)) is None
    (tmp_path / "libtcmalloc_minimal.so.4").write_bytes(b"")
    assert tcmalloc_path(("/nowhere", str(tmp_path))) == str(tmp_path / "libtcmalloc_minimal.so.4")


def test_the_allocator_is_preloaded_unless_the_user_chose_otherwise() -> None:
    lib = "/lib/libtcmalloc_minimal.so.4"
    env = preload_allocator({}, lib)
    assert env["LD_PRELOAD"] == lib
    assert int(env["TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD"]) >= 1 << 40  # no log flood
    assert preload_allocator({"LD_PRELOAD": "/x/libfoo.so"}, lib)["LD_PRELOAD"] == (
        f"{lib}:/x/libfoo.so"
    )
    # The user's own choice stands: the system allocator, or another one preloaded.
    assert "LD_PRELOAD" not in preload_allocator({MALLOC_VARIABLE: "system"}, lib)
    theirs = {"LD_PRELOAD": "/opt/libjemalloc.so.2"}
    assert preload_allocator(dict(theirs), lib) == theirs
    assert "LD_PRELOAD" not in preload_allocator({}, None)  # none on this machine


def test_workers_here_get_it_and_a_clusters_do_not(tmp_path: Path) -> None:
    """Machines of a cluster may not have the library this one has (srun and Ray start
    the worker there)."""
    lib = tcmalloc_path()
    _, env = build_launch_command("abc", Layout(), _settings(tmp_path), base_env={})
    assert env.get("LD_PRELOAD") == lib
    _, remote = cluster_command("abc", _settings(tmp_path))
    assert remote.get("LD_PRELOAD") == os.environ.get("LD_PRELOAD")
