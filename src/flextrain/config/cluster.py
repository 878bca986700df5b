"""Per-job options for a cluster executor (Slurm, Ray): where in the cluster it runs.

Each value goes into the job's batch script as an #SBATCH line, so each is checked
here for what could break out of that line: no newlines, and extra options must be
long options (`--name` or `--name=value`).
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

# A Slurm name (partition, account, QoS): letters, digits and a few separators.
_NAME = r"^[A-Za-z0-9_.\-]+$"
# Slurm's --time formats: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS.
_TIME = r"^(\d+|\d+:\d{2}|\d+:\d{2}:\d{2}|\d+-\d+|\d+-\d+:\d{2}|\d+-\d+:\d{2}:\d{2})$"
_OPTION = re.compile(r"^--[a-z][a-z0-9-]*(=[^\s'\"`$\\;&|<>]+)?$")


class ClusterOptions(BaseModel):
    """Where a job runs in a Slurm cluster; each unset value falls back to the
    FLEXTRAIN_SLURM_* setting of the same name, then to the cluster's default."""

    model_config = ConfigDict(extra="forbid")

    partition: str | None = Field(None, max_length=200, pattern=_NAME)
    account: str | None = Field(None, max_length=200, pattern=_NAME)
    qos: str | None = Field(None, max_length=200, pattern=_NAME)
    time_limit: str | None = Field(
        None, pattern=_TIME, description="Slurm --time: minutes, HH:MM:SS or D-HH:MM:SS."
    )
    extra_sbatch: list[str] = Field(
        default_factory=list,
        max_length=32,
        description="More sbatch long options, e.g. ['--constraint=a100', '--exclusive'].",
    )

    @field_validator("extra_sbatch")
    @classmethod
    def _long_options_only(cls, values: list[str]) -> list[str]:
        for value in values:
            if not _OPTION.match(value):
                raise ValueError(
                    f"{value!r} is not an sbatch long option. Fix: write it as --name or "
                    "--name=value, without spaces, quotes or shell characters."
                )
        return values
