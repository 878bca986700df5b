"""`flextrain serve`: the REST API and web page on uvicorn, and the home's scheduler loop.

The command belongs to the API (it builds the app); `flextrain.main` adds it to the
CLI's commands, so that neither front end imports the other.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console()
err_console = Console(stderr=True)


def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    no_auth: Annotated[
        bool,
        typer.Option("--no-auth", help="Act as a local admin without tokens (loopback only)."),
    ] = False,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
    auto_resume: Annotated[
        bool | None,
        typer.Option(
            "--auto-resume/--no-auto-resume",
            help="Resume interrupted jobs now (default: FLEXTRAIN_AUTO_RESUME).",
        ),
    ] = None,
) -> None:
    """Serve the REST API under /api and the web page at /, and start queued jobs as the
    machine frees up (the home's one scheduler loop; if another already runs, this
    server stands by and takes over when it stops)."""
    import uvicorn

    from flextrain.accounts.users import UserError
    from flextrain.api.app import check_bind, create_app
    from flextrain.hardware.cpus import server_cpus
    from flextrain.service import TrainingService

    auth = not no_auth
    try:
        check_bind(host, auth)
    except ValueError as exc:
        err_console.print(str(exc), style="red", markup=False, highlight=False)
        raise typer.Exit(2) from None
    service = TrainingService()
    if auth:
        given = service.settings.admin_token
        try:
            token = service.users.ensure_admin(given.get_secret_value() if given else None)
        except UserError as exc:
            err_console.print(str(exc), style="red", markup=False, highlight=False)
            raise typer.Exit(2) from None
        if token:
            _hand_over_admin_token(token, service.settings.home)
    # Workers do not survive a restart: say which jobs were cut off, resume them if asked.
    resume = service.settings.auto_resume if auto_resume is None else auto_resume
    recovered = service.recover_jobs(auto_resume=resume)
    for job_id in recovered["interrupted"]:
        action = "resumed" if job_id in recovered["resumed"] else "resume with POST .../resume"
        console.print(f"Job {job_id} was interrupted; {action}.", highlight=False)
    cpus = server_cpus(service.settings.reserved_cpus)
    if cpus and hasattr(os, "sched_setaffinity"):
        # Before any thread starts (they inherit it); the workers move to the other cores.
        try:
            os.sched_setaffinity(0, cpus)
            console.print(f"Server on CPU {', '.join(map(str, cpus))} (reserved_cpus).")
        except OSError as exc:
            console.print(f"reserved_cpus: the server could not pin itself ({exc}).")
    loop = service.scheduler_loop()
    if loop.acquire():
        console.print("Scheduler: running in this server.")
    else:
        console.print(
            "Scheduler: another one runs for this home; this server takes over if it stops.",
            highlight=False,
        )
    loop.start()
    console.print(f"flextrain API and web page on http://{host}:{port}/", highlight=False)
    hosts = served_host_names(host)
    names = sorted({*hosts, *service.settings.allowed_hosts})
    console.print(
        f"Answers to the host names {', '.join(names)} and loopback (FLEXTRAIN_ALLOWED_HOSTS "
        "adds more).",
        highlight=False,
    )
    try:
        uvicorn.run(
            create_app(service=service, auth=auth, hosts=hosts),
            host=host,
            port=port,
            log_level=log_level,
        )
    finally:
        loop.stop()


WILDCARD_ADDRESSES = ("0.0.0.0", "::", "")


def served_host_names(host: str) -> list[str]:
    """The Host names a server listening on `host` answers to (besides loopback): that
    address, or for a wildcard address this machine's names and interface addresses."""
    if host not in WILDCARD_ADDRESSES:
        return [host]
    import socket

    import psutil

    names = {socket.gethostname(), socket.getfqdn()}
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family in (socket.AF_INET, socket.AF_INET6):
                names.add(address.address.partition("%")[0])
    return sorted(n for n in names if n)


def _hand_over_admin_token(token: str, home: Path) -> None:
    """The first admin's token, shown once: into a file only its owner can read, and on
    the terminal only when there is one (a server under nohup or systemd would keep it
    in its log for anyone who can read that)."""
    path = home / "admin-token"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(token + "\n")
    os.chmod(path, 0o600)  # an older file keeps its mode through O_CREAT
    console.print(f"Created the admin user. Its token is in {path} (readable by you only).")
    if sys.stdout.isatty():
        console.print(f"  {token}", markup=False, highlight=False)
    console.print(
        "Keep it elsewhere and delete the file; create more users with "
        "`flextrain users create NAME`.",
        highlight=False,
    )
