"""A completed job's saved model: where it is, what it was trained as, how to load it.

Merging, exporting, trying and evaluating all start here. The job's model folder
holds the weights (or, for lora_adaptation, the peft adapter), the tokenizer the
job saved and `flextrain.json` (objective, base model, labels, metrics); the job's
`job.json` is the run spec the worker read, so what comes after training knows
exactly how the data was rendered and tokenised.

Models load on the CPU in float32, in the calling process: these are inference
passes, and a GPU in use by a training job is not ours to fill. torch,
transformers and peft are imported inside the functions (this module is imported
by the front ends, which must start without them).
"""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from flextrain.config.enums import TrainingStatus
from flextrain.config.rules_quant import bitsandbytes_installed
from flextrain.errors import ConflictError, InvalidInputError
from flextrain.jobs.errors import JobStateError
from flextrain.jobs.spec import RunSpec
from flextrain.jobs.store import TrainingJob

if TYPE_CHECKING:
    from flextrain.data.registry import DatasetInfo
    from flextrain.jobs.environment import TrainingEnvironment
    from flextrain.models.resolve import ResolvedModel
    from flextrain.settings import Settings


class CompletedJobs(Protocol):
    """What the after-training commands need of the service (the facade satisfies it):
    a job, its folders, a model id resolved, a dataset looked up."""

    settings: Settings

    def require_job(self, job_id: str) -> TrainingJob: ...

    def environment(self, job_id: str) -> TrainingEnvironment: ...

    def resolve_model(self, model_id: str) -> ResolvedModel: ...

    def get_dataset(self, ref: str) -> DatasetInfo: ...


T = TypeVar("T")

META_FILE = "flextrain.json"


class AfterTrainingError(InvalidInputError, ValueError):
    """What was asked cannot be done with this job or this data; the message says why
    and what to do instead."""

    code = "after_training"
    field = "job_id"


class OutputExistsError(ConflictError, AfterTrainingError):
    """The folder to write holds something already; nothing was written."""

    code = "output_exists"
    field = "out_dir"


@dataclass(frozen=True)
class TrainedModel:
    """A completed job's model folder, its flextrain.json and its run spec."""

    job: TrainingJob
    folder: Path
    meta: dict[str, Any]
    spec: RunSpec
    base_path: Path
    allow_pickle: bool

    @property
    def objective(self) -> str:
        return str(self.meta["objective"])

    @property
    def is_adapter(self) -> bool:
        return bool(self.meta.get("adapter"))

    @property
    def labels(self) -> list[str]:
        return [str(label) for label in self.meta.get("labels") or []]

    @property
    def quantization(self) -> dict[str, Any] | None:
        """How training held the base weights: 4-bit for QLoRA, else None."""
        found = self.meta.get("base_quantization")
        return found if isinstance(found, dict) else None

    @property
    def base_model(self) -> str:
        return str(self.meta.get("base_model") or self.job.model_id)


def trained_model(service: CompletedJobs, job_id: str, action: str) -> TrainedModel:
    """The saved model of a completed job, or an error saying why `action` cannot run.

    A job that has not completed raises JobStateError (it may still finish); a
    completed job whose folder was deleted raises AfterTrainingError.
    """
    job = service.require_job(job_id)
    if job.status != TrainingStatus.COMPLETED:
        hint = (
            "wait for it to finish (`flextrain jobs show`)"
            if not job.is_finished
            else "resume it (`flextrain jobs resume`) or train again"
        )
        raise JobStateError(
            f"Job {job_id} is {job.status.value}; {action} needs a completed job. Fix: {hint}."
        )
    folder = Path(job.model_path or service.environment(job_id).model_dir)
    meta_file = folder / META_FILE
    spec_file = service.environment(job_id).config_file
    if not meta_file.is_file() or not spec_file.is_file():
        missing = meta_file if not meta_file.is_file() else spec_file
        raise AfterTrainingError(
            f"Job {job_id} completed but {missing} is missing (deleted or moved?), so its "
            "model cannot be loaded. Fix: train the job's config again."
        )
    meta = json.loads(meta_file.read_text())
    spec = RunSpec.model_validate_json(spec_file.read_text())
    base_path = Path(str(meta.get("base_model_path") or ""))
    if not (base_path / "config.json").is_file():
        # The folder it trained from is gone (a cleared cache): resolve the id again.
        base_path = service.resolve_model(str(meta.get("base_model") or job.model_id)).path
    return TrainedModel(
        job=job,
        folder=folder,
        meta=meta,
        spec=spec,
        base_path=base_path,
        allow_pickle=service.settings.allow_pickle_weights,
    )


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """No progress bars and no load report while loading and saving: a head created
    for the task is expected here (the report would list it as MISSING), and the
    output is a table or JSON a user reads."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            # peft asks transformers a question transformers 5 renamed; nothing to act on.
            warnings.filterwarnings("ignore", ".*is_gradient_checkpointing", FutureWarning)
            yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def auto_class(objective: str) -> Any:
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForMaskedLM,
        AutoModelForSequenceClassification,
    )

    return {
        "causal_lm": AutoModelForCausalLM,
        "masked_lm": AutoModelForMaskedLM,
        "sequence_classification": AutoModelForSequenceClassification,
    }[objective]


def load_tokenizer(model: TrainedModel) -> Any:
    """The tokenizer the job saved (with the chat template it trained with, if any)."""
    from flextrain.models.heavy import load_transformers

    load_transformers()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model.folder))
    if tokenizer.pad_token is None:
        # As in training: padding positions are masked, any known token serves.
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer


def load_base_weights(model: TrainedModel, tokenizer: Any) -> Any:
    """The base model as training loaded it (same head size and label names); a head
    the base lacks is initialised from the job's seed, so it is the same every call."""
    import torch

    kwargs: dict[str, Any] = {}
    if model.objective == "sequence_classification":
        labels = model.labels
        kwargs = {
            "num_labels": len(labels),
            "id2label": dict(enumerate(labels)),
            "label2id": {name: i for i, name in enumerate(labels)},
            "pad_token_id": tokenizer.pad_token_id,
        }
    torch.manual_seed(model.spec.config.seed)
    with quiet_transformers():
        loaded = auto_class(model.objective).from_pretrained(
            str(model.base_path),
            dtype=torch.float32,
            use_safetensors=None if model.allow_pickle else True,
            **kwargs,
            **_as_trained_on(model),
        )
        if model.quantization:
            loaded = loaded.dequantize()
    if getattr(loaded.config, "pad_token_id", None) is None:
        loaded.config.pad_token_id = tokenizer.pad_token_id
    return loaded


def _as_trained_on(model: TrainedModel) -> dict[str, Any]:
    """A QLoRA job's base is loaded 4-bit as training held it, then dequantized to
    float32 before any forward (bitsandbytes repacks CPU weights at the first one).
    The adapter learned to correct *those* weights: merged onto the originals it would
    answer differently from the model that was trained and evaluated; merged onto the
    dequantized ones it answers the same, at float32 in any runtime."""
    quant = model.quantization
    if not quant:
        return {}
    if not bitsandbytes_installed():
        raise AfterTrainingError(
            f"Job {model.job.job_id} trained its adapter on a 4-bit base (QLoRA); loading "
            "that base needs the bitsandbytes package, not installed here. Fix: pip "
            "install 'flextrain[qlora]'."
        )
    import torch

    from flextrain.models.quantize import KEEP_OUTSIDE_BLOCKS, bnb_4bit_config

    config = bnb_4bit_config(
        quant["quant_type"],
        quant["double_quant"],
        torch.float32,
        keep=quant.get("kept", KEEP_OUTSIDE_BLOCKS),
    )
    return {"quantization_config": config, "device_map": {"": "cpu"}}


def load_trained(model: TrainedModel, tokenizer: Any) -> Any:
    """The trained model in eval mode: the saved weights, or base + adapter (a PeftModel)."""
    import torch

    from flextrain.models.heavy import load_transformers

    load_transformers()
    if model.is_adapter:
        from peft import PeftModel

        base = load_base_weights(model, tokenizer)
        with quiet_transformers():
            loaded = PeftModel.from_pretrained(base, str(model.folder))
    else:
        with quiet_transformers():
            loaded = auto_class(model.objective).from_pretrained(
                str(model.folder),
                dtype=torch.float32,
                use_safetensors=None if model.allow_pickle else True,
            )
    loaded.eval()
    return loaded


def load_base(model: TrainedModel, tokenizer: Any) -> Any:
    """The base model alone, in eval mode."""
    from flextrain.models.heavy import load_transformers

    load_transformers()
    loaded = load_base_weights(model, tokenizer)
    loaded.eval()
    return loaded


def on_trained_and_base(
    model: TrainedModel, tokenizer: Any, run: Callable[[Any], T]
) -> tuple[T, T]:
    """`run` on the trained model, then on the base: with an adapter, the same model
    with the adapter switched off (one copy of the weights in memory); otherwise the
    base is loaded after the trained model is released."""
    import gc

    import torch

    trained_model_ = load_trained(model, tokenizer)
    with torch.no_grad():
        trained = run(trained_model_)
        if model.is_adapter:
            with trained_model_.disable_adapter():
                return trained, run(trained_model_)
    del trained_model_
    gc.collect()
    base_model = load_base(model, tokenizer)
    with torch.no_grad():
        return trained, run(base_model)


def base_notes(model: TrainedModel) -> list[str]:
    """What a reader of a side-by-side comparison must know about the base column."""
    notes = []
    if model.objective == "sequence_classification":
        notes.append(
            f"base: {model.base_model} with an untrained classification head (random, seeded "
            f"with {model.spec.config.seed}); its labels and scores are chance, shown as the "
            "starting point training improved on."
        )
    if model.job.training_type.value == "full_training":
        notes.append(
            f"base: the published weights of {model.base_model}; this job trained the "
            "architecture from random initialisation, not from them."
        )
    return notes
