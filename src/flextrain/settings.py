"""Process-wide settings, built once at start-up and passed down.

Nothing deep in the code reads environment variables itself: the worker
process receives the same values on its command line, so a job always runs
against the store that created it.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_home() -> Path:
    return Path.home() / ".flextrain"


class Settings(BaseSettings):
    """Where flextrain keeps its state.

    `home` holds the job database, job folders, registered datasets and the
    built-in models generated on first use.
    """

    model_config = SettingsConfigDict(env_prefix="FLEXTRAIN_", extra="ignore")

    home: Path = Field(default_factory=_default_home)
    database_url: str | None = None
    models_cache: Path | None = Field(
        None, description="Where built-in models are generated; default HOME/models/builtin."
    )
    admin_token: SecretStr | None = Field(
        None,
        description="The API admin's token (FLEXTRAIN_ADMIN_TOKEN); without it the first "
        "`flextrain serve` makes one and prints it once.",
    )
    auto_resume: bool = Field(
        False,
        description="When the service starts, resume the jobs a crash or restart interrupted "
        "(FLEXTRAIN_AUTO_RESUME=1).",
    )
    max_concurrent_jobs: int | None = Field(
        None,
        ge=1,
        description="At most this many jobs run at once on this home "
        "(FLEXTRAIN_MAX_CONCURRENT_JOBS); unset, the free CPU threads and GPUs decide.",
    )

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.home / 'flextrain.db'}"

    @property
    def jobs_dir(self) -> Path:
        return self.home / "jobs"

    @property
    def builtin_models_dir(self) -> Path:
        return self.models_cache or self.home / "models" / "builtin"

    def ensure_home(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
