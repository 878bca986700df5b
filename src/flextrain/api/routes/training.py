"""The seed's endpoints under /api/training, plus logs, metrics and a live event stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.sse import EventSourceResponse, ServerSentEvent

from flextrain.accounts.users import Role, User
from flextrain.api.deps import (
    ServiceDep,
    TrainerDep,
    ViewerDep,
    check_queue_quota,
    confine_config,
    confine_dataset,
    confine_model,
    confine_reads,
    owned_job,
    visible_job,
)
from flextrain.api.errors import APIError
from flextrain.api.routes.models import search_listing
from flextrain.api.routing import StrictJSONRoute
from flextrain.api.schemas import (
    CompatibilityRequest,
    ErrorBody,
    ExpertCheck,
    ExpertYaml,
    FieldError,
    JobTimeline,
    LogTail,
    MetricHistory,
    SystemSamples,
    TrainableModel,
)
from flextrain.config.enums import TrainingMode, TrainingStatus
from flextrain.config.errors import field_messages
from flextrain.config.presets import describe_presets
from flextrain.config.schemas import (
    AdvancedTrainingConfig,
    BasicTrainingConfig,
    ExpertTrainingConfig,
)
from flextrain.config.usercode import code_digest
from flextrain.config.validation import (
    ConfigValidationError,
    TrainingParameterValidator,
    ValidationIssue,
)
from flextrain.hardware.detect import HardwareConstraints
from flextrain.public import ModelCompatibility, ModelFilters, QueueSnapshot, TrainingJob
from flextrain.service import TrainingService

router = APIRouter(prefix="/api/training", tags=["training"], route_class=StrictJSONRoute)


def _visible_job(job_id: str, user: ViewerDep, service: ServiceDep) -> TrainingJob:
    return visible_job(service, user, job_id)


VisibleJobDep = Annotated[TrainingJob, Depends(_visible_job)]

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "No valid token."},
    403: {"model": ErrorBody, "description": "The role may not do this."},
    422: {"model": ErrorBody, "description": "Invalid input; each field named."},
}
_JOB_ERRORS: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    404: {"model": ErrorBody, "description": "No such job (or not yours)."},
    409: {"model": ErrorBody, "description": "The job's state does not allow this."},
}

# How often the event stream looks at the job store. Progress is written by
# the worker at each logging step, so half a second is live enough.
EVENT_POLL_SECONDS = 0.5


@router.post("/compatibility/check", response_model=ModelCompatibility, responses=_ERRORS)
def check_compatibility(
    body: CompatibilityRequest, user: ViewerDep, service: ServiceDep
) -> ModelCompatibility:
    """Is this model trainable this way, how much memory and time will it take."""
    if body.probe and not user.role.allows(Role.TRAINER):
        raise APIError(
            403,
            "Running the calibration probe needs the 'trainer' role.",
            field="probe",
            fix="leave probe off (the estimate needs no probe), or ask an admin for the "
            "trainer role.",
        )
    confine_dataset(service, user, body.dataset_id)
    confine_model(service, user, body.model_id)
    if body.config is not None:
        confine_reads(service, user, body.config)
    return service.check_compatibility(
        body.model_id,
        body.training_type,
        config=body.config,
        dataset_id=body.dataset_id,
        batch_size=body.batch_size,
        max_length=body.max_length,
        probe=body.probe,
    )


@router.get("/models/trainable", response_model=list[TrainableModel], responses=_ERRORS)
def trainable_models(
    filters: Annotated[ModelFilters, Query()],
    response: Response,
    user: ViewerDep,
    service: ServiceDep,
) -> list[TrainableModel]:
    """Built-in and registered models with the training types each supports; hub models too
    when a filter is given (or include_hub=true) and the server is online. The header
    X-Flextrain-Notes says when the hub was not searched (GET /api/training/models/search
    gives the same list with the notes in its body)."""
    items, notes = search_listing(service, user, filters)
    if notes:
        response.headers["X-Flextrain-Notes"] = " | ".join(notes)
    return items


@router.get("/presets", response_model=dict[str, dict[str, dict[str, Any]]], responses=_ERRORS)
def presets(user: ViewerDep) -> dict[str, dict[str, dict[str, Any]]]:
    """Each basic-mode preset's knob values, per training type (explicit values win)."""
    return describe_presets()


PriorityQuery = Annotated[
    int,
    Query(
        ge=-1000,
        le=1000,
        description="Queue priority once started: higher starts first, equal ones in order. "
        "Above 0 needs the admin role.",
    ),
]


def _allowed_priority(user: User, priority: int) -> int:
    """Trainers may queue at the default priority or below; raising a job above everyone
    else's is an admin's call, so that users sharing a machine wait their turn."""
    if priority > 0 and not user.role.allows(Role.ADMIN):
        raise APIError(
            403,
            f"priority {priority} needs the 'admin' role; trainers may use 0 or below. "
            "Fix: leave priority at 0, or ask an admin.",
            field="priority",
        )
    return priority


def _create(
    config: BasicTrainingConfig,
    mode: TrainingMode,
    request: Request,
    user: User,
    service: TrainingService,
    priority: int,
) -> TrainingJob:
    """What every create route does: confine the config's paths to what the user may
    name, record the job under their name at an allowed priority, audit its id."""
    confine_config(service, user, config)
    job = service.create_job(
        config, mode=mode, owner=user.name, priority=_allowed_priority(user, priority)
    )
    request.state.audit_target = job.job_id
    return job


@router.post("/jobs/basic", response_model=TrainingJob, status_code=201, responses=_ERRORS)
def create_basic_job(
    config: BasicTrainingConfig,
    request: Request,
    user: TrainerDep,
    service: ServiceDep,
    priority: PriorityQuery = 0,
) -> TrainingJob:
    """Validate and record a PENDING job from a basic (preset) config."""
    return _create(config, TrainingMode.BASIC, request, user, service, priority)


@router.post("/jobs/advanced", response_model=TrainingJob, status_code=201, responses=_ERRORS)
def create_advanced_job(
    config: AdvancedTrainingConfig,
    request: Request,
    user: TrainerDep,
    service: ServiceDep,
    priority: PriorityQuery = 0,
) -> TrainingJob:
    """Validate and record a PENDING job with every Trainer knob."""
    return _create(config, TrainingMode.ADVANCED, request, user, service, priority)


@router.post("/jobs/expert", response_model=TrainingJob, status_code=201, responses=_ERRORS)
def create_expert_job(
    config: ExpertTrainingConfig,
    request: Request,
    user: TrainerDep,
    service: ServiceDep,
    priority: PriorityQuery = 0,
) -> TrainingJob:
    """Validate and record a PENDING expert job: custom loss, optimizer, schedule
    expression, hooks. Naming user code (loss.function, optimizer.factory, callbacks,
    trainer_class) runs that code on the server, so it needs the admin role; the audit log
    records each file's SHA-256. The built-in losses and the expression schedule are data,
    allowed for trainers."""
    if config.user_code:
        if not user.role.allows(Role.ADMIN):
            raise APIError(
                403,
                f"This config names user code ({', '.join(config.user_code)}), which runs on "
                "the server: only an admin may create it. Fix: use the built-in losses, "
                "optimizers and lr_schedule_expr, or ask an admin.",
                field="code_dir",
            )
        digests = code_digest(config.user_code, config.code_dir)
        request.state.audit_detail = "user code in {}: {}".format(
            config.code_dir, ", ".join(f"{path} sha256={h}" for path, h in digests.items())
        )
    return _create(config, TrainingMode.EXPERT, request, user, service, priority)


# Keys the expert section may set (the rest of a job is the form's own fields).
EXPERT_KEYS = frozenset(ExpertTrainingConfig.model_fields) - frozenset(
    AdvancedTrainingConfig.model_fields
)


@router.post("/expert/check", response_model=ExpertCheck, responses=_ERRORS)
def check_expert_yaml(body: ExpertYaml, user: TrainerDep) -> ExpertCheck:
    """Parse the web form's expert YAML and check it as the job will be (user code is
    read, not run): 422 with the line for bad YAML or the field for a bad value."""
    from pydantic import ValidationError

    from flextrain.config.yamltext import YamlTextError, load_config_text

    try:
        data = load_config_text(body.yaml) if body.yaml.strip() else {}
    except YamlTextError as exc:
        where = f" at line {exc.line}, column {exc.column}" if exc.line else ""
        problem = exc.problem
        raise APIError(
            422,
            f"The expert YAML does not parse{where}: {problem}.",
            field="yaml",
            fix=f"correct the YAML{where} (indent with spaces, 'key: value' per line).",
        ) from None
    if not isinstance(data, dict):
        raise APIError(
            422,
            "The expert YAML must be a mapping of config keys, e.g. `lr_schedule_expr: lr`.",
            field="yaml",
            fix="write one 'key: value' per line, e.g. `lr_schedule_expr: lr`.",
        )
    if data.get("code_dir") and not user.role.allows(Role.ADMIN):
        raise APIError(
            403,
            "code_dir: user code is read from the server's disk, so only an admin may name "
            "it. Fix: remove code_dir and use the built-in losses and lr_schedule_expr.",
            field="yaml.code_dir",
        )
    unknown = sorted(set(data) - EXPERT_KEYS)
    if unknown:
        raise APIError(
            422,
            f"Not expert keys: {', '.join(map(str, unknown))} (set those in the form). Expert "
            f"keys: {', '.join(sorted(EXPERT_KEYS))}.",
            field="yaml",
            fix=f"move {', '.join(map(str, unknown))} to the form, and keep only expert keys "
            "in the YAML.",
        )
    try:
        config = ExpertTrainingConfig(
            model_id="-", dataset_id="-", training_type="fine_tuning", **data
        )
    except ValidationError as exc:
        issues = [
            ValidationIssue(field, message, "see the field's help.")
            for field, message in field_messages(exc.errors())
        ]
        raise ConfigValidationError(issues) from None
    found = [
        i
        for i in TrainingParameterValidator().validate(config)
        if i.field.split(".")[0].split("[")[0] in EXPERT_KEYS
    ]
    if not user.role.allows(Role.ADMIN):
        # Said first, on the field that names the code: where the code is read from
        # does not matter to someone who may not run it.
        named = _user_code_fields(config)
        found = [i for i in found if i.field not in named]
        found += [
            ValidationIssue(
                field,
                "names user code, which runs on the server: only an admin may create a "
                "job with it.",
                "use the built-in losses, optimizers and lr_schedule_expr, or ask an admin.",
            )
            for field in named
        ]
    as_error = [FieldError(field=i.field, message=i.message, fix=i.fix) for i in found]
    return ExpertCheck(
        config=data,
        issues=[e for e, i in zip(as_error, found, strict=True) if i.severity == "error"],
        warnings=[e for e, i in zip(as_error, found, strict=True) if i.severity == "warning"],
    )


def _user_code_fields(config: ExpertTrainingConfig) -> list[str]:
    """The fields of `config` that name user code (code execution on the server)."""
    optimizer = config.optimizer
    given = {
        "loss.function": config.loss.function,
        "optimizer.factory": optimizer.factory if optimizer else None,
        "callbacks": config.callbacks,
        "trainer_class": config.trainer_class,
        "reward_functions": config.reward_functions,
    }
    return [field for field, value in given.items() if value]


@router.post("/jobs/{job_id}/start", response_model=TrainingJob, responses=_JOB_ERRORS)
def start_job(job_id: str, user: TrainerDep, service: ServiceDep) -> TrainingJob:
    """Submit a pending job: it starts now when the machine has room, else it is returned
    `queued` with its `wait_reason` and starts by itself later."""
    owned_job(service, user, job_id)
    check_queue_quota(service, user)
    return service.start_job(job_id)


@router.post("/jobs/{job_id}/cancel", response_model=TrainingJob, responses=_JOB_ERRORS)
def cancel_job(job_id: str, user: TrainerDep, service: ServiceDep) -> TrainingJob:
    owned_job(service, user, job_id)
    return service.cancel_job(job_id)


@router.post("/jobs/{job_id}/resume", response_model=TrainingJob, responses=_JOB_ERRORS)
def resume_job(job_id: str, user: TrainerDep, service: ServiceDep) -> TrainingJob:
    """Continue an interrupted, cancelled, failed, diverged or paused job from its latest
    checkpoint (409 for a job in any other state)."""
    owned_job(service, user, job_id)
    check_queue_quota(service, user)
    return service.resume_job(job_id)


@router.get("/jobs/{job_id}", response_model=TrainingJob, responses=_JOB_ERRORS)
def get_job(job_id: str, user: ViewerDep, service: ServiceDep) -> TrainingJob:
    return visible_job(service, user, job_id)


@router.get("/jobs", response_model=list[TrainingJob], responses=_ERRORS)
def list_jobs(
    request: Request,
    response: Response,
    user: ViewerDep,
    service: ServiceDep,
    status: TrainingStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1 << 40)] = 0,
) -> list[TrainingJob]:
    """The jobs, newest first, as the list the seed describes; trainers see their own,
    viewers and admins every job. Paged by `limit` and `offset`: the `X-Total-Count`
    header says how many there are, and a `Link` header with rel="next" where the page
    is not the last (the convention of GitHub's and most REST APIs, which keeps the body
    a plain list)."""
    owner = user.name if user.role == Role.TRAINER else None
    jobs = service.list_jobs(status=status, owner=owner, limit=limit, offset=offset)
    total = service.count_jobs(status=status, owner=owner)
    response.headers["X-Total-Count"] = str(total)
    if offset + len(jobs) < total:
        following = request.url.include_query_params(limit=limit, offset=offset + limit)
        response.headers["Link"] = f'<{following.path}?{following.query}>; rel="next"'
    return jobs


@router.get("/jobs/{job_id}/logs", response_model=LogTail, responses=_JOB_ERRORS)
def job_logs(
    job_id: str,
    user: ViewerDep,
    service: ServiceDep,
    tail: Annotated[int, Query(ge=1, le=10000)] = 200,
) -> LogTail:
    visible_job(service, user, job_id)
    text = service.read_log(job_id, tail=tail)
    return LogTail(job_id=job_id, lines=text.splitlines())


@router.get("/jobs/{job_id}/metrics", response_model=MetricHistory, responses=_JOB_ERRORS)
def job_metrics(job_id: str, user: ViewerDep, service: ServiceDep) -> MetricHistory:
    """Every logged step (loss, learning rate, ...) and evaluation, oldest first."""
    visible_job(service, user, job_id)
    return MetricHistory(job_id=job_id, history=service.metric_history(job_id))


@router.get("/jobs/{job_id}/timeline", response_model=JobTimeline, responses=_JOB_ERRORS)
def job_timeline(job_id: str, user: ViewerDep, service: ServiceDep) -> JobTimeline:
    """Warnings (memory above 90%), interruptions, resumes and early stops, oldest first."""
    visible_job(service, user, job_id)
    return JobTimeline(job_id=job_id, events=service.events(job_id))


@router.get("/jobs/{job_id}/system", response_model=SystemSamples, responses=_JOB_ERRORS)
def job_system(job_id: str, user: ViewerDep, service: ServiceDep) -> SystemSamples:
    """CPU, memory and GPU use sampled while the job ran, oldest first."""
    visible_job(service, user, job_id)
    return SystemSamples(job_id=job_id, samples=service.system_samples(job_id))


@router.get(
    "/jobs/{job_id}/events",
    response_class=EventSourceResponse,
    responses={
        **_JOB_ERRORS,
        200: {
            "description": "Server-Sent Events: `progress` (the job), `metric` (one history "
            "row), `notice` (one timeline event: a warning, a resume), `end` (final status), "
            "then the stream closes.",
            "content": {"text/event-stream": {}},
        },
    },
)
async def job_events(
    request: Request, job: VisibleJobDep, service: ServiceDep
) -> AsyncIterator[ServerSentEvent]:
    """Live progress of one job until it finishes.

    The job is looked up by a dependency, which runs before the stream starts,
    so an unknown (or someone else's) job is a 404, not an empty stream.
    """
    job_id = job.job_id
    # Metric events carry their position as the event id, so a client that
    # reconnects with Last-Event-ID gets only the rows it has not seen.
    resume_from = request.headers.get("last-event-id", "")
    sent_metrics = int(resume_from) if resume_from.isdigit() else 0
    last_update = None
    sent_notice = 0
    while True:
        if job.updated_at != last_update:
            last_update = job.updated_at
            yield ServerSentEvent(data=job.model_dump(mode="json"), event="progress")
        history = await asyncio.to_thread(service.metric_history, job_id)
        for index, row in enumerate(history[sent_metrics:], start=sent_metrics + 1):
            yield ServerSentEvent(data=row, event="metric", id=str(index))
        sent_metrics = len(history)
        notices = await asyncio.to_thread(service.events, job_id, sent_notice)
        for notice in notices:
            yield ServerSentEvent(data=notice.model_dump(mode="json"), event="notice")
            sent_notice = notice.id
        if job.is_finished:
            yield ServerSentEvent(
                data={
                    "job_id": job_id,
                    "status": job.status.value,
                    "at": datetime.now(UTC).isoformat(),
                },
                event="end",
            )
            return
        if await request.is_disconnected():
            return
        await asyncio.sleep(EVENT_POLL_SECONDS)
        job = await asyncio.to_thread(service.require_job, job_id)


@router.get("/queue", response_model=QueueSnapshot, responses=_ERRORS)
def job_queue(user: ViewerDep, service: ServiceDep) -> QueueSnapshot:
    """Queued jobs in the order they start, each with why it waits, and the running jobs
    with the GPUs and CPU threads they hold. Trainers see their own jobs; positions and
    the machine's totals count everyone's."""
    snapshot = service.queue()
    if user.role != Role.TRAINER:
        return snapshot
    return snapshot.model_copy(
        update={
            "queued": [q for q in snapshot.queued if q.owner == user.name],
            "running": [r for r in snapshot.running if r.owner == user.name],
        }
    )


@router.get("/hardware", response_model=HardwareConstraints, responses=_ERRORS)
def hardware(user: ViewerDep, service: ServiceDep) -> HardwareConstraints:
    return service.hardware()
