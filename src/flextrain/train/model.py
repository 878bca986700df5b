"""Build the model for a run: pretrained or from config, with LoRA when asked."""

from __future__ import annotations

from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
)

from flextrain.config.enums import TrainingType
from flextrain.jobs.spec import RunSpec
from flextrain.models.inspect import choose_lora_targets

_AUTO = {
    "sequence_classification": AutoModelForSequenceClassification,
    "causal_lm": AutoModelForCausalLM,
    "masked_lm": AutoModelForMaskedLM,
}


def load_tokenizer(spec: RunSpec) -> Any:
    tokenizer = AutoTokenizer.from_pretrained(spec.model_path)
    if tokenizer.pad_token is None:
        # Decoder tokenizers often lack a pad token; padding positions are masked anyway.
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer


def build_model(spec: RunSpec, tokenizer: Any) -> tuple[Any, list[str]]:
    """The model to train and the names of modules created fresh (not loaded)."""
    auto = _AUTO[spec.objective]
    kwargs: dict[str, Any] = {}
    if spec.objective == "sequence_classification":
        labels = spec.data.labels
        kwargs = {
            "num_labels": len(labels),
            "id2label": dict(enumerate(labels)),
            "label2id": {name: i for i, name in enumerate(labels)},
            "pad_token_id": tokenizer.pad_token_id,
        }
    attention: dict[str, Any] = {}
    if spec.config.attn_implementation:
        attention["attn_implementation"] = spec.config.attn_implementation
    fresh: list[str] = []
    # Seeded before any weight is drawn (a model from scratch, a fresh classification
    # head, LoRA's A matrices): the same config gives the same run whatever the process
    # did before (a warm worker, an in-process test, a cold start).
    torch.manual_seed(spec.config.seed)
    if spec.config.training_type == TrainingType.FULL_TRAINING:
        config = AutoConfig.from_pretrained(spec.model_path, **kwargs)
        model = auto.from_config(config, **attention)
    else:
        # Safetensors only unless an admin allows pickles (None: prefer safetensors).
        model, info = auto.from_pretrained(
            spec.model_path,
            output_loading_info=True,
            dtype=torch.float32,
            use_safetensors=None if spec.allow_pickle_weights else True,
            **kwargs,
            **attention,
            **quantized_loading(spec),
        )
        # Module paths (not parameter names) of weights the checkpoint lacked.
        fresh = sorted({key.rsplit(".", 1)[0] for key in info.get("missing_keys", [])})
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if spec.config.uses_lora:
        if spec.config.load_in_4bit:
            model = _ready_for_4bit_training(model)
        model = _wrap_lora(model, spec, fresh)
    return model, fresh


def quantized_loading(spec: RunSpec) -> dict[str, Any]:
    """from_pretrained's arguments for a QLoRA run's 4-bit base (none otherwise).

    The 4-bit matmuls compute in the run's precision (bf16/fp16 under mixed precision,
    float32 otherwise). A quantized model cannot be moved after loading, so it is
    placed on this process's device at once: its GPU under torchrun, else the CPU.
    """
    cfg = spec.config
    if not cfg.load_in_4bit:
        return {}
    from flextrain.models.quantize import bnb_4bit_config
    from flextrain.train import distributed

    compute = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(spec.precision, torch.float32)
    quant = bnb_4bit_config(cfg.bnb_4bit_quant_type, cfg.bnb_4bit_use_double_quant, compute)
    device: int | str = distributed.local_rank() if torch.cuda.is_available() else "cpu"
    return {"quantization_config": quant, "device_map": {"": device}}


def _ready_for_4bit_training(model: PreTrainedModel) -> Any:
    """peft's preparation of a k-bit model: every base weight frozen, and those left
    unquantized (norms, embeddings, heads) in float32, so the small updates of a
    training step are not lost to 16-bit rounding. Gradient checkpointing is left to
    the Trainer, which turns it on (non-reentrant: frozen inputs need no grad) for
    every run alike."""
    from peft import prepare_model_for_kbit_training

    for module in model.modules():
        # bitsandbytes (0.50) repacks a 4-bit weight for its CPU inference kernel at the
        # first forward in eval mode (our evaluation before training) and never unpacks
        # it: every training forward after that runs the inference kernel, which has no
        # backward, so gradients silently stop at each base weight (and a biased layer
        # fails). Off, every forward dequantizes and multiplies in the compute dtype.
        if hasattr(module, "support_avx512bf16_for_cpu"):
            setattr(module, "support_avx512bf16_for_cpu", False)  # noqa: B010
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)


def linear_module_names(model: PreTrainedModel) -> frozenset[str]:
    return frozenset(
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear)
    )


def _wrap_lora(model: PreTrainedModel, spec: RunSpec, fresh: list[str]) -> Any:
    from peft import LoraConfig, TaskType, get_peft_model

    cfg = spec.config
    targets = spec.lora_target_modules or choose_lora_targets(linear_module_names(model))
    task_type = {
        "sequence_classification": TaskType.SEQ_CLS,
        "causal_lm": TaskType.CAUSAL_LM,
        "masked_lm": None,
    }[spec.objective]
    # Heads created fresh for this task are random: they must train in full,
    # or the adapter would be learning to feed a fixed random projection.
    modules_to_save = [m for m in fresh if m not in targets] or None
    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=targets,
        task_type=task_type,
        modules_to_save=modules_to_save,
        bias="none",
    )
    return get_peft_model(model, lora)
