"""From a job the scheduler chose to a worker running it: the run spec, the command,
and the hand-over to the executor.

The run spec (`job.json`, `jobs.spec.RunSpec`) is the one typed description of what
the worker does, written here and read by the worker; the command comes from the
pure `jobs.launch.build_launch_command`; where it runs is the executor's business.
"""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from pathlib import Path

from flextrain.config.enums import TrainingStatus
from flextrain.config.schemas import ExpertTrainingConfig, explicit_fields
from flextrain.config.validation import ConfigValidationError
from flextrain.data.registry import DatasetInfo
from flextrain.estimate.plan import Planner
from flextrain.hardware.cpus import training_cpus
from flextrain.jobs.environment import TrainingEnvironmentManager
from flextrain.jobs.errors import JobStateError
from flextrain.jobs.executor import Executor, Submission, cluster_node
from flextrain.jobs.launch import build_launch_command, cluster_command, supervised
from flextrain.jobs.resources import Allocation
from flextrain.jobs.spec import DataSpec, RunSpec
from flextrain.jobs.store import JobStore, TrainingJob, pin_dataset
from flextrain.models.tasks import choose_objective, choose_precision
from flextrain.settings import Settings


class Launcher:
    """Builds a job's run spec and command and submits it to the executor."""

    def __init__(
        self,
        settings: Settings,
        store: JobStore,
        environments: TrainingEnvironmentManager,
        planner: Planner,
        executor: Executor,
    ) -> None:
        self.settings = settings
        self.store = store
        self.environments = environments
        self.planner = planner
        self.executor = executor

    def build_spec(
        self, job: TrainingJob, allocation: Allocation | None = None, *, record: bool = True
    ) -> RunSpec:
        """The run spec of `job` on this machine (with `allocation`: the GPUs it may see
        and its threads): validated again, batch_size 'auto' resolved (an event says to
        what, when `record`), every path of the job's folder filled in."""
        config = pin_dataset(ExpertTrainingConfig.from_basic(job.typed_config()), job)
        hw = cluster_node(self.executor, job) or self.planner.hardware()
        if allocation is not None:
            hw = hw.restricted_to(allocation.gpus)
        config, auto_batch = self.planner.resolve_auto_batch(config, hw)
        if auto_batch and record:
            self.store.add_event(
                job.job_id,
                "auto_batch",
                auto_batch,
                data={
                    "batch_size": config.batch_size,
                    "gradient_accumulation_steps": config.gradient_accumulation_steps,
                },
            )
        issues, model, data = self.planner.validate(config, hardware=hw)
        if any(i.severity == "error" for i in issues):
            raise ConfigValidationError(issues)
        env = self.environments.layout(job.job_id, config.output_dir)
        eval_data: DatasetInfo | None = (
            self.planner.datasets.get(config.eval_file) if config.eval_file else None
        )
        return RunSpec(
            job_id=job.job_id,
            config=config,
            model_path=str(self.planner.models.resolve(config.model_id).path),
            objective=choose_objective(config.training_type, model, data),
            precision=choose_precision(config, hw),
            lora_target_modules=config.lora_target_modules,
            data=DataSpec.from_info(data),
            output_dir=str(env.output_dir),
            checkpoint_dir=str(env.checkpoint_dir),
            model_dir=str(env.model_dir),
            temp_dir=str(env.temp_dir),
            num_threads=config.num_threads
            or (allocation.threads if allocation and allocation.threads else None)
            or max(1, hw.cpu_cores // config.num_processes),
            eval_data=DataSpec.from_info(eval_data) if eval_data else None,
            cache_dir=str(self.settings.home / "cache" / "tokenized"),
            allow_pickle_weights=self.settings.allow_pickle_weights,
            # This machine's CPU numbers mean nothing on a cluster's node.
            cpu_affinity=None
            if self.executor.places_jobs
            else training_cpus(self.settings.reserved_cpus),
            config_fields=explicit_fields(config),
        )

    def launch(
        self, job: TrainingJob, resume_from: Path | None, allocation: Allocation | None = None
    ) -> None:
        """Write the run spec and start the job's worker (or torchrun) with `allocation`.

        A spec that cannot be built (the data or model is gone, the config no longer
        fits) fails the job with the reason and is raised to the scheduler.
        """
        job_id = job.job_id
        allocation = allocation or Allocation()
        try:
            spec = self.build_spec(job, allocation)
        except Exception as exc:
            self.store.update(
                job_id,
                status=TrainingStatus.FAILED,
                error_message=str(exc),
                completed_at=datetime.now(UTC),
            )
            raise
        if resume_from is not None:
            spec = spec.model_copy(update={"resume_from_checkpoint": str(resume_from)})
        env = self.environments.layout(job_id, spec.config.output_dir)
        spec.write(env.root)
        layout = job.layout
        if self.executor.places_jobs:
            self._hand_over(
                job,
                argv_env=cluster_command(job_id, self.settings),
                job_dir=env.root,
                log_file=env.log_file,
            )
            return
        endpoint = None
        if layout.nodes > 1:
            endpoint = spec.config.rdzv_endpoint or f"{socket.getfqdn()}:{free_port()}"
        argv, proc_env = build_launch_command(
            job_id, layout, self.settings, allocation, rdzv_endpoint=endpoint
        )
        if layout.distributed:
            processes, nodes = layout.processes, layout.nodes
            join = f" flextrain worker join --job {job_id} --rdzv-endpoint {endpoint}"
            self.store.add_event(
                job_id,
                "launched",
                f"torchrun: {processes} process(es) per node x {nodes} node(s), "
                f"{spec.config.distributed_strategy or 'ddp'}"
                + (f"; other nodes join with:{join}" if endpoint else ""),
                data={"argv": argv, "rdzv_endpoint": endpoint, "allocation": allocation.as_dict()},
            )
            argv = supervised(argv, job_id=job_id, settings=self.settings)
        # Status first: once the worker runs, it alone moves the status forward.
        self.store.update(
            job_id,
            status=TrainingStatus.PREPARING,
            started_at=job.started_at or datetime.now(UTC),
            worker_host=socket.gethostname(),
            heartbeat_at=datetime.now(UTC),
        )
        submitted = self.executor.submit(
            Submission(
                job_id=job_id,
                argv=argv,
                env=proc_env,
                job_dir=env.root,
                log_file=env.log_file,
                distributed=layout.distributed,
                gpus=allocation.gpus,
            )
        )
        self.store.update(
            job_id,
            pid=submitted.pid,
            pid_started_at=submitted.pid_started_at,
            worker_host=submitted.host,
        )

    def _hand_over(
        self,
        job: TrainingJob,
        argv_env: tuple[list[str], dict[str, str]],
        job_dir: Path,
        log_file: Path,
    ) -> None:
        """Give the job to a cluster executor, which queues, places and starts it (its
        own launcher: srun and torchrun, or Ray); the job waits QUEUED with the cluster's
        id and reason until its worker starts there."""
        argv, env = argv_env
        submitted = self.executor.submit(
            Submission(
                job_id=job.job_id,
                argv=argv,
                env=env,
                job_dir=job_dir,
                log_file=log_file,
                distributed=job.layout.distributed,
            )
        )
        cluster_id = submitted.cluster_job_id or ""
        self.store.update(
            job.job_id,
            executor=self.executor.name,
            cluster_job_id=cluster_id,
            started_at=job.started_at or datetime.now(UTC),
        )
        reason = f"{self.executor.name} job {cluster_id} submitted; waiting for the cluster"
        self.store.transition(
            job.job_id,
            [TrainingStatus.VALIDATING],
            status=TrainingStatus.QUEUED,
            wait_reason=reason,
        )
        self.store.add_event(
            job.job_id,
            "submitted",
            f"Handed to {self.executor.name} as job {cluster_id}.",
            data={"executor": self.executor.name, "cluster_job_id": cluster_id, "argv": argv},
        )

    def join_command(
        self, job: TrainingJob, rdzv_endpoint: str | None = None
    ) -> tuple[list[str], dict[str, str]]:
        """The torchrun command that makes this machine one more node of a multi-node job.

        The endpoint is the one the job was launched with (its `launched` event), unless
        given. The node needs the same database and the job's folder (a shared
        FLEXTRAIN_HOME) and runs the same worker; torchrun assigns its ranks.
        """
        job_id = job.job_id
        layout = job.layout
        processes, nodes = layout.processes, layout.nodes
        if nodes < 2:
            raise JobStateError(
                f"Job {job_id} runs on one machine (num_nodes {nodes}); there is nothing to "
                "join. Fix: create the job with num_nodes 2 or more."
            )
        if job.is_finished:
            raise JobStateError(f"Job {job_id} is already {job.status.value}.")
        endpoint = rdzv_endpoint or job.settings.rdzv_endpoint
        for event in reversed(self.store.events(job_id)):
            if endpoint:
                break
            if event.kind == "launched":
                endpoint = (event.data or {}).get("rdzv_endpoint")
        if not endpoint:
            raise JobStateError(
                f"Job {job_id} has not been launched yet, so its rendezvous endpoint is not "
                "known. Fix: start it first (`flextrain jobs show` then lists the endpoint), "
                "or pass --rdzv-endpoint HOST:PORT."
            )
        cores = self.planner.hardware().cpu_cores
        threads = layout.threads or max(1, cores // processes)
        return build_launch_command(
            job_id,
            layout,
            self.settings,
            Allocation(threads=threads),
            rdzv_endpoint=endpoint,
            join=True,
        )


def free_port() -> int:
    """A TCP port free on this machine now, for a multi-node job's rendezvous."""
    with socket.socket() as sock:
        sock.bind(("", 0))
        return int(sock.getsockname()[1])
