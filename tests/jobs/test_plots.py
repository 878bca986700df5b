"""Metric history and plots: `flextrain jobs metrics | plot`, service.plot_jobs.

The history rows are written through the same store calls the worker's callback
makes; the plot is a real PNG drawn by matplotlib.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flextrain.cli.main import app
from flextrain.config.enums import TrainingMode
from flextrain.config.schemas import BasicTrainingConfig
from flextrain.jobs.errors import JobNotFoundError
from flextrain.jobs.plots import reward_series, series
from flextrain.jobs.store import JobStore
from flextrain.service import TrainingService
from flextrain.settings import Settings


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _job_with_history(store: JobStore, job_id: str, steps: int = 6) -> None:
    config = BasicTrainingConfig(training_type="fine_tuning", model_id="m", dataset_id="d")
    store.create(
        job_id=job_id, mode=TrainingMode.BASIC, config=config, output_dir="/o", log_path="/l"
    )
    for step in range(1, steps + 1):
        store.add_metric(
            job_id,
            step=step * 10,
            epoch=step / steps,
            values={"loss": 3.0 / step, "learning_rate": 1e-4 * (1 - step / steps)},
        )
    store.add_metric(job_id, step=steps * 10, epoch=1.0, values={"eval_loss": 0.9})


def test_series_are_in_step_order_and_skip_missing_values() -> None:
    history = [
        {"step": 20, "loss": 1.0},
        {"step": 10, "loss": 2.0},
        {"step": 20, "eval_loss": 1.5},
    ]
    assert series(history, "loss") == ([10.0, 20.0], [2.0, 1.0])
    assert series(history, "eval_loss") == ([20.0], [1.5])
    assert series(history, "learning_rate") == ([], [])


def test_plot_of_one_and_two_jobs_side_by_side(service: TrainingService, tmp_path: Path) -> None:
    _job_with_history(service.store, "job-a")
    _job_with_history(service.store, "job-b", steps=3)
    one = service.plot_jobs(["job-a"], tmp_path / "one.png")
    two = service.plot_jobs(["job-a", "job-b"])
    assert one == tmp_path / "one.png"
    assert two.parent == service.settings.home / "plots"
    width_one, height_one = _png_size(one)
    width_two, height_two = _png_size(two)
    assert width_two >= 2 * width_one * 0.9
    assert height_two == height_one
    assert len(service.metric_history("job-a")) == 7
    with pytest.raises(JobNotFoundError, match="nope"):
        service.plot_jobs(["job-a", "nope"], tmp_path / "never.png")
    assert not (tmp_path / "never.png").exists()


def test_a_preference_run_gets_a_reward_panel(service: TrainingService, tmp_path: Path) -> None:
    _job_with_history(service.store, "plain")
    _job_with_history(service.store, "dpo")
    for step in (10, 20, 30):
        service.store.add_metric(
            "dpo", step=step, epoch=0.5, values={"rewards/margins": step / 100}
        )
    plain = _png_size(service.plot_jobs(["plain"], tmp_path / "plain.png"))
    dpo = _png_size(service.plot_jobs(["dpo"], tmp_path / "dpo.png"))
    assert dpo[1] == pytest.approx(plain[1] * 1.5, rel=0.05)  # a third row of panels
    history = service.metric_history("dpo")
    assert reward_series(history) == ("rewards/margins", "reward margin (chosen - rejected)")
    assert reward_series([{"step": 1, "reward": 0.5}]) == ("reward", "mean reward")
    assert reward_series(service.metric_history("plain")) is None


def test_gradient_norms_get_a_panel_and_health_events_are_marked(
    service: TrainingService, tmp_path: Path
) -> None:
    _job_with_history(service.store, "plain")
    _job_with_history(service.store, "watched")
    for step in (10, 20, 30):
        service.store.add_metric(
            "watched",
            step=step,
            epoch=0.5,
            values={"grad_norm_min": 0.5, "grad_norm_median": 1.0, "grad_norm_max": step / 5},
        )
    plain = _png_size(service.plot_jobs(["plain"], tmp_path / "plain.png"))
    quiet = service.plot_jobs(["watched"], tmp_path / "quiet.png")
    assert _png_size(quiet)[1] == pytest.approx(plain[1] * 1.5, rel=0.05)  # a third row
    before = quiet.read_bytes()
    service.store.add_event("watched", "loss_spike", "Loss spiked", data={"step": 20})
    marked = service.plot_jobs(["watched"], tmp_path / "marked.png")
    assert _png_size(marked) == _png_size(quiet)
    assert marked.read_bytes() != before  # the spike's line is drawn


def test_cli_metrics_and_plot(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FLEXTRAIN_HOME", str(settings.home))
    # The same database as `settings` (a PostgreSQL one under `make test-postgres`).
    monkeypatch.setenv("FLEXTRAIN_DATABASE_URL", settings.resolved_database_url)
    monkeypatch.setenv("FLEXTRAIN_MODELS_CACHE", str(settings.builtin_models_dir))
    monkeypatch.setenv("COLUMNS", "200")
    service = TrainingService(settings)
    try:
        _job_with_history(service.store, "job-c")
    finally:
        service.engine.dispose()
    runner = CliRunner()
    shown = runner.invoke(app, ["jobs", "metrics", "job-c"])
    assert shown.exit_code == 0, shown.output
    assert "learning_rate" in shown.output
    assert "eval_loss" in shown.output
    assert "0.9" in shown.output
    as_json = runner.invoke(app, ["jobs", "metrics", "job-c", "--json"])
    rows = json.loads(as_json.stdout)
    assert [r["step"] for r in rows][:3] == [10, 20, 30]
    assert rows[-1]["eval_loss"] == 0.9
    out = tmp_path / "c.png"
    plotted = runner.invoke(app, ["jobs", "plot", "job-c", "--out", str(out)])
    assert plotted.exit_code == 0, plotted.output
    assert plotted.output.strip() == str(out)
    assert _png_size(out)[0] > 0
    missing = runner.invoke(app, ["jobs", "plot", "no-such-job"])
    assert missing.exit_code == 2
    assert "No training job with id 'no-such-job'" in missing.output


def test_python_api_reads_the_history(service: TrainingService) -> None:
    from flextrain.interface import FlexibleTrainingInterface

    _job_with_history(service.store, "job-d", steps=2)
    history = FlexibleTrainingInterface(service=service).get_job_metrics("job-d")
    assert [row["step"] for row in history] == [10, 20, 20]
    assert history[0]["loss"] == 3.0
    assert history[-1]["eval_loss"] == 0.9
