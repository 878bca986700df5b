"""Peak training memory from a model's config, as parts a user can act on.

Sources (see shared ESTIMATION.md): bytes per parameter from HF's "model
memory anatomy" (fp32 AdamW 16 B: weights 4, grads 4, moments 8); LoRA sizes
r·(d_in + d_out) per adapted matrix (LoRA paper); activations per layer after
Korthikanti et al. 2022, with full recompute keeping only each layer's input;
logits b·s·V at several bytes per element for the loss. Coefficients marked
"measured" were fitted on this project's machines by
benchmarks/estimate_accuracy.py and are re-checked there.

Preference and reward training (DPO, ORPO, KTO, SimPO, GRPO) adds three things:
a pair's two sequences go through the model together (activations and logits of
twice the rows), a frozen reference copy of the weights when the run trains every
weight against one (DPO, KTO; not with LoRA, whose reference is the adapter-off
base, nor with precomputed reference log-probs), and for GRPO the sampling of
`num_generations` completions per prompt: a KV cache of 2·L·kv_heads·head_dim
values per token of every sequence, alive before the training forward.

The peak is not the sum of every part: on CPU gradients appear while
activations are freed during backward, so the peak is weights + optimizer
states + the larger of (activations + logits) and (gradients + optimizer-step
temporaries). With gradient accumulation the gradients stay, and they add; on
CUDA reserved memory behaves as if they add too (the caching allocator).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from flextrain.estimate.quant import bytes_per_4bit_weight, quantized_weights

Precision = Literal["fp32", "fp16", "bf16"]
Device = Literal["cpu", "cuda"]
Strategy = Literal["single", "ddp", "fsdp"]
_GIB = 1024**3

# Optimizer state bytes per trainable parameter (HF model memory anatomy).
OPTIMIZER_STATE_BYTES: dict[str, float] = {
    "adamw_torch": 8.0,
    "adamw_torch_fused": 8.0,
    "adamw_bnb_8bit": 2.0,
    "adamw_8bit": 2.0,
    "sgd": 0.0,  # Trainer's SGD has no momentum by default
    "adagrad": 4.0,
    "rmsprop": 4.0,
    "adafactor": 0.5,  # factored second moments: (rows + cols) per matrix
}
# Temporaries of one optimizer step, per trainable parameter (foreach kernels).
OPTIMIZER_STEP_TEMP_BYTES: dict[str, float] = {"adamw_torch": 4.0, "adamw_torch_fused": 0.0}

# Measured on this project's CPU machine (torch 2.13, transformers 5.24): resident
# memory of a worker after importing torch, transformers, datasets and peft.
CPU_BASELINE_BYTES = 520 * 1024**2
# Trainer, data loader and allocator slack on top of the parts (measured, CPU).
CPU_RUNTIME_OVERHEAD_BYTES = 48 * 1024**2
# Typical CUDA context outside the caching allocator (HF docs: 0.3-2 GB); reported,
# not added to the reserved-memory peak, which the allocator alone accounts.
CUDA_CONTEXT_BYTES = 600 * 1024**2


@dataclass(frozen=True)
class Architecture:
    """What the estimate needs to know about a model, all from its config."""

    num_parameters: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    vocab_size: int
    is_encoder: bool
    linear_layers: tuple[tuple[str, int, int], ...] = ()
    model_type: str = ""
    tie_word_embeddings: bool = True


@dataclass(frozen=True)
class TrainingSetup:
    """The knobs that change memory."""

    objective: Literal["causal_lm", "masked_lm", "sequence_classification"]
    lora: bool
    batch_size: int
    seq_len: int
    precision: Precision = "fp32"
    gradient_checkpointing: bool = False
    optimizer: str = "adamw_torch"
    lora_r: int = 16
    lora_targets: tuple[str, ...] = ()
    num_labels: int = 2
    gradient_accumulation_steps: int = 1
    device: Device = "cpu"
    num_gpus: int = 1
    strategy: Strategy = "single"
    eager_attention: bool = False
    # Preference and reward training (see the module docstring).
    sequences_per_row: int = 1  # 2: a pair's chosen and rejected answers
    reference_copy: bool = False  # a frozen copy of the weights beside the policy
    reference_forward: bool = False  # the reference's log-probs are computed (time)
    generation_tokens: int = 0  # GRPO: tokens sampled per completion
    generations_per_row: int = 1  # GRPO: completions per prompt
    # QLoRA: the blocks' linear weights held in 4 bits (flextrain.estimate.quant).
    quantized_4bit: bool = False
    double_quant: bool = True


@dataclass(frozen=True)
class MemoryEstimate:
    """Each part in bytes, and the predicted peak of the training process."""

    weights: int
    gradients: int
    optimizer: int
    activations: int
    logits: int
    optimizer_step_temp: int
    baseline: int
    peak: int
    trainable_parameters: int
    total_parameters: int
    device: Device
    notes: list[str] = field(default_factory=list)
    reference: int = 0  # a frozen reference copy of the weights
    generation: int = 0  # GRPO's KV cache and sampling logits (before the training forward)
    dequantization: int = 0  # QLoRA: a 4-bit weight unpacked for its matmul

    def parts_gb(self) -> dict[str, float]:
        return {
            "weights": self.weights / _GIB,
            "gradients": self.gradients / _GIB,
            "optimizer": self.optimizer / _GIB,
            "activations": self.activations / _GIB,
            "logits": self.logits / _GIB,
            "reference": self.reference / _GIB,
            "generation": self.generation / _GIB,
            "dequantization": self.dequantization / _GIB,
            "baseline": self.baseline / _GIB,
            "peak": self.peak / _GIB,
        }

    @property
    def peak_gb(self) -> float:
        return self.peak / _GIB


def lora_parameters(
    linear_layers: Iterable[tuple[str, int, int]], targets: Iterable[str], rank: int
) -> int:
    """r·(d_in + d_out) for every linear layer whose last name is a target."""
    wanted = set(targets)
    return sum(
        rank * (d_in + d_out)
        for name, d_in, d_out in linear_layers
        if name.rsplit(".", 1)[-1] in wanted
    )


def _head_parameters(arch: Architecture, setup: TrainingSetup) -> int:
    """Parameters trained in full next to LoRA: a classification head created fresh."""
    if setup.objective != "sequence_classification":
        return 0
    head = arch.hidden_size * setup.num_labels
    if arch.is_encoder:  # BERT-style: biased classifier behind a pooler
        head += setup.num_labels + arch.hidden_size * arch.hidden_size + arch.hidden_size
    return head


def activation_elements_per_layer(arch: Architecture, setup: TrainingSetup) -> float:
    """Elements saved for backward by one transformer layer (no recompute)."""
    s, b, h, f = setup.seq_len, rows(setup), arch.hidden_size, arch.intermediate_size
    g = arch.num_kv_heads / max(arch.num_heads, 1)
    if arch.is_encoder:
        # Post-LN encoder with GELU and dropout (Korthikanti: 34·sbh bytes at 16 bit
        # with f = 4h): q, k, v, context, projections, two layer norms, FFN in/out.
        per_token = h * ENCODER_H_COEF + f * ENCODER_F_COEF
    else:
        # Pre-norm SwiGLU decoder: norms, q/k/v (k, v scaled by GQA), attention out,
        # o_proj input, and gate, up, act(gate), gate*up of width f.
        per_token = h * (DECODER_H_COEF + 2 * g) + f * DECODER_F_COEF
    elements = s * b * per_token
    if setup.eager_attention or (arch.is_encoder and setup.device == "cpu"):
        # Scores, softmax probabilities and the dropout mask, each a·s²·b: what eager
        # attention keeps, and what SDPA's CPU path keeps when attention has dropout
        # (measured: ~3.3 copies for MiniLM at s=512).
        elements += ATTENTION_SCORE_COPIES * arch.num_heads * s * s * b
    return elements


def rows(setup: TrainingSetup) -> int:
    """Sequences in one forward: the micro-batch, twice over for pairs."""
    return setup.batch_size * max(setup.sequences_per_row, 1)


def generation_bytes(arch: Architecture, setup: TrainingSetup) -> int:
    """GRPO's sampling: the KV cache of every completion at full length (prompt and
    sampled tokens, keys and values of every layer) and one step's logits."""
    if setup.generation_tokens <= 0:
        return 0
    head_dim = arch.hidden_size // max(arch.num_heads, 1)
    tokens = setup.batch_size * (setup.seq_len)
    per_value = 2 if setup.precision != "fp32" and setup.device == "cuda" else 4
    kv = 2 * arch.num_layers * arch.num_kv_heads * head_dim * tokens * per_value
    return int(kv + setup.batch_size * arch.vocab_size * 4 * 2)


# Measured coefficients (benchmarks/estimate_accuracy.py); theory gives the order.
DECODER_H_COEF = 13.0
DECODER_F_COEF = 4.0
ENCODER_H_COEF = 11.0
ENCODER_F_COEF = 2.0
ATTENTION_SCORE_COPIES = 3.4
GC_LIVE_LAYERS = 2.5
QLORA_CHECKPOINT_EXCESS = 1.3
LOGITS_BYTES_FP32 = 12.0  # logits, log-softmax output, gradient
LOGITS_BYTES_AMP = 16.0  # plus the 16-bit logits and their 16-bit gradient


def estimate_memory(arch: Architecture, setup: TrainingSetup) -> MemoryEstimate:
    """Predict the peak memory of one training process (per GPU when several)."""
    notes: list[str] = []
    amp = setup.precision in ("fp16", "bf16")
    act_bytes = 2 if amp and setup.device == "cuda" else 4
    total = arch.num_parameters
    if setup.lora:
        targets = setup.lora_targets
        adapters = lora_parameters(arch.linear_layers, targets, setup.lora_r)
        if adapters == 0:
            notes.append("No LoRA target module matched; nothing but the head would train.")
        head = _head_parameters(arch, setup)
        trainable = adapters + head
        total = arch.num_parameters + adapters + head  # peft keeps a copy of saved heads
    else:
        trainable = arch.num_parameters

    shards = setup.num_gpus if setup.strategy == "fsdp" and setup.num_gpus > 1 else 1
    weights = total * 4 // shards
    dequantization = 0
    if setup.quantized_4bit:
        weights, dequantization = _four_bit_weights(arch, setup, total)
        notes.append(
            "QLoRA: the blocks' linear weights are held in 4 bits "
            f"({'with' if setup.double_quant else 'without'} double quantization)."
        )
    if amp and setup.device == "cuda":
        weights += trainable * 2 // shards  # autocast's cached 16-bit copies of weights
    gradients = trainable * 4 // shards
    optimizer = int(trainable * OPTIMIZER_STATE_BYTES.get(setup.optimizer, 8.0)) // shards
    step_temp = int(trainable * OPTIMIZER_STEP_TEMP_BYTES.get(setup.optimizer, 4.0)) // shards
    if shards > 1:
        notes.append(f"FSDP shards parameters, gradients and optimizer states over {shards} GPUs.")
        # One layer is gathered whole at a time.
        weights += (arch.num_parameters // max(arch.num_layers, 1)) * 4

    reference = 0
    if setup.reference_copy:
        # Frozen, unsharded, at the policy's storage precision (fp32 here).
        reference = arch.num_parameters * 4
        notes.append("A frozen reference copy of the weights is kept beside the policy.")

    per_layer = activation_elements_per_layer(arch, setup)
    layer_input = setup.seq_len * rows(setup) * arch.hidden_size
    if setup.gradient_checkpointing:
        # Only each layer's input is kept; in backward a layer is recomputed in full and
        # its gradients flow while the next recompute starts (measured: ~2.5 layers).
        act_elements = arch.num_layers * layer_input + GC_LIVE_LAYERS * per_layer
        if setup.quantized_4bit:
            # Measured, not derived: under checkpointing a 4-bit run keeps about
            # 1.3 (f + h) more values per token in every layer than the same LoRA run
            # (the 25M decoder, 4,096 and 8,192 tokens a batch, four runs; without
            # checkpointing there is no such excess).
            act_elements += (
                QLORA_CHECKPOINT_EXCESS
                * arch.num_layers
                * layer_input
                * (1 + arch.intermediate_size / max(arch.hidden_size, 1))
            )
    else:
        act_elements = arch.num_layers * per_layer
    # Embedding output and final norm, kept in any case.
    act_elements += 2 * layer_input
    activations = int(act_elements * act_bytes)

    if setup.objective == "sequence_classification":
        logits = setup.batch_size * setup.num_labels * 12
    else:
        per_elem = LOGITS_BYTES_AMP if amp else LOGITS_BYTES_FP32
        logits = int(rows(setup) * setup.seq_len * arch.vocab_size * per_elem)

    baseline = CPU_BASELINE_BYTES + CPU_RUNTIME_OVERHEAD_BYTES if setup.device == "cpu" else 0
    generation = generation_bytes(arch, setup)
    # Sampling ends before the training forward starts: whichever is larger counts.
    forward_peak = max(activations + logits, generation)
    backward_end = gradients + step_temp
    if setup.gradient_accumulation_steps > 1 or setup.device == "cuda":
        # With accumulation the gradients persist across micro-batches. On CUDA the
        # caching allocator keeps freed activation blocks reserved rather than handing
        # them to differently sized gradients (measured on an H200: the sum fits, the
        # max under-predicts full fine-tuning by 13%).
        varying = gradients + max(forward_peak, step_temp)
    else:
        varying = max(forward_peak, backward_end)
    peak = baseline + weights + reference + optimizer + varying + dequantization
    if setup.device == "cuda":
        notes.append(
            f"Add about {CUDA_CONTEXT_BYTES / _GIB:.1f} GB of CUDA context outside the allocator."
        )
    return MemoryEstimate(
        weights=weights,
        gradients=gradients,
        optimizer=optimizer,
        activations=activations,
        logits=logits,
        optimizer_step_temp=step_temp,
        baseline=baseline,
        peak=int(peak),
        trainable_parameters=trainable,
        total_parameters=total,
        device=setup.device,
        notes=notes,
        reference=reference,
        generation=generation,
        dequantization=dequantization,
    )


def _four_bit_weights(arch: Architecture, setup: TrainingSetup, total: int) -> tuple[int, int]:
    """A QLoRA base's weight bytes, and the transient bytes of unpacking one 4-bit
    weight for its matmul.

    The quantized weights cost their codes and scales (flextrain.estimate.quant); the
    rest (embeddings, norms, heads, biases, the adapters) stays in float32, as peft
    prepares a k-bit model. Each quantized layer's weight is dequantized to the compute
    dtype in its forward and again in its backward, one at a time: the largest one,
    twice (the copy and its cast), is the transient.
    """
    quantized = quantized_weights(arch.linear_layers)
    stored = sum(quantized) * bytes_per_4bit_weight(setup.double_quant)
    weights = int(stored) + (total - sum(quantized)) * 4
    compute_bytes = 2 if setup.precision != "fp32" and setup.device == "cuda" else 4
    return weights, max(quantized, default=0) * compute_bytes * 2
