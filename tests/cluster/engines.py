"""Throwaway real clusters for the cluster tests: a one-node Slurm (munged, slurmctld,
slurmd from Debian's packages, all under a temp folder) and a local Ray head.

Nothing here imitates an engine: the daemons are the real ones, configured for one
machine (proctrack/linuxproc and task/none need no cgroup or systemd), and stopped
when the test session ends.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

SLURM_DAEMONS = ("munged", "slurmctld", "slurmd")


def missing_slurm() -> str | None:
    """Why a Slurm cluster cannot be started here (None: it can)."""
    for program in (*SLURM_DAEMONS, "sbatch", "squeue", "scancel", "sinfo"):
        if shutil.which(program) is None and not Path("/usr/sbin", program).exists():
            return f"{program} is not installed (make test-cluster installs it)"
    if os.geteuid() != 0:
        return "the Slurm test cluster runs its daemons as root"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _daemon(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


@dataclass
class SlurmCluster:
    """Two nodes on this one machine (two slurmd, `-N node1` and `-N node2`, each
    declaring the machine's CPUs; Debian's slurmd is built with multiple-slurmd), two
    partitions ("debug", the default, and "tiny") holding both, under `root`; `env` is
    what Slurm's clients need (SLURM_CONF)."""

    root: Path
    nodes: tuple[str, ...] = ("node1", "node2")
    ctld_port: int = 0

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def start(self) -> SlurmCluster:
        self.root.mkdir(parents=True, exist_ok=True)
        munge = self.root / "munge"
        for sub in (munge, self.root / "state", self.root / "spool"):
            sub.mkdir(mode=0o700, exist_ok=True)
        key = munge / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        subprocess.run(
            [
                _daemon("munged"),
                "--force",
                f"--socket={munge / 'munge.socket'}",
                f"--key-file={key}",
                f"--pid-file={munge / 'munged.pid'}",
                f"--log-file={munge / 'munged.log'}",
                f"--seed-file={munge / 'seed'}",
            ],
            check=True,
        )
        host = socket.gethostname()
        self.ctld_port = _free_port()
        cpus = os.cpu_count() or 1
        memory_mb = int(psutil.virtual_memory().total / 2**20 * 0.4)
        node_lines = [
            f"NodeName={name} NodeHostname={host} NodeAddr=127.0.0.1 Port={_free_port()} "
            f"CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN"
            for name in self.nodes
        ]
        r = self.root
        self.conf.write_text(
            "\n".join(
                [
                    "ClusterName=flextrain-test",
                    f"SlurmctldHost={host}(127.0.0.1)",
                    "SlurmUser=root",
                    "SlurmdUser=root",
                    f"SlurmctldPort={self.ctld_port}",
                    "AuthType=auth/munge",
                    "CredType=cred/munge",
                    f"AuthInfo=socket={munge / 'munge.socket'}",
                    f"StateSaveLocation={r / 'state'}",
                    f"SlurmdSpoolDir={r / 'spool'}-%n",
                    f"SlurmctldPidFile={r / 'slurmctld.pid'}",
                    f"SlurmdPidFile={r / 'slurmd'}-%n.pid",
                    f"SlurmctldLogFile={r / 'slurmctld.log'}",
                    f"SlurmdLogFile={r / 'slurmd'}-%n.log",
                    "ProctrackType=proctrack/linuxproc",
                    "TaskPlugin=task/none",
                    "SelectType=select/cons_tres",
                    "SelectTypeParameters=CR_CPU",
                    "SchedulerType=sched/backfill",
                    "ReturnToService=2",
                    "MpiDefault=none",
                    "JobAcctGatherType=jobacct_gather/none",
                    "AccountingStorageType=accounting_storage/none",
                    "KillWait=30",
                    "MinJobAge=600",
                    "SlurmctldTimeout=30",
                    "SlurmdTimeout=30",
                    *node_lines,
                    "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
                    "PartitionName=tiny Nodes=ALL MaxTime=INFINITE State=UP",
                ]
            )
            + "\n"
        )
        env = self.env
        subprocess.run([_daemon("slurmctld"), "-c", "-f", str(self.conf)], check=True, env=env)
        for name in self.nodes:
            subprocess.run(
                [_daemon("slurmd"), "-N", name, "-f", str(self.conf)], check=True, env=env
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            out = subprocess.run(
                ["sinfo", "-h", "-N", "-p", "debug", "-o", "%t"],
                capture_output=True,
                text=True,
                env=env,
            ).stdout.split()
            if len(out) == len(self.nodes) and all(s in ("idle", "mix", "alloc") for s in out):
                return self
            time.sleep(0.5)
        raise RuntimeError(f"the Slurm test node did not come up: {self.logs()}")

    def logs(self) -> str:
        parts = []
        for name in ("slurmctld.log", *(f"slurmd-{n}.log" for n in self.nodes)):
            path = self.root / name
            if path.exists():
                parts.append(f"--- {name}\n" + "\n".join(path.read_text().splitlines()[-20:]))
        return "\n".join(parts)

    def stop(self) -> None:
        subprocess.run(["scancel", "--full", "-u", "root"], env=self.env, capture_output=True)
        # Let slurmctld deliver the cancels before it goes; each job's slurmstepd
        # outlives slurmd, so what is left of ours is killed by name.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (self._queue() or self._job_steps()):
            time.sleep(0.5)
        for proc in self._job_steps():
            with contextlib.suppress(psutil.Error):
                proc.kill()
        pid_files = [*(f"slurmd-{n}.pid" for n in self.nodes), "slurmctld.pid", "munge/munged.pid"]
        for pid_file in pid_files:
            path = self.root / pid_file
            if not path.exists():
                continue
            try:
                daemon = psutil.Process(int(path.read_text().strip()))
                daemon.send_signal(signal.SIGTERM)
                daemon.wait(10)
            except psutil.TimeoutExpired:
                with contextlib.suppress(psutil.Error):
                    daemon.kill()
            except (ValueError, OSError, psutil.Error):
                pass

    def _queue(self) -> str:
        return subprocess.run(
            ["squeue", "-h", "-o", "%i"], env=self.env, capture_output=True, text=True
        ).stdout.strip()

    def _job_steps(self) -> list[psutil.Process]:
        """This cluster's slurmstepd processes: their sockets are in our spool folders."""
        found = []
        for proc in psutil.process_iter(["name"]):
            if proc.info["name"] != "slurmstepd":
                continue
            with contextlib.suppress(psutil.Error):
                sockets = [str(c.laddr) for c in proc.net_connections(kind="unix")]
                if any(path.startswith(str(self.root)) for path in sockets):
                    found.append(proc)
        return found


@dataclass
class RayHead:
    """A local Ray head (`ray start --head`) under `root`; `address` is its Jobs API."""

    root: Path
    ray: str
    address: str = ""

    def start(self) -> RayHead:
        port = _free_port()
        dashboard = _free_port()
        subprocess.run(
            [
                self.ray,
                "start",
                "--head",
                "--num-cpus=2",
                f"--port={port}",
                f"--temp-dir={self.root}",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={dashboard}",
                "--include-dashboard=true",
                "--disable-usage-stats",
            ],
            check=True,
            capture_output=True,
        )
        self.address = f"http://127.0.0.1:{dashboard}"
        return self

    def stop(self) -> None:
        subprocess.run([self.ray, "stop", "--force"], capture_output=True)
