from __future__ import annotations

from pathlib import Path

import pytest

from flextrain.jobs.environment import EnvironmentSetupError, TrainingEnvironmentManager


def test_setup_creates_every_folder_and_cleanup_keeps_outputs(tmp_path: Path) -> None:
    manager = TrainingEnvironmentManager(tmp_path / "jobs")
    env = manager.setup("job1")
    for folder in (env.output_dir, env.checkpoint_dir, env.logs_dir, env.data_dir, env.temp_dir):
        assert folder.is_dir()
    (env.temp_dir / "scratch.bin").write_bytes(b"x")
    (env.model_dir).mkdir()
    manager.cleanup(env)
    assert not env.temp_dir.exists()
    assert not env.data_dir.exists()
    assert env.model_dir.exists()
    assert env.logs_dir.exists()


def test_not_enough_disk_fails_before_creating_anything(tmp_path: Path) -> None:
    manager = TrainingEnvironmentManager(tmp_path / "jobs", min_free_gb=10**9)
    with pytest.raises(EnvironmentSetupError, match=r"GB free .* needs .*Fix: free disk space"):
        manager.setup("job1")
    assert not (tmp_path / "jobs").exists()


def test_unwritable_output_path_is_refused_and_cleaned(tmp_path: Path) -> None:
    # A file where a folder should go: mkdir fails for anyone, root included.
    blocker = tmp_path / "blocker"
    blocker.write_text("I am a file")
    manager = TrainingEnvironmentManager(tmp_path / "jobs")
    with pytest.raises(EnvironmentSetupError, match=r"Cannot create job folders.*Fix:"):
        manager.setup("job1", output_dir=blocker / "out")
    assert not (tmp_path / "jobs" / "job1").exists()
