"""After training over REST: merge, export, try and evaluate a completed job.

The work (loading the model and its base, generating, evaluating) runs in the
server process, in FastAPI's thread pool (the routes are plain `def`), so each
request is bounded to seconds or minutes, never hours: try takes at most
MAX_TEXTS texts of MAX_TEXT_CHARS characters and MAX_NEW_TOKENS new tokens,
evaluate at most MAX_ROWS rows. A job that has not completed answers 409 at
once, before anything is loaded.

Merge and export write files: a trainer may do it for their own jobs (admins
for any), into a folder under their own FLEXTRAIN_HOME/outputs/NAME (a
relative `out_dir` is taken from there), as for a job's output_dir. Try and
evaluate write nothing; they are for trainers too (they use the machine), on
the jobs they can see. Every call is in the audit log (they are POSTs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator

from flextrain.accounts.users import Role, User
from flextrain.api.deps import (
    ServiceDep,
    TrainerDep,
    confine_dataset,
    is_inside,
    owned_job,
    user_output_root,
    visible_job,
)
from flextrain.api.routing import StrictJSONRoute
from flextrain.api.schemas import ErrorBody
from flextrain.public import (
    EvaluationResult,
    ExportFormat,
    ExportResult,
    GGUFQuant,
    MergeResult,
    ParityReport,
    TryResult,
)
from flextrain.service import TrainingService

router = APIRouter(prefix="/api/training", tags=["after training"], route_class=StrictJSONRoute)

MAX_TEXTS = 16
MAX_TEXT_CHARS = 4000
MAX_NEW_TOKENS = 256
MAX_ROWS = 10_000
MAX_PATH = 1024

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "No valid token."},
    403: {"model": ErrorBody, "description": "The role may not do this, or not on this job."},
    404: {"model": ErrorBody, "description": "No such job (or not yours), or no such dataset."},
    409: {
        "model": ErrorBody,
        "description": "The job has not completed, or the folder to write is not empty.",
    },
    422: {"model": ErrorBody, "description": "Invalid input, or data that does not fit the job."},
}


def _no_nul(value: str | None) -> str | None:
    if value is not None and "\x00" in value:
        raise ValueError("must not contain a NUL character")
    return value


class MergeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    out_dir: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_PATH,
        description="Folder to write; default: the job's folder (jobs/ID/merged). "
        "Non-admins: inside FLEXTRAIN_HOME/outputs/NAME (relative paths start there).",
    )
    force: bool = Field(False, description="Replace what out_dir holds already.")

    _check_path = field_validator("out_dir")(_no_nul)


class ExportRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    out_dir: str = Field(
        min_length=1,
        max_length=MAX_PATH,
        description="Folder to write (new or empty). Non-admins: inside "
        "FLEXTRAIN_HOME/outputs/NAME (relative paths start there).",
    )
    adapter_only: bool = Field(False, description="LoRA jobs: the adapter alone, not merged.")
    force: bool = Field(False, description="Replace what out_dir holds already.")
    full_config: bool = Field(
        False, description="Every config field in the model card, not only the changed ones."
    )
    format: ExportFormat = Field(
        "vllm",
        description="vllm: a safetensors folder (transformers, vLLM); gguf: one GGUF file "
        "(llama.cpp); ollama: the GGUF file and a Modelfile. Each is checked against the "
        "trained model.",
    )
    quant: GGUFQuant | None = Field(None, description="gguf, ollama: f16, q8_0 (default), q4_k_m.")
    verify: bool = Field(True, description="Check the export answers as the trained model.")

    _check_path = field_validator("out_dir")(_no_nul)


class TryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    texts: list[Annotated[str, Field(min_length=1, max_length=MAX_TEXT_CHARS)]] = Field(
        min_length=1, max_length=MAX_TEXTS
    )
    max_new_tokens: int = Field(32, ge=1, le=MAX_NEW_TOKENS, description="Causal LMs only.")
    chat: bool | None = Field(
        None, description="Causal LMs: wrap in the chat template; default as the job trained."
    )


class EvaluateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset_id: str | None = Field(
        None,
        min_length=1,
        max_length=500,
        description="Registered dataset (name or name@version); default: the job's own.",
    )
    split: Literal["all", "heldout"] | None = Field(
        None,
        description="heldout: the rows the job held out (never trained on); all: the "
        "dataset's first `limit` rows, training rows included. Default: heldout when the job "
        "held rows out of the data evaluated, else all (with a note). The response says which.",
    )
    limit: int = Field(1000, ge=1, le=MAX_ROWS, description="Rows to evaluate at most.")
    batch_size: int = Field(16, ge=1, le=256)

    _check_dataset = field_validator("dataset_id")(_no_nul)


def _out_dir(service: TrainingService, user: User, out_dir: str) -> Path:
    """Where a user may write: their own output folder (strictly inside it) unless admin;
    a relative path starts there for everyone. Resolved first, so '..' and symbolic
    links that lead out are refused however they are spelled."""
    root = user_output_root(service, user).resolve()
    target = Path(out_dir).expanduser()
    target = (root / target if not target.is_absolute() else target).resolve()
    if user.role != Role.ADMIN and (target == root or not is_inside(target, root)):
        raise HTTPException(
            403,
            f"out_dir '{out_dir}' is not inside your folder {root} (paths are resolved: '..' "
            "and symbolic links count). Fix: name a folder inside it, e.g. 'exports/my-model'.",
        )
    return target


@router.post("/jobs/{job_id}/merge", response_model=MergeResult, responses=_ERRORS)
def merge_job(
    job_id: str, body: MergeRequest, request: Request, user: TrainerDep, service: ServiceDep
) -> MergeResult:
    """Merge a LoRA job's adapter into its base model and save it (safetensors)."""
    owned_job(service, user, job_id)
    out = _out_dir(service, user, body.out_dir) if body.out_dir else None
    request.state.audit_detail = f"out_dir={out}" if out else None
    return service.merge_model(job_id, out, force=body.force)


@router.post("/jobs/{job_id}/export", response_model=ExportResult, responses=_ERRORS)
def export_job(
    job_id: str, body: ExportRequest, request: Request, user: TrainerDep, service: ServiceDep
) -> ExportResult:
    """Write the model (merged if LoRA, unless adapter_only), its tokenizer and a
    README.md model card (base model, data hash, config, metrics) to out_dir."""
    owned_job(service, user, job_id)
    out = _out_dir(service, user, body.out_dir)
    request.state.audit_detail = f"out_dir={out}"
    return service.export_model(
        job_id,
        out,
        adapter_only=body.adapter_only,
        force=body.force,
        full_config=body.full_config,
        format=body.format,
        quant=body.quant,
        verify=body.verify,
    )


class VerifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(
        min_length=1,
        max_length=MAX_PATH,
        description="The export's folder (or the .gguf file in it). Non-admins: inside "
        "FLEXTRAIN_HOME/outputs/NAME (relative paths start there).",
    )

    _check_path = field_validator("path")(_no_nul)


@router.post("/jobs/{job_id}/verify", response_model=ParityReport, responses=_ERRORS)
def verify_export(
    job_id: str, body: VerifyRequest, user: TrainerDep, service: ServiceDep
) -> ParityReport:
    """Check an export of this job made earlier: complete for its runtime, same tokens and
    chat template, same answers (`passed`, and `problems` when not)."""
    owned_job(service, user, job_id)
    return service.verify_export(_out_dir(service, user, body.path), job_id=job_id)


@router.post("/jobs/{job_id}/try", response_model=TryResult, responses=_ERRORS)
def try_job(job_id: str, body: TryRequest, user: TrainerDep, service: ServiceDep) -> TryResult:
    """The trained and the base model's answers to each text: greedy generations for
    language models, label and scores for classifiers."""
    visible_job(service, user, job_id)
    return service.try_model(job_id, body.texts, max_new_tokens=body.max_new_tokens, chat=body.chat)


@router.post("/jobs/{job_id}/evaluate", response_model=EvaluationResult, responses=_ERRORS)
def evaluate_job(
    job_id: str, body: EvaluateRequest, request: Request, user: TrainerDep, service: ServiceDep
) -> EvaluationResult:
    """Loss and perplexity, or accuracy and macro F1, of the trained and the base model
    on a dataset (at most 10,000 rows), tokenised as the job's training data was."""
    visible_job(service, user, job_id)
    confine_dataset(service, user, body.dataset_id)
    split = body.split or "default"
    request.state.audit_detail = f"dataset={body.dataset_id or 'own'} split={split}"
    return service.evaluate_model(
        job_id,
        body.dataset_id,
        split=body.split,
        limit=body.limit,
        batch_size=body.batch_size,
    )
