"""The web page in headless Chromium against a real `flextrain serve` subprocess.

Chromium is Debian's (/usr/bin/chromium, installed by `make test`), driven by
Python Playwright through `executable_path`; nothing is downloaded. Without
Chromium the tests skip, except on CI (CI=true), where a missing browser fails.

Every page is loaded under the server's Content-Security-Policy (set here as well,
so the page is held to it whatever the server sends) and a test fails on any
violation. Each page and state is saved as a PNG, named by page, under
test-artifacts/screenshots/ at the repository root, for review.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import (
    ConsoleMessage,
    FilePayload,
    Page,
    Route,
    expect,
    sync_playwright,
)

from flextrain.config.enums import TrainingStatus, TrainingType
from flextrain.config.schemas import AdvancedTrainingConfig
from flextrain.jobs.checkpoints import list_checkpoints
from flextrain.service import TrainingService
from flextrain.settings import Settings
from tests.jobs.queue_helpers import occupy, quick_config

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ADMIN_TOKEN = "browser-test-admin-token-5f2c"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
# What the server sends with the page (api/guard.py): no inline script or style.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; "
    "object-src 'none'"
)
FINISHED = ("completed", "failed", "cancelled", "interrupted")
SERVER_START_SECONDS = 60
# A tiny job: ~70 optimizer steps of a 0.14M-parameter model, seconds on a CPU,
# longer when the machine is busy.
JOB_SECONDS = 240
# The run interrupted in the resume test: long enough that it cannot finish between
# its step 5 (checkpoint 4 saved) and the SIGKILL, about a second on a CPU.
RESUMED_STEPS = 60


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _call(base: str, path: str, method: str = "GET") -> Any:
    request = urllib.request.Request(
        base + path, method=method, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture(scope="session")
def chromium() -> Path:
    if CHROMIUM.exists():
        return CHROMIUM
    reason = f"{CHROMIUM} is missing: `make test` installs Debian's chromium (apt-get)."
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the browser tests: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def web_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """FLEXTRAIN_HOME of the server (its SQLite database too)."""
    return tmp_path_factory.mktemp("web-home")


@pytest.fixture(scope="module")
def server(chromium: Path, web_home: Path, models_cache: Path) -> Iterator[str]:
    """`flextrain serve` with authentication on, in its own home; its base URL."""
    home = web_home
    port = _free_port()
    env = {
        **os.environ,
        "FLEXTRAIN_HOME": str(home),
        "FLEXTRAIN_MODELS_CACHE": str(models_cache),
        "FLEXTRAIN_ADMIN_TOKEN": ADMIN_TOKEN,
        "HF_HUB_OFFLINE": "1",
    }
    env.pop("FLEXTRAIN_DATABASE_URL", None)
    command = [str(Path(sys.executable).with_name("flextrain")), "serve"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    log_path = home / "server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_SECONDS
        while True:
            if proc.poll() is not None:
                pytest.fail(f"flextrain serve exited ({proc.returncode}):\n{log_path.read_text()}")
            try:
                with urllib.request.urlopen(base + "/api/health", timeout=2) as response:
                    if json.loads(response.read())["auth"] is True:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"flextrain serve did not answer in time:\n{log_path.read_text()}")
            time.sleep(0.25)
        yield base
    finally:
        _stop(proc, base)


def _stop(proc: subprocess.Popen[bytes], base: str) -> None:
    """Cancel unfinished jobs (workers run in their own session), then stop the server."""
    if proc.poll() is None:
        try:
            for job in _call(base, "/api/training/jobs?limit=500"):
                if job["status"] not in FINISHED:
                    _call(base, f"/api/training/jobs/{job['job_id']}/cancel", method="POST")
        except (urllib.error.URLError, OSError):
            pass
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        if proc.poll() is not None:
            break
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="session")
def shots() -> Path:
    """Where each test saves its screenshots (one PNG per page or state)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


def _with_policy(route: Route) -> None:
    """The page itself, with the Content-Security-Policy header the server sends."""
    response = route.fetch()
    headers = {**response.headers, "content-security-policy": CONTENT_SECURITY_POLICY}
    route.fulfill(response=response, headers=headers)


@pytest.fixture
def page(chromium: Path, tmp_path: Path) -> Iterator[Page]:
    """A page in a fresh headless Chromium profile, held to the Content-Security-Policy:
    any violation (an inline script, handler or style) fails the test."""
    violations: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            violations.append(message.text)

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=str(chromium),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )
        try:
            context.set_default_timeout(30_000)
            context.route(lambda url: urlsplit(url).path == "/", _with_policy)
            page = context.pages[0] if context.pages else context.new_page()
            page.on("console", on_console)
            yield page
            assert not violations, f"Content-Security-Policy violations: {violations}"
        finally:
            context.close()


def _sign_in(page: Page, base: str, token: str) -> None:
    page.goto(base + "/")
    expect(page.get_by_test_id("login-form")).to_be_visible()
    page.get_by_test_id("login-token").fill(token)
    page.get_by_test_id("login-submit").click()


def test_wrong_token_shows_the_login_error(page: Page, server: str, shots: Path) -> None:
    _sign_in(page, server, "not-the-token")
    error = page.get_by_test_id("login-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("not valid")
    expect(page.get_by_test_id("user-name")).to_be_hidden()
    assert page.evaluate("localStorage.getItem('flextrain.token')") is None
    page.screenshot(path=str(shots / "login-error.png"))


def test_train_a_tiny_job_from_the_page(page: Page, server: str, shots: Path) -> None:
    _sign_in(page, server, ADMIN_TOKEN)
    expect(page.get_by_test_id("user-name")).to_have_text("admin")
    expect(page.get_by_test_id("user-role")).to_have_text("admin")
    expect(page.get_by_test_id("hardware-panel")).to_be_visible()
    expect(page.get_by_test_id("hw-cpu")).to_contain_text(str(len(os.sched_getaffinity(0))))

    page.get_by_test_id("nav-new").click()
    # Advanced mode offers every knob of AdvancedTrainingConfig.
    page.locator("label:has(#mode-advanced)").click()
    for name in AdvancedTrainingConfig.model_fields:
        expect(page.locator(f"#f-{name}")).to_be_visible()
    page.screenshot(path=str(shots / "new-job-advanced.png"), full_page=True)
    page.locator("label:has(#mode-basic)").click()
    expect(page.locator("#f-lora_r")).to_have_count(0)

    page.locator("#f-model_id").fill("flextrain/tiny-llama")
    page.locator("#f-dataset_id").fill("demo/text")
    page.locator("#f-training_type").select_option("continued_pretraining")
    page.locator("#f-num_epochs").fill("1")
    page.locator("#f-max_length").fill("32")
    page.locator("#f-batch_size").fill("16")

    # An API error is shown by its field and named in the summary.
    page.locator("#f-learning_rate").fill("-1")
    page.get_by_test_id("submit-button").click()
    # The first call builds the built-in model in the fresh cache: allow it time.
    expect(page.get_by_test_id("err-learning_rate")).to_contain_text("outside", timeout=90_000)
    expect(page.get_by_test_id("form-errors")).to_contain_text("learning_rate")
    page.locator("#f-learning_rate").fill("")

    page.get_by_test_id("check-button").click()
    verdict = page.get_by_test_id("check-verdict")
    expect(verdict).to_have_attribute("data-compatible", "true", timeout=90_000)
    expect(page.get_by_test_id("check-memory")).to_contain_text("Peak")
    expect(page.get_by_test_id("check-time")).to_be_visible()
    # The tiny Llama is mostly attention: grouping saves more than its 15% bar here.
    expect(page.get_by_test_id("check-batching")).to_contain_text("Batching: grouped")
    page.screenshot(path=str(shots / "new-job-checked.png"), full_page=True)

    page.get_by_test_id("submit-button").click()
    page.wait_for_url("**/#/jobs/*")
    started = time.monotonic()
    page.wait_for_function(
        "states => states.includes(document.getElementById('job-status').dataset.status)",
        arg=list(FINISHED),
        timeout=JOB_SECONDS * 1000,
    )
    status = page.get_by_test_id("job-status").get_attribute("data-status")
    assert status == "completed", (
        f"job ended {status}: {page.get_by_test_id('job-error').inner_text()}\n"
        + page.get_by_test_id("job-logs").inner_text()
    )
    print(f"job finished {time.monotonic() - started:.1f} s after submit")

    model_path = page.get_by_test_id("job-model-path")
    expect(model_path).to_be_visible()
    assert Path(model_path.inner_text()).is_dir()
    expect(page.get_by_test_id("job-stream-state")).to_contain_text("finished")

    loss = page.get_by_test_id("chart-loss")
    # Functions, not expressions: the page's policy refuses the eval an expression needs.
    page.wait_for_function("() => Number(document.getElementById('chart-loss').dataset.points) > 1")
    drawn = page.evaluate(
        """() => {
            const c = document.getElementById('chart-loss');
            const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let inked = 0;
            for (let i = 3; i < data.length; i += 4) if (data[i] > 0) inked++;
            return inked;
        }"""
    )
    assert drawn > 1000, f"the loss chart looks blank ({drawn} inked pixels)"
    assert int(loss.get_attribute("data-points") or 0) > 1
    assert int(page.get_by_test_id("chart-lr").get_attribute("data-points") or 0) > 1
    assert int(page.get_by_test_id("chart-eval-loss").get_attribute("data-points") or 0) >= 1
    # The health checks' gradient-norm statistics get their own chart.
    expect(page.get_by_test_id("chart-grad-norm")).to_be_visible()
    assert int(page.get_by_test_id("chart-grad-norm").get_attribute("data-points") or 0) > 1
    expect(page.get_by_test_id("job-logs")).to_contain_text("completed")
    # A completed job shows how long it ran and nothing left to run.
    expect(page.get_by_test_id("job-elapsed")).to_have_text(re.compile(r"^\d+ (s|min)"))
    expect(page.get_by_test_id("job-remaining")).to_have_text("none")
    page.screenshot(path=str(shots / "job-completed.png"), full_page=True)

    # The jobs table lists the finished job.
    page.get_by_test_id("nav-jobs").click()
    row = page.get_by_test_id("job-row").first
    expect(row.get_by_test_id("job-row-status")).to_have_text("completed")
    page.screenshot(path=str(shots / "jobs.png"), full_page=True)


def test_a_dpo_job_from_the_page_plots_its_reward_margin(
    page: Page, server: str, shots: Path
) -> None:
    _sign_in(page, server, ADMIN_TOKEN)
    page.get_by_test_id("nav-new").click()
    page.locator("label:has(#mode-advanced)").click()
    page.locator("#f-model_id").fill("flextrain/tiny-llama")
    page.locator("#f-dataset_id").fill("demo/preferences")
    page.locator("#f-training_type").select_option("dpo")
    expect(page.locator("#f-training_type option[value=dpo]")).to_have_text(
        "DPO (preference pairs)"
    )
    page.locator("#f-num_epochs").fill("1")
    page.locator("#f-max_length").fill("48")
    page.locator("#f-batch_size").fill("16")
    page.locator("#f-learning_rate").fill("0.005")
    page.locator("#f-max_steps").fill("8")
    page.locator("#f-logging_steps").fill("2")
    # Options as JSON; a bad value comes back on the field.
    page.locator("#f-preference").fill('{"beta": -1}')
    page.get_by_test_id("submit-button").click()
    expect(page.get_by_test_id("form-errors")).to_contain_text("preference.beta", timeout=90_000)
    page.locator("#f-preference").fill('{"beta": 0.2, "loss_type": "ipo"}')
    page.get_by_test_id("submit-button").click()
    page.wait_for_url("**/#/jobs/*")
    page.wait_for_function(
        "states => states.includes(document.getElementById('job-status').dataset.status)",
        arg=list(FINISHED),
        timeout=JOB_SECONDS * 1000,
    )
    status = page.get_by_test_id("job-status").get_attribute("data-status")
    assert status == "completed", page.get_by_test_id("job-logs").inner_text()
    expect(page.get_by_test_id("fact-type")).to_have_text("DPO (preference pairs)")
    expect(page.get_by_test_id("fact-preference-accuracy")).to_contain_text("→")
    page.wait_for_function(
        "() => Number(document.getElementById('chart-reward').dataset.points) > 1"
    )
    expect(page.locator("#chart-reward-caption")).to_have_text("Reward margin (chosen − rejected)")
    expect(page.get_by_test_id("job-config")).to_contain_text('"loss_type":"ipo"')
    page.screenshot(path=str(shots / "job-dpo.png"), full_page=True)


def _interrupted_job(service: TrainingService) -> str:
    """A real run whose worker is SIGKILLed after its first checkpoint: INTERRUPTED."""
    config = AdvancedTrainingConfig(
        model_id="flextrain/tiny-llama",
        dataset_id="demo/text",
        training_type=TrainingType.FULL_TRAINING,
        max_steps=RESUMED_STEPS,
        batch_size=8,
        max_length=48,
        logging_steps=1,
        save_steps=4,
        save_total_limit=2,
        eval_split=0.0,
        num_threads=1,
        run_name="cut-off",
        gradient_checkpointing=False,  # explicit: no "off" note in the timeline
    )
    job_id = service.create_job(config).job_id
    service.start_job(job_id)
    deadline = time.monotonic() + 90
    # A logged step 5 means checkpoint-4 is complete (the Trainer logs, then saves).
    while not any(row["step"] >= 5 for row in service.metric_history(job_id)):
        job = service.require_job(job_id)
        assert not job.is_finished, (job.status, service.read_log(job_id, 40))
        assert time.monotonic() < deadline, "the job never logged step 5"
        time.sleep(0.05)
    pid = service.store.get(job_id).pid  # type: ignore[union-attr]
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while job_id not in service.recover_jobs()["interrupted"]:
        assert time.monotonic() < deadline, service.require_job(job_id).status
        time.sleep(0.1)
    return job_id


def test_resume_an_interrupted_job_from_the_page(
    page: Page, server: str, web_home: Path, models_cache: Path, shots: Path
) -> None:
    # The server's own database: the test plays a second front end on the same home.
    settings = Settings(
        home=web_home,
        models_cache=models_cache,
        database_url=f"sqlite:///{web_home / 'flextrain.db'}",
    )
    service = TrainingService(settings)
    try:
        job_id = _interrupted_job(service)
        assert service.require_job(job_id).status == TrainingStatus.INTERRUPTED

        _sign_in(page, server, ADMIN_TOKEN)
        expect(page.get_by_test_id("user-name")).to_have_text("admin")
        row = page.locator(f'tr[data-job-id="{job_id}"]')
        expect(row.get_by_test_id("job-row-status")).to_have_text("interrupted")
        row.get_by_test_id("job-link").click()
        page.wait_for_url(f"**/#/jobs/{job_id}")

        status = page.get_by_test_id("job-status")
        expect(status).to_have_attribute("data-status", "interrupted")
        expect(status.locator(".status")).to_have_class(re.compile(r"\bstatus-interrupted\b"))
        expect(page.get_by_test_id("job-error")).to_contain_text("resume continues")
        expect(page.get_by_test_id("job-cancel")).to_be_hidden()
        stream_state = page.get_by_test_id("job-stream-state")
        expect(stream_state).to_contain_text("stopped (interrupted)")
        expect(stream_state).to_contain_text("Resume continues it")
        timeline = page.get_by_test_id("timeline-item")
        interrupted = page.locator('[data-testid="timeline-item"][data-kind="interrupted"]')
        expect(interrupted).to_have_count(1)
        expect(interrupted).to_have_class(re.compile(r"\btimeline-warning\b"))
        expect(interrupted).to_contain_text("The worker process stopped")
        expect(page.get_by_test_id("checkpoint-row").first).to_be_visible()
        # The latest metric row's throughput and memory sit next to the loss.
        expect(page.get_by_test_id("fact-tokens-per-second")).to_have_text(re.compile(r"\d"))
        expect(page.get_by_test_id("fact-memory")).to_have_text(re.compile(r"\d+(\.\d+)? [MG]B"))
        page.screenshot(path=str(shots / "job-interrupted.png"), full_page=True)

        resume = page.get_by_test_id("job-resume")
        expect(resume).to_be_visible()
        resume.click()
        expect(status).not_to_have_attribute("data-status", "interrupted")
        expect(resume).to_be_hidden()
        expect(page.get_by_test_id("job-error")).to_be_hidden()
        expect(page.locator('[data-testid="timeline-item"][data-kind="resumed"]')).to_have_text(
            re.compile(r"Resumed from step \d+")
        )
        page.wait_for_function(
            "states => states.includes(document.getElementById('job-status').dataset.status)",
            arg=list(FINISHED),
            timeout=JOB_SECONDS * 1000,
        )
        final = status.get_attribute("data-status")
        assert final == "completed", (final, service.read_log(job_id, 40))
        expect(stream_state).to_contain_text("finished")
        # A memory warning may come between them on a crowded machine.
        kinds = [item.get_attribute("data-kind") for item in timeline.all()]
        assert [k for k in kinds if k != "memory_warning"] == ["interrupted", "resumed"], kinds
        steps = f"step {RESUMED_STEPS} of {RESUMED_STEPS}"
        expect(page.get_by_test_id("job-progress-text")).to_contain_text(steps)
        last = page.locator(f'[data-testid="checkpoint-row"][data-step="{RESUMED_STEPS}"]')
        expect(last).to_be_visible()
        page.screenshot(path=str(shots / "job-resumed.png"), full_page=True)
    finally:
        for job in service.list_jobs():
            if not job.is_finished:
                service.cancel_job(job.job_id)
        service.engine.dispose()


def test_a_queued_job_shows_why_it_waits_and_cancels_from_the_page(
    page: Page, server: str, web_home: Path, models_cache: Path, shots: Path
) -> None:
    settings = Settings(
        home=web_home,
        models_cache=models_cache,
        database_url=f"sqlite:///{web_home / 'flextrain.db'}",
    )
    service = TrainingService(settings)
    try:
        # Every core is held by a job (a live process recorded as training), so a job
        # that wants all of them waits, whichever front end or loop ticks.
        cores = service.hardware().cpu_cores
        blocker, _ = occupy(service, {"gpus": [], "threads": cores})
        job = service.create_job(quick_config(num_threads=None), priority=2)
        queued = service.start_job(job.job_id)
        assert queued.status == TrainingStatus.QUEUED
        reason = f"needs {cores} CPU threads, 0 free (job {blocker} uses {cores})"
        assert queued.wait_reason == reason

        _sign_in(page, server, ADMIN_TOKEN)
        row = page.locator(f'tr[data-job-id="{job.job_id}"]')
        badge = row.get_by_test_id("job-row-status").locator(".status")
        expect(badge).to_have_text("queued")
        expect(badge).to_have_class(re.compile(r"\bstatus-queued\b"))
        expect(badge).to_have_attribute("title", reason)
        row.get_by_test_id("job-link").click()
        page.wait_for_url(f"**/#/jobs/{job.job_id}")
        expect(page.get_by_test_id("job-status")).to_have_attribute("data-status", "queued")
        expect(page.get_by_test_id("fact-wait-reason")).to_have_text(reason)
        expect(page.get_by_test_id("fact-priority")).to_have_text("2")
        expect(page.get_by_test_id("job-remaining")).to_have_text("not started")
        page.screenshot(path=str(shots / "job-queued.png"), full_page=True)

        page.on("dialog", lambda dialog: dialog.accept())
        page.get_by_test_id("job-cancel").click()
        expect(page.get_by_test_id("job-status")).to_have_attribute("data-status", "cancelled")
        cancelled = service.require_job(job.job_id)
        assert cancelled.status == TrainingStatus.CANCELLED
        assert cancelled.pid is None
    finally:
        for unfinished in service.list_jobs():
            if not unfinished.is_finished:
                service.cancel_job(unfinished.job_id)
        service.engine.dispose()


def test_expert_yaml_is_checked_then_trains_an_expert_job(
    page: Page, server: str, shots: Path
) -> None:
    _sign_in(page, server, ADMIN_TOKEN)
    page.get_by_test_id("nav-new").click()
    expect(page.get_by_test_id("expert-section")).to_be_hidden()
    page.locator("label:has(#mode-expert)").click()
    expect(page.get_by_test_id("expert-section")).to_be_visible()
    expect(page.locator("#f-lora_r")).to_be_visible()  # every advanced knob as well

    page.locator("#f-model_id").fill("flextrain/tiny-llama")
    page.locator("#f-dataset_id").fill("demo/text")
    page.locator("#f-training_type").select_option("fine_tuning")
    page.locator("#f-max_steps").fill("6")
    page.locator("#f-max_length").fill("32")
    page.locator("#f-batch_size").fill("8")
    page.locator("#f-num_threads").fill("1")

    # A bad expression is named by its field before anything is created.
    yaml_box = page.get_by_test_id("expert-yaml")
    yaml_box.fill("lr_schedule_expr: __import__('os')\nloss: {name: focal}\n")
    page.get_by_test_id("expert-check").click()
    expect(page.get_by_test_id("form-errors")).to_contain_text("lr_schedule_expr", timeout=30_000)
    yaml_box.fill("lr_schedule_expr: [unclosed\n")
    page.get_by_test_id("expert-check").click()
    expect(page.get_by_test_id("form-errors")).to_contain_text("line", timeout=30_000)
    # The error is shown next to the YAML too, where the user is looking.
    near = page.get_by_test_id("expert-section").get_by_test_id("expert-errors")
    expect(near).to_contain_text("line")
    expect(near).to_be_in_viewport()
    page.screenshot(path=str(shots / "new-job-expert-error.png"))

    yaml_box.fill("lr_schedule_expr: lr * (1 - progress)\nloss: {name: focal, focal_gamma: 1.0}\n")
    page.get_by_test_id("expert-check").click()
    expect(page.get_by_test_id("expert-status")).to_contain_text(
        "OK: lr_schedule_expr, loss", timeout=30_000
    )
    expect(page.get_by_test_id("expert-errors")).to_be_hidden()
    page.get_by_test_id("submit-button").click()
    page.wait_for_url("**/#/jobs/*")
    page.wait_for_function(
        "states => states.includes(document.getElementById('job-status').dataset.status)",
        arg=list(FINISHED),
        timeout=JOB_SECONDS * 1000,
    )
    assert page.get_by_test_id("job-status").get_attribute("data-status") == "completed"
    expect(page.get_by_test_id("fact-mode")).to_contain_text("expert")


def _home_service(web_home: Path, models_cache: Path) -> TrainingService:
    """A second front end on the server's home and database."""
    settings = Settings(
        home=web_home,
        models_cache=models_cache,
        database_url=f"sqlite:///{web_home / 'flextrain.db'}",
    )
    return TrainingService(settings)


def _jsonl(*rows: dict[str, Any]) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def _file(name: str, content: bytes) -> FilePayload:
    return {"name": name, "mimeType": "text/plain", "buffer": content}


GOOD_ROWS = [
    {"text": f"the soup was {word} on day {day}", "label": label}
    for day in range(6)
    for word, label in (("lovely", "positive"), ("cold", "negative"))
]
# Line 2 is not JSON, line 4 has no text: two errors, with their lines.
BAD_FILE = (
    _jsonl(GOOD_ROWS[0])
    + b'{"text": "broken", "label": }\n'
    + _jsonl(GOOD_ROWS[1], {"label": "negative"}, *GOOD_ROWS[2:])
)


def test_datasets_page_checks_a_file_saves_previews_and_deletes_it(
    page: Page, server: str, web_home: Path, models_cache: Path, shots: Path
) -> None:
    service = _home_service(web_home, models_cache)
    try:
        _, token = service.users.create("tess", "trainer")
        _sign_in(page, server, token)
        expect(page.get_by_test_id("user-role")).to_have_text("trainer")
        page.get_by_test_id("nav-datasets").click()
        page.wait_for_url("**/#/datasets")
        expect(page.locator('tr[data-dataset-id="demo/sentiment"]')).to_be_visible()

        # Checked before anything is saved: each error with its line, saving refused.
        upload = page.get_by_test_id("upload-file")
        upload.set_input_files(files=[_file("reviews.jsonl", BAD_FILE)])
        page.get_by_test_id("upload-check").click()
        expect(page.get_by_test_id("report-verdict")).to_have_attribute("data-ok", "false")
        errors = page.get_by_test_id("report-error")
        expect(errors).to_have_count(2)
        expect(errors.nth(0)).to_have_attribute("data-line", "2")
        expect(errors.nth(0)).to_contain_text("line 2 is not valid JSON")
        expect(errors.nth(1)).to_have_attribute("data-line", "4")
        expect(errors.nth(1)).to_contain_text("row 3 (line 4), text: is missing")
        expect(page.get_by_test_id("report-summary")).to_contain_text(
            "2 errors", use_inner_text=False
        )
        expect(page.get_by_test_id("upload-save")).to_be_disabled()
        page.screenshot(path=str(shots / "datasets-check-errors.png"), full_page=True)
        assert service.datasets.access("tess/reviews") is None

        # The corrected file: its report, then saved under the name given.
        upload.set_input_files(files=[_file("reviews.jsonl", _jsonl(*GOOD_ROWS))])
        expect(page.get_by_test_id("upload-save")).to_be_disabled()
        page.get_by_test_id("upload-check").click()
        expect(page.get_by_test_id("report-verdict")).to_have_attribute("data-ok", "true")
        expect(page.get_by_test_id("report-rows")).to_have_text("12")
        expect(page.get_by_test_id("report-shape")).to_have_text("classification")
        expect(page.get_by_test_id("report-labels")).to_contain_text("positive (6)")
        expect(page.get_by_test_id("report-error")).to_have_count(0)
        expect(page.get_by_test_id("upload-name")).to_have_value("tess/reviews")
        page.get_by_test_id("upload-description").fill("soup reviews")
        page.screenshot(path=str(shots / "datasets-check-ok.png"), full_page=True)
        save = page.get_by_test_id("upload-save")
        expect(save).to_be_enabled()
        save.click()
        page.wait_for_url("**/#/datasets/tess%2Freviews")
        expect(page.get_by_test_id("upload-status")).to_contain_text("Saved tess/reviews")
        assert service.datasets.access("tess/reviews") == ("tess", False)

        # Listed with its version; its versions and first rows.
        row = page.locator('tr[data-dataset-id="tess/reviews"]')
        expect(row.get_by_test_id("dataset-rows")).to_have_text("12")
        (version,) = service.datasets.versions("tess/reviews")
        expect(row).to_contain_text(version.version[:12])
        expect(page.get_by_test_id("dataset-title")).to_have_text("tess/reviews")
        versions = page.get_by_test_id("version-row")
        expect(versions).to_have_count(1)
        expect(versions.first).to_have_attribute("data-version", version.version)
        expect(versions.first).to_contain_text("reviews.jsonl")
        preview = page.get_by_test_id("preview-row")
        expect(preview).to_have_count(12)
        expect(preview.first.locator('td[data-column="text"]')).to_have_text(GOOD_ROWS[0]["text"])
        expect(preview.first.locator('td[data-column="label"]')).to_have_text("positive")
        expect(page.get_by_test_id("dataset-delete")).to_be_visible()
        page.screenshot(path=str(shots / "datasets-detail.png"), full_page=True)

        # A bundled demo: previewed, not deletable.
        page.locator('tr[data-dataset-id="demo/text"]').get_by_test_id("dataset-link").click()
        expect(page.get_by_test_id("dataset-title")).to_have_text("demo/text")
        expect(page.get_by_test_id("preview-row")).to_have_count(20)
        expect(page.get_by_test_id("dataset-delete")).to_be_hidden()

        # Picked in the job form: the dataset list offers it; paths are for admins.
        page.locator('tr[data-dataset-id="tess/reviews"]').get_by_test_id("dataset-link").click()
        expect(page.get_by_test_id("dataset-title")).to_have_text("tess/reviews")
        page.get_by_test_id("dataset-use").click()
        page.wait_for_url("**/#/new?dataset=*")
        expect(page.locator("#f-dataset_id")).to_have_value("tess/reviews")
        option = page.locator('#datasets-list option[value="tess/reviews"]')
        expect(option).to_have_count(1)
        help_text = page.locator("#help-dataset_id")
        expect(help_text).to_contain_text("an admin may also give a data file's path")
        expect(help_text).to_contain_text("Datasets page")
        page.screenshot(path=str(shots / "new-job-with-dataset.png"), full_page=True)

        # Deleted by its owner.
        page.get_by_test_id("nav-datasets").click()
        page.locator('tr[data-dataset-id="tess/reviews"]').get_by_test_id("dataset-link").click()
        page.on("dialog", lambda dialog: dialog.accept())
        page.get_by_test_id("dataset-delete").click()
        page.wait_for_url("**/#/datasets")
        expect(page.locator('tr[data-dataset-id="tess/reviews"]')).to_have_count(0)
        expect(page.get_by_test_id("upload-status")).to_contain_text("Deleted tess/reviews")
        page.screenshot(path=str(shots / "datasets.png"), full_page=True)
        assert service.datasets.access("tess/reviews") is None
    finally:
        service.engine.dispose()


def test_a_trainer_is_told_up_front_that_user_code_is_admin_only(
    page: Page, server: str, web_home: Path, models_cache: Path, shots: Path
) -> None:
    service = _home_service(web_home, models_cache)
    try:
        _, token = service.users.create("tara", "trainer")
        _sign_in(page, server, token)
        expect(page.get_by_test_id("user-name")).to_have_text("tara")
        page.get_by_test_id("nav-new").click()
        page.locator("label:has(#mode-expert)").click()
        page.locator("#f-model_id").fill("flextrain/tiny-llama")
        page.locator("#f-dataset_id").fill("demo/text")
        page.locator("#f-training_type").select_option("fine_tuning")

        yaml_box = page.get_by_test_id("expert-yaml")
        near = page.get_by_test_id("expert-section").get_by_test_id("expert-errors")
        yaml_box.fill("loss: {name: focal, function: 'mylosses:focal_loss'}\n")
        page.get_by_test_id("expert-check").click()
        expect(page.get_by_test_id("expert-status")).to_contain_text("Admin only")
        expect(near).to_contain_text("loss.function")
        expect(near).to_contain_text("admin only")
        expect(near).not_to_contain_text("code_dir is not set")
        expect(near).to_be_in_viewport()
        expect(yaml_box).to_have_attribute("aria-invalid", "true")
        page.screenshot(path=str(shots / "new-job-expert-admin-only.png"))

        # Submitting checks the YAML first: nothing is created.
        page.get_by_test_id("submit-button").click()
        expect(near).to_contain_text("loss.function")
        assert page.url.endswith("#/new")
        assert [j for j in service.list_jobs() if j.owner == "tara"] == []

        for yaml, field in (
            ("callbacks: ['hooks:Print']\n", "callbacks"),
            ("trainer_class: 'mytrainer:Custom'\n", "trainer_class"),
            ("optimizer: {factory: 'opt:make'}\n", "optimizer.factory"),
            ("code_dir: /tmp\n", "yaml.code_dir"),
        ):
            yaml_box.fill(yaml)
            page.get_by_test_id("expert-check").click()
            expect(near.locator(f'li[data-field="{field}"]')).to_contain_text(
                re.compile("admin only|only an admin")
            )
        # Built-in losses are data: fine for a trainer.
        yaml_box.fill("loss: {name: focal, focal_gamma: 1.0}\n")
        page.get_by_test_id("expert-check").click()
        expect(page.get_by_test_id("expert-status")).to_contain_text("OK: loss")
        expect(near).to_be_hidden()
    finally:
        service.engine.dispose()


def test_time_while_training_and_a_cancel_that_agrees_with_its_checkpoint(
    page: Page, server: str, web_home: Path, models_cache: Path, shots: Path
) -> None:
    service = _home_service(web_home, models_cache)
    try:
        config = AdvancedTrainingConfig(
            model_id="flextrain/tiny-llama",
            dataset_id="demo/text",
            training_type=TrainingType.FULL_TRAINING,
            max_steps=5000,  # far more than the test waits for: it is cancelled
            batch_size=8,
            max_length=48,
            logging_steps=1,
            save_steps=2000,  # the checkpoint is the one the cancel saves
            eval_split=0.0,
            num_threads=1,
            run_name="timed",
            gradient_checkpointing=False,
        )
        job_id = service.create_job(config).job_id
        service.start_job(job_id)

        _sign_in(page, server, ADMIN_TOKEN)
        page.locator(f'tr[data-job-id="{job_id}"]').get_by_test_id("job-link").click()
        page.wait_for_url(f"**/#/jobs/{job_id}")
        status = page.get_by_test_id("job-status")
        expect(status).to_have_attribute("data-status", "training", timeout=120_000)

        # Elapsed time ticks; the remaining time comes from the measured step time, and
        # says so; tokens/s from the latest logged step.
        remaining = page.get_by_test_id("job-remaining")
        expect(remaining).to_have_attribute("data-source", "measured", timeout=60_000)
        expect(remaining).to_have_text(re.compile(r"^about \d+ (s|min)"))
        expect(page.get_by_test_id("job-remaining-source")).to_contain_text("measured:")
        expect(page.get_by_test_id("job-elapsed")).to_have_text(re.compile(r"^\d+ (s|min)"))
        expect(page.get_by_test_id("job-tokens-rate")).to_have_text(re.compile(r"\d"))
        elapsed = page.get_by_test_id("job-elapsed")
        before = int(elapsed.get_attribute("data-seconds") or 0)
        page.wait_for_function(
            "before => Number(document.getElementById('job-elapsed').dataset.seconds) > before",
            arg=before,
        )
        page.screenshot(path=str(shots / "job-training.png"), full_page=True)

        page.on("dialog", lambda dialog: dialog.accept())
        page.get_by_test_id("job-cancel").click()
        expect(status).to_have_attribute("data-status", "cancelled", timeout=60_000)
        checkpoints = page.get_by_test_id("checkpoint-row")
        expect(checkpoints.first).to_be_visible(timeout=60_000)
        saved = max(int(row.get_attribute("data-step") or -1) for row in checkpoints.all())
        listed = list_checkpoints(service.environment(job_id).checkpoint_dir)
        assert saved == max(c.step for c in listed), listed
        progress = page.get_by_test_id("job-progress-text")
        expect(progress).to_have_attribute("data-step", str(saved))
        expect(progress).to_contain_text(f"step {saved} of 5000")
        assert service.require_job(job_id).current_step == saved
        expect(remaining).to_have_attribute("data-source", "finished")
        page.screenshot(path=str(shots / "job-cancelled.png"), full_page=True)
    finally:
        for job in service.list_jobs():
            if not job.is_finished:
                service.cancel_job(job.job_id)
        service.engine.dispose()


def test_models_page_shows_versions_compares_promotes_and_removes(
    page: Page, server: str, web_home: Path, models_cache: Path, tmp_path: Path, shots: Path
) -> None:
    service = _home_service(web_home, models_cache)
    try:
        _, token = service.users.create("mona", "trainer")
        source = service.models.resolve("flextrain/tiny-llama").path
        first = Path(shutil.copytree(source, tmp_path / "llama-1"))
        second = Path(shutil.copytree(source, tmp_path / "llama-2"))
        service.model_registry.add(first, "mona/llama", "the base", owner="mona")
        service.model_registry.add(second, "mona/llama", "retrained", owner="mona")

        _sign_in(page, server, token)
        expect(page.get_by_test_id("user-role")).to_have_text("trainer")
        page.get_by_test_id("nav-models").click()
        page.wait_for_url("**/#/models")
        row = page.locator('tr[data-model="mona/llama"]')
        expect(row.get_by_test_id("model-latest")).to_have_text("version 2")
        row.get_by_test_id("model-link").click()
        expect(page.get_by_test_id("model-title")).to_have_text("mona/llama")
        versions = page.get_by_test_id("model-version-row")
        expect(versions).to_have_count(2)
        expect(versions.first).to_have_attribute("data-ref", "mona/llama:2")
        expect(versions.first).to_contain_text("latest")
        expect(page.get_by_test_id("model-use")).to_have_attribute(
            "href", "#/new?model=mona%2Fllama"
        )

        # Compare: the two versions differ in their folder only.
        expect(page.get_by_test_id("diff-a")).to_have_value("mona/llama:1")
        expect(page.get_by_test_id("diff-b")).to_have_value("mona/llama:2")
        page.get_by_test_id("diff-submit").click()
        expect(page.get_by_test_id("diff-verdict")).to_have_text(
            "mona/llama:1 vs mona/llama:2: no training config recorded for both (a folder "
            "registered by hand has none)"
        )
        path_row = page.get_by_test_id("diff-lineage").locator('tr[data-key="path"]')
        expect(path_row).to_contain_text(str(first))
        expect(path_row).to_contain_text(str(second))
        page.screenshot(path=str(shots / "models-diff.png"), full_page=True)

        # Make version 1 the latest again: it comes back as version 3.
        page.locator('tr[data-ref="mona/llama:1"]').get_by_test_id("version-promote").click()
        expect(versions).to_have_count(3)
        expect(versions.first).to_have_attribute("data-ref", "mona/llama:3")
        assert service.resolve_model("mona/llama").path == first
        # Remove version 2; its files stay.
        page.on("dialog", lambda dialog: dialog.accept())
        page.locator('tr[data-ref="mona/llama:2"]').get_by_test_id("version-remove").click()
        expect(versions).to_have_count(2)
        assert [m.version for m in service.model_versions("mona/llama")] == [1, 3]
        assert (second / "model.safetensors").exists()
        page.screenshot(path=str(shots / "models.png"), full_page=True)
    finally:
        service.engine.dispose()
