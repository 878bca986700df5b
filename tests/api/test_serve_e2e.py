"""`flextrain serve` as a real process: a job trained over HTTP, the bind guard,
and the admin token printed on first start.

The console script is the entry point (`python -m flextrain.cli.main` imports the
commands but does not run them). Each server gets its own home and free port and
is always terminated, along with any worker it left running.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from flextrain.service import TrainingService
from flextrain.settings import Settings
from tests.api.conftest import stop_jobs
from tests.api.helpers import TINY_JOB, parse_sse

FLEXTRAIN = Path(sys.executable).with_name("flextrain")
TOKEN = re.compile(r"\bft_[A-Za-z0-9_-]{20,}")
KNOWN_TOKEN = "ft_end-to-end-admin-token-0123456789"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def serve_env(home: Path, models_cache: Path, admin_token: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEXTRAIN_")}
    env.update(
        FLEXTRAIN_HOME=str(home),
        FLEXTRAIN_MODELS_CACHE=str(models_cache),
        HF_HUB_OFFLINE="1",
        PYTHONUNBUFFERED="1",
        COLUMNS="400",  # rich must not wrap the token or the messages
    )
    if admin_token is not None:
        env["FLEXTRAIN_ADMIN_TOKEN"] = admin_token
    return env


@dataclass(frozen=True)
class Server:
    base: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _cancel_leftovers(home: Path, models_cache: Path) -> None:
    """Workers outlive the server that started them; stop any still running."""
    if not (home / "flextrain.db").exists():
        return
    stop_jobs(TrainingService(Settings(home=home, models_cache=models_cache)))


@contextmanager
def running_server(
    home: Path, models_cache: Path, log: Path, admin_token: str | None
) -> Iterator[Server]:
    assert FLEXTRAIN.is_file(), f"console script missing: {FLEXTRAIN}"
    port = free_port()
    argv = [str(FLEXTRAIN), "serve", "--port", str(port), "--log-level", "warning"]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv,
            env=serve_env(home, models_cache, admin_token),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Server(base=f"http://127.0.0.1:{port}", log=log)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"serve exited {proc.returncode}:\n{server.output()}"
            try:
                if httpx.get(f"{server.base}/api/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"serve never became healthy:\n{server.output()}"
            time.sleep(0.2)
        yield server
    finally:
        _stop(proc)
        _cancel_leftovers(home, models_cache)


def test_serve_trains_a_tiny_job_over_http(tmp_path: Path, models_cache: Path) -> None:
    home = tmp_path / "home"
    with running_server(home, models_cache, tmp_path / "serve.log", KNOWN_TOKEN) as server:
        auth = {"Authorization": f"Bearer {KNOWN_TOKEN}"}
        with httpx.Client(base_url=server.base, headers=auth, timeout=60) as http:
            assert http.get("/api/health").json()["auth"] is True
            assert http.get("/api/me").json() == {"name": "admin", "role": "admin"}

            created = http.post("/api/training/jobs/advanced", json=TINY_JOB)
            assert created.status_code == 201, created.text
            job_id = created.json()["job_id"]
            assert created.json()["owner"] == "admin"
            started = http.post(f"/api/training/jobs/{job_id}/start")
            assert started.status_code == 200, started.text

            url = f"/api/training/jobs/{job_id}/events"
            with http.stream("GET", url, timeout=httpx.Timeout(30, read=120)) as stream:
                assert stream.status_code == 200
                assert stream.headers["content-type"].startswith("text/event-stream")
                events = parse_sse(stream.iter_lines())
            final = http.get(f"/api/training/jobs/{job_id}").json()
        assert "Traceback" not in server.output()

    assert events[-1].event == "end"
    assert events[-1].data == {**events[-1].data, "job_id": job_id, "status": "completed"}
    progress = [e.data for e in events if e.event == "progress"]
    assert len(progress) >= 2  # followed live, not only read back at the end
    assert progress[0]["status"] in ("preparing", "training")
    assert progress[-1]["status"] == "completed"
    losses = [e.data["loss"] for e in events if e.event == "metric" and "loss" in e.data]
    assert len(losses) >= 3
    assert losses[-1] < losses[0]

    assert final["status"] == "completed"
    model = Path(final["model_path"])
    assert model.is_relative_to(home / "jobs" / job_id)
    assert (model / "config.json").is_file()
    assert (model / "model.safetensors").is_file()


def test_serve_refuses_no_auth_beyond_loopback(tmp_path: Path, models_cache: Path) -> None:
    argv = [str(FLEXTRAIN), "serve", "--host", "0.0.0.0", "--no-auth", "--port", str(free_port())]
    result = subprocess.run(
        argv,
        env=serve_env(tmp_path / "home", models_cache, None),
        capture_output=True,
        text=True,
        timeout=60,
    )
    said = " ".join(result.stderr.split())
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Refusing to listen on 0.0.0.0 with authentication off" in said
    assert "anyone who can reach it could start jobs" in said
    assert "drop --no-auth and use tokens" in said
    assert "flextrain API" not in result.stdout


def test_first_start_writes_the_admin_token_to_an_owner_only_file(
    tmp_path: Path, models_cache: Path
) -> None:
    home = tmp_path / "home"
    with running_server(home, models_cache, tmp_path / "first.log", None) as first:
        output = first.output()
        # Its output is a log file, not a terminal: the token never lands in it.
        assert TOKEN.findall(output) == [], output
        token_file = home / "admin-token"
        assert f"Its token is in {token_file} (readable by you only)" in " ".join(output.split())
        assert token_file.stat().st_mode & 0o777 == 0o600
        tokens = [token_file.read_text().strip()]
        assert TOKEN.fullmatch(tokens[0]), tokens
        me = httpx.get(f"{first.base}/api/me", headers={"Authorization": f"Bearer {tokens[0]}"})
        assert me.status_code == 200, me.text
        assert me.json() == {"name": "admin", "role": "admin"}

    with running_server(home, models_cache, tmp_path / "second.log", None) as second:
        output = second.output()
        assert TOKEN.findall(output) == [], output
        assert "Created the admin user" not in output
        me = httpx.get(f"{second.base}/api/me", headers={"Authorization": f"Bearer {tokens[0]}"})
        assert me.json() == {"name": "admin", "role": "admin"}
