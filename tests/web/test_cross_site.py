"""A `flextrain serve --no-auth` attacked from Chromium as a page on another site would:
a cross-site form post and a no-cors fetch (CSRF), and DNS rebinding (a foreign host
name resolved to the server's loopback address). Each is refused; nothing changes."""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import sync_playwright

from tests.web.test_browser import CHROMIUM_ARGS, _free_port, chromium  # noqa: F401

ATTACK_PAGE = """<!doctype html>
<html><body>
<form id="f" method="post" action="{api}/api/training/jobs/{job}/cancel"></form>
<script>
const data = new FormData();
data.append("name", "stolen");
data.append("file", new Blob(['{{"text": "x"}}\\n'], {{type: "text/plain"}}), "rows.jsonl");
fetch("{api}/api/datasets", {{method: "POST", mode: "no-cors", body: data}})
  .finally(() => {{ document.title = "sent"; document.getElementById("f").submit(); }});
</script>
</body></html>
"""


def _get(base: str, path: str) -> Any:
    with urllib.request.urlopen(base + path, timeout=10) as response:
        return json.loads(response.read())


def _post(base: str, path: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(
        base + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def local_server(
    chromium: Path,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
    models_cache: Path,
) -> Iterator[tuple[str, int]]:
    """`flextrain serve --no-auth` on loopback: its base URL and port."""
    home = tmp_path_factory.mktemp("cross-site") / "home"
    port = _free_port()
    env = {**os.environ, "FLEXTRAIN_HOME": str(home), "FLEXTRAIN_MODELS_CACHE": str(models_cache)}
    env.pop("FLEXTRAIN_DATABASE_URL", None)
    command = [str(Path(sys.executable).with_name("flextrain")), "serve", "--no-auth"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    home.mkdir(parents=True)
    with (home / "server.log").open("wb") as log:
        proc = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                _get(base, "/api/health")
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                assert proc.poll() is None, (home / "server.log").read_text()
                assert time.monotonic() < deadline, (home / "server.log").read_text()
                time.sleep(0.25)
        yield base, port
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)


@pytest.fixture
def attacker_site(tmp_path: Path) -> Iterator[str]:
    """Another origin: a plain HTTP server on another port, serving the attack page."""
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def test_a_page_on_another_site_can_neither_upload_nor_cancel(
    chromium: Path,  # noqa: F811
    local_server: tuple[str, int],
    attacker_site: str,
    tmp_path: Path,
) -> None:
    base, _ = local_server
    job = _post(
        base,
        "/api/training/jobs/basic",
        {
            "model_id": "flextrain/tiny-llama",
            "dataset_id": "demo/text",
            "training_type": "fine_tuning",
            "max_length": 32,
        },
    )
    (tmp_path / "attack.html").write_text(ATTACK_PAGE.format(api=base, job=job["job_id"]))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(chromium), headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page()
            page.goto(f"{attacker_site}/attack.html")
            # The form is posted once the fetch has had its answer; the page then shows
            # the server's answer to the form (under the server's own CSP).
            page.wait_for_url(f"{base}/**/cancel", timeout=20_000)
            answered = page.content()
        finally:
            browser.close()
    assert "requests that change something" in answered  # the cancel form's 403 body
    names = [d["dataset_id"] for d in _get(base, "/api/datasets")]
    assert "stolen" not in names
    assert _get(base, f"/api/training/jobs/{job['job_id']}")["status"] == "pending"
    refused = [
        e for e in _get(base, "/api/audit?outcome=denied")["items"] if e["status_code"] == 403
    ]
    # Refused before any route is matched: the action is the path as requested.
    assert {e["action"] for e in refused} >= {
        "POST /api/datasets",
        f"POST /api/training/jobs/{job['job_id']}/cancel",
    }
    assert all(f"origin {attacker_site}" in (e["detail"] or "") for e in refused)


def test_dns_rebinding_gets_no_page_and_no_data(
    chromium: Path,  # noqa: F811
    local_server: tuple[str, int],
) -> None:
    base, port = local_server
    rules = "--host-resolver-rules=MAP rebound.attacker.test 127.0.0.1"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(chromium), headless=True, args=[*CHROMIUM_ARGS, rules]
        )
        try:
            page = browser.new_page()
            response = page.goto(f"http://rebound.attacker.test:{port}/api/training/jobs")
            assert response is not None
            assert response.status == 400
            assert "does not answer to the host name" in page.content()
            assert "job_id" not in page.content()
        finally:
            browser.close()
    assert _get(base, "/api/health")["auth"] is False  # the server itself is fine
