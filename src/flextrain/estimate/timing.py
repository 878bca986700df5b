"""Training time from FLOPs and a throughput prior, or from probed step times.

FLOPs per token: 6·N for full training (forward 2N, backward 4N; Kaplan et al.,
EleutherAI "Transformer Math 101"), about 4·N with LoRA (frozen weights get no
weight gradients), plus one more forward (2·N) with gradient checkpointing;
attention adds 12·L·h·s per token (PaLM appendix B). N counts the parameters
that take part in matrix products (not an untied input embedding).

Preference training trains on both sequences of a pair, and DPO and KTO run the
reference model forward (2·N per token) too. GRPO samples `num_generations`
completions per prompt, token by token: 2·N per sampled token, and each decoding
step has a fixed cost of its own (DECODE_STEP_SECONDS), which on small models is
most of the sampling time.

QLoRA multiplies the matmul arithmetic (QLORA_MATMUL_FACTOR) and adds the unpacking
of every 4-bit weight per micro-batch (DEQUANT_SECONDS_PER_WEIGHT).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from flextrain.config.steps import total_steps
from flextrain.estimate.memory import Architecture, TrainingSetup
from flextrain.estimate.quant import quantized_weights

# Dense peak TFLOP/s for 16-bit training by GPU name fragment (vendor data sheets).
GPU_PEAK_TFLOPS = {
    "H200": 989.0,
    "H100": 989.0,
    "A100": 312.0,
    "L40S": 362.0,
    "A10": 125.0,
    "L4": 121.0,
    "4090": 165.0,
    "3090": 71.0,
    "V100": 125.0,
    "T4": 65.0,
}
# Model FLOPs utilisation of single-GPU Hugging Face fine-tuning: a prior with a wide
# range, replaced by the probe's measurement when one is run.
GPU_MFU_PRIOR = (0.10, 0.25, 0.45)
# Effective training FLOP/s per CPU core (fp32, AVX2 class), measured on this
# project's machine with benchmarks/estimate_accuracy.py: low, typical, high.
CPU_FLOPS_PER_CORE = (15e9, 40e9, 70e9)
# Time that is not matrix arithmetic, which dominates small runs: the worker's
# start (imports, model load, tokenisation, saving the result; low, typical,
# high) and each optimizer step's fixed cost (Trainer loop, optimizer update,
# logging). Measured on this project's CPU machine: a 0.14M-parameter Llama
# trains 68 steps in 14 s end to end, of which about 1 s is arithmetic.
STARTUP_SECONDS = {"cpu": (5.0, 10.0, 30.0), "cuda": (10.0, 20.0, 60.0)}
STEP_OVERHEAD_SECONDS = {"cpu": (0.01, 0.03, 0.1), "cuda": (0.005, 0.02, 0.05)}
# One decoding step of `generate` over a batch of completions, apart from its
# arithmetic (sampling, cache update, Python): measured with GRPO on this project's
# CPU machine (benchmarks/estimate_accuracy.py), a prior elsewhere.
DECODE_STEP_SECONDS = {"cpu": (0.001, 0.003, 0.01), "cuda": (0.005, 0.015, 0.04)}
# QLoRA: a 4-bit weight is unpacked for every matmul, forward and backward. Two costs,
# fitted on this project's CPU machine (25M-parameter Llama, benchmarks/estimate_accuracy.py
# --only qlora): the matmuls cost what float32 LoRA's do (factor 1.01), and every pass
# over a weight costs ~2e-8 s to unpack, per micro-batch. On a GPU both are priors:
# QLoRA's fused kernels are reported 1.2-1.4x slower than LoRA.
QLORA_MATMUL_FACTOR = {"cpu": 1.0, "cuda": 1.3}
DEQUANT_SECONDS_PER_WEIGHT = {"cpu": 2e-8, "cuda": 5e-12}


@dataclass(frozen=True)
class TimeEstimate:
    tokens_per_epoch: int
    epochs: float
    optimizer_steps: int
    flops_per_token: float
    effective_flops_per_second: float
    seconds: float
    low_seconds: float
    high_seconds: float
    source: str  # "prior" or "probe"
    overhead_seconds: float = 0.0  # start-up and per-step costs, included in `seconds`

    @property
    def hours(self) -> float:
        return self.seconds / 3600


def matmul_parameters(arch: Architecture, objective: str) -> int:
    """Parameters used in matrix products per token."""
    embedding = arch.vocab_size * arch.hidden_size
    if objective != "sequence_classification" and arch.tie_word_embeddings:
        # A tied LM head reuses the embedding matrix in a matrix product: it counts.
        return arch.num_parameters
    # The input embedding is a lookup, not a product (an untied head has its own weights).
    return max(arch.num_parameters - embedding, 1)


# Encoder classifiers whose head reads the first position only: the worker computes the
# last layer's query, attention output and feed-forward there alone (train/pooled.py,
# whose list of model classes these model types are).
FIRST_TOKEN_MODEL_TYPES = frozenset({"bert", "roberta", "xlm-roberta", "electra", "camembert"})


def unread_last_layer(arch: Architecture, setup: TrainingSetup) -> float:
    """Share of the last layer a first-token classifier skips per token (0 to 1): all of
    it but the keys and values, at every position but the first."""
    if setup.objective != "sequence_classification" or arch.num_layers < 1:
        return 0.0
    if arch.model_type not in FIRST_TOKEN_MODEL_TYPES:
        return 0.0
    return 1.0 - 1.0 / max(setup.seq_len, 1)


def flops_per_token(arch: Architecture, setup: TrainingSetup) -> float:
    n = float(matmul_parameters(arch, setup.objective))
    skipped = unread_last_layer(arch, setup)
    if skipped:
        h, inner = arch.hidden_size, arch.intermediate_size
        n = max(n - (2 * h * h + 2 * h * inner) * skipped, 1.0)  # query, output, FFN
    passes = 4.0 if setup.lora else 6.0
    if setup.gradient_checkpointing:
        passes += 2.0
    if setup.reference_forward:
        passes += 2.0
    attention = 12.0 * (arch.num_layers - skipped) * arch.hidden_size * setup.seq_len
    if setup.lora:
        attention *= 2.0 / 3.0
    if setup.quantized_4bit:
        passes *= QLORA_MATMUL_FACTOR["cuda" if setup.device == "cuda" else "cpu"]
    return passes * n + attention


def dequantization_seconds(arch: Architecture, setup: TrainingSetup) -> float:
    """QLoRA: unpacking every 4-bit weight in one micro-batch's forward and backward
    (and the recompute, with gradient checkpointing); 0 without a 4-bit base."""
    if not setup.quantized_4bit:
        return 0.0
    weights = sum(quantized_weights(arch.linear_layers))
    passes = 3 if setup.gradient_checkpointing else 2
    return (
        weights * passes * DEQUANT_SECONDS_PER_WEIGHT["cuda" if setup.device == "cuda" else "cpu"]
    )


def decode_seconds(arch: Architecture, setup: TrainingSetup, flops_per_second: float) -> float:
    """GRPO: one step's sampling of its batch of completions, token by token (typical
    decode-step cost); 0 for methods that do not sample."""
    if setup.generation_tokens <= 0:
        return 0.0
    arithmetic = 2.0 * matmul_parameters(arch, setup.objective) * setup.batch_size
    device = "cuda" if setup.device == "cuda" else "cpu"
    per_token = arithmetic / flops_per_second + DECODE_STEP_SECONDS[device][1]
    return per_token * setup.generation_tokens


def device_flops_prior(
    *, gpu_names: list[str], cpu_cores: int, precision: str
) -> tuple[float, float, float]:
    """(low, typical, high) effective FLOP/s of this machine for training."""
    if gpu_names:
        peak = 0.0
        for name in gpu_names:
            match = next((v for k, v in GPU_PEAK_TFLOPS.items() if k in name), 100.0)
            # fp32 runs on TF32 or plain FP32 units: about a quarter of 16-bit peak.
            peak += match * 1e12 * (1.0 if precision in ("fp16", "bf16") else 0.25)
        lo, mid, hi = GPU_MFU_PRIOR
        return peak * lo, peak * mid, peak * hi
    lo, mid, hi = CPU_FLOPS_PER_CORE
    return lo * cpu_cores, mid * cpu_cores, hi * cpu_cores


def estimate_time(
    arch: Architecture,
    setup: TrainingSetup,
    *,
    tokens_per_epoch: int,
    rows_per_epoch: int,
    epochs: float,
    flops_range: tuple[float, float, float],
    source: str = "prior",
    epoch_flops: float | None = None,
) -> TimeEstimate:
    """`epoch_flops`: one epoch's work as the batching strategy gives it to the device
    (`estimate.batching.plan_epoch`: padding, attention per row, logits only where
    predicted); without it, every token costs `flops_per_token` at full length."""
    per_token = flops_per_token(arch, setup)
    # A pair trains both of its sequences (the row's tokens count the longer one, twice).
    trained_tokens = tokens_per_epoch * max(setup.sequences_per_row, 1)
    device = "cuda" if setup.device == "cuda" else "cpu"
    decode = (0.0, 0.0, 0.0)
    if setup.generation_tokens > 0:
        # GRPO: each prompt is answered num_generations times, and the answers trained.
        completions = rows_per_epoch * max(setup.generations_per_row, 1)
        sampled = completions * setup.generation_tokens
        trained_tokens = tokens_per_epoch * max(setup.generations_per_row, 1) + sampled
        rows_per_epoch = completions
        batches = math.ceil(completions / max(setup.batch_size, 1)) * epochs
        decode_flops = 2.0 * matmul_parameters(arch, setup.objective) * sampled * epochs
        per_decode = DECODE_STEP_SECONDS[device]
        decode = tuple(  # type: ignore[assignment]
            decode_flops / flops_range[2 - i] + per_decode[i] * batches * setup.generation_tokens
            for i in range(3)
        )
    total = per_token * trained_tokens * epochs
    if epoch_flops is not None and setup.generation_tokens <= 0 and setup.sequences_per_row <= 1:
        total = epoch_flops * epochs
    lo, mid, hi = flops_range
    rows_per_step = setup.batch_size * setup.gradient_accumulation_steps * max(setup.num_gpus, 1)
    steps = total_steps(rows_per_epoch, rows_per_step, epochs)
    start = STARTUP_SECONDS[device]
    unpack = dequantization_seconds(arch, setup) * setup.gradient_accumulation_steps
    per_step = tuple(cost + unpack for cost in STEP_OVERHEAD_SECONDS[device])
    if source == "probe":
        per_step = (0.0, 0.0, 0.0)  # the probe's step times already include it
        decode = (0.0, 0.0, 0.0)  # and, for GRPO, the sampling
    overhead = [start[i] + per_step[i] * steps + decode[i] for i in range(3)]
    return TimeEstimate(
        tokens_per_epoch=tokens_per_epoch,
        epochs=epochs,
        optimizer_steps=steps,
        flops_per_token=per_token,
        effective_flops_per_second=mid,
        seconds=total / mid + overhead[1],
        low_seconds=total / hi + overhead[0],
        high_seconds=total / lo + overhead[2],
        source=source,
        overhead_seconds=overhead[1],
    )


def tokens_from_lengths(lengths: list[int], max_length: int, total_rows: int) -> int:
    """Tokens per epoch after truncation, scaled from a sample of row lengths."""
    if not lengths:
        return 0
    kept = sum(min(n, max_length) for n in lengths)
    return int(kept * total_rows / len(lengths))
