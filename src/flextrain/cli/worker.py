"""`flextrain worker join`: make this machine one more node of a multi-node job."""

from __future__ import annotations

import shlex
import signal
import subprocess
from types import FrameType
from typing import Annotated

import typer

from flextrain.cli.common import console, err_console, get_service, guard

worker_app = typer.Typer(help="Run part of a multi-node job on this machine.", no_args_is_help=True)


@worker_app.command("join")
def join(
    job: Annotated[str, typer.Option("--job", help="The multi-node job to join.")],
    rdzv_endpoint: Annotated[
        str | None,
        typer.Option(help="HOST:PORT where the nodes meet (default: the job's, from its launch)."),
    ] = None,
    print_only: Annotated[
        bool, typer.Option("--print", help="Print the torchrun command instead of running it.")
    ] = False,
) -> None:
    """Run this node's processes of JOB through torchrun, in the foreground.

    The machine needs the job's database (FLEXTRAIN_DATABASE_URL) and folder (a shared
    FLEXTRAIN_HOME), the model and the data at the same paths. Ctrl-C stops this node's
    processes, which fails the job on every node.
    """
    service = get_service()

    def command() -> tuple[list[str], dict[str, str]]:
        return service.join_command(job, rdzv_endpoint)

    argv, env = guard(command)
    if print_only:
        threads = env.get("OMP_NUM_THREADS")
        prefix = f"OMP_NUM_THREADS={threads} " if threads else ""
        console.print(prefix + shlex.join(argv), markup=False, highlight=False, soft_wrap=True)
        return
    console.print(f"Joining job {job}: {shlex.join(argv[2:6])} ...", markup=False)
    child = subprocess.Popen(argv, env=env)

    def forward(signum: int, frame: FrameType | None) -> None:
        child.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    code = child.wait()
    if code != 0:
        err_console.print(
            f"This node's processes ended with code {code}; `flextrain jobs show {job}` has "
            "the job's status and error.",
            style="red",
            markup=False,
        )
        raise typer.Exit(1)
    console.print(f"This node's part of job {job} is done.", markup=False)
