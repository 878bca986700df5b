"""The registry's table and what front ends see of a row: one version of a named model.

A row is keyed by (name, version). `COPIED` lists the columns a version is made of
bar its name and number: what a promotion carries over to the new version.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field
from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Integer, String, false
from sqlalchemy.orm import Mapped, mapped_column

from flextrain.db import Base, as_utc
from flextrain.models.refs import MAX_NAME, MAX_PATH

ModelSource = Literal["local", "trained"]


def _now() -> datetime:
    return datetime.now(UTC)


class ModelRecord(Base):
    __tablename__ = "models"

    name: Mapped[str] = mapped_column(String(MAX_NAME), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(String(MAX_PATH))
    source: Mapped[str] = mapped_column(String(16))
    # A LoRA adapter folder holds no full model: it cannot be a job's model_id as it is.
    adapter: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    architecture: Mapped[str | None] = mapped_column(String(200))
    model_type: Mapped[str | None] = mapped_column(String(64))
    num_parameters: Mapped[int | None] = mapped_column(BigInteger)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    training_types: Mapped[list[str]] = mapped_column(JSON, default=list)
    base_model: Mapped[str | None] = mapped_column(String(500))
    job_id: Mapped[str | None] = mapped_column(String(32), index=True)
    dataset_id: Mapped[str | None] = mapped_column(String(500))
    dataset_version: Mapped[str | None] = mapped_column(String(64))
    config_hash: Mapped[str | None] = mapped_column(String(64))
    config: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    owner: Mapped[str | None] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(String(1000), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


# The columns a version is made of, bar its name and number (copied by a promotion).
COPIED = (
    "path",
    "source",
    "adapter",
    "architecture",
    "model_type",
    "num_parameters",
    "size_bytes",
    "training_types",
    "base_model",
    "job_id",
    "dataset_id",
    "dataset_version",
    "config_hash",
    "config",
    "metrics",
)


class RegisteredModel(BaseModel):
    """A registered model version as every front end sees it."""

    model_config = ConfigDict(protected_namespaces=())

    name: str
    version: int = Field(1, description="Versions of a name count up from 1.")
    latest: bool = Field(True, description="The newest version: what the bare name means.")
    path: str
    source: ModelSource = Field(description="'local' (registered by hand) or 'trained' (a job).")
    adapter: bool = Field(False, description="A LoRA adapter: merge it before training from it.")
    architecture: str | None = None
    model_type: str | None = None
    num_parameters: int | None = None
    size_bytes: int | None = Field(None, description="Bytes of the files in the folder.")
    training_types: list[str] = Field(
        default_factory=list, description="Training types the model supports as a base."
    )
    base_model: str | None = Field(None, description="The model a trained one started from.")
    job_id: str | None = Field(None, description="The job that trained it.")
    dataset_id: str | None = None
    dataset_version: str | None = Field(None, description="SHA-256 of the data it trained on.")
    config_hash: str | None = Field(
        None, description="SHA-256 of the training settings (equal hashes: trained alike)."
    )
    config: dict[str, Any] | None = Field(None, description="The training job's config.")
    metrics: dict[str, Any] | None = Field(None, description="The training job's final metrics.")
    owner: str | None = None
    description: str = ""
    created_at: datetime

    @computed_field  # type: ignore[prop-decorator]
    @property
    def ref(self) -> str:
        """This version as a model id: `name:version`."""
        return f"{self.name}:{self.version}"

    @classmethod
    def from_record(cls, r: ModelRecord, *, latest: bool = True) -> RegisteredModel:
        return cls(
            name=r.name,
            version=r.version,
            latest=latest,
            path=r.path,
            source="trained" if r.source == "trained" else "local",
            adapter=bool(r.adapter),
            architecture=r.architecture,
            model_type=r.model_type,
            num_parameters=r.num_parameters,
            size_bytes=r.size_bytes,
            training_types=list(r.training_types or []),
            base_model=r.base_model,
            job_id=r.job_id,
            dataset_id=r.dataset_id,
            dataset_version=r.dataset_version,
            config_hash=r.config_hash,
            config=r.config,
            metrics=r.metrics,
            owner=r.owner,
            description=r.description or "",
            created_at=as_utc(r.created_at),
        )
