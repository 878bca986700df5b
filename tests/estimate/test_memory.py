"""The analytic memory estimate, part by part, on hand-built architectures (no torch).

Each test changes one knob and checks the parts that must move, and those that
must not, in the direction and by the amount the model of memory says.
"""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from flextrain.estimate.memory import (
    CPU_BASELINE_BYTES,
    CPU_RUNTIME_OVERHEAD_BYTES,
    LOGITS_BYTES_AMP,
    LOGITS_BYTES_FP32,
    OPTIMIZER_STATE_BYTES,
    QLORA_CHECKPOINT_EXCESS,
    Architecture,
    MemoryEstimate,
    TrainingSetup,
    activation_elements_per_layer,
    estimate_memory,
    lora_parameters,
)
from flextrain.estimate.quant import KEEP_OUTSIDE_BLOCKS, quantized_in_4bit
from tests.estimate.archs import DECODER_LAYER, EH, KV, VOCAB, H, bert_like, llama_like

DECODER = llama_like()
ENCODER = bert_like()
CAUSAL = TrainingSetup(objective="causal_lm", lora=False, batch_size=4, seq_len=128)
MASKED = TrainingSetup(objective="masked_lm", lora=False, batch_size=4, seq_len=128)
LORA = replace(CAUSAL, lora=True, lora_r=8, lora_targets=("q_proj", "v_proj"))


def est(arch: Architecture, setup: TrainingSetup, **changes: object) -> MemoryEstimate:
    return estimate_memory(arch, replace(setup, **changes))  # type: ignore[arg-type]


# -- what grows with the batch and the sequence ----------------------------------------


@pytest.mark.parametrize("setup", [CAUSAL, LORA], ids=["full", "lora"])
def test_decoder_activations_and_logits_are_proportional_to_batch(setup: TrainingSetup) -> None:
    one = est(DECODER, setup, batch_size=1)
    for batch in (2, 3, 8):
        many = est(DECODER, setup, batch_size=batch)
        assert many.activations == batch * one.activations
        assert many.logits == batch * one.logits


def test_decoder_activations_and_logits_are_proportional_to_seq_len() -> None:
    short = est(DECODER, CAUSAL, seq_len=64)
    for factor in (2, 4):
        long = est(DECODER, CAUSAL, seq_len=64 * factor)
        assert long.activations == factor * short.activations
        assert long.logits == factor * short.logits


@pytest.mark.parametrize("arch", [DECODER, ENCODER], ids=["decoder", "encoder"])
def test_weights_gradients_optimizer_do_not_depend_on_batch_or_length(arch: Architecture) -> None:
    setup = CAUSAL if arch is DECODER else MASKED
    base = est(arch, setup, batch_size=1, seq_len=32)
    for batch, seq in ((64, 32), (1, 512), (16, 256)):
        other = est(arch, setup, batch_size=batch, seq_len=seq)
        assert other.weights == base.weights
        assert other.gradients == base.gradients
        assert other.optimizer == base.optimizer
        assert other.optimizer_step_temp == base.optimizer_step_temp
        assert other.trainable_parameters == base.trainable_parameters
        assert other.activations > base.activations
        assert other.logits > base.logits


def test_encoder_on_cpu_has_a_quadratic_attention_term() -> None:
    """SDPA's CPU path keeps the s x s scores when attention has dropout."""
    short = est(ENCODER, MASKED, seq_len=128)
    long = est(ENCODER, MASKED, seq_len=256)
    assert long.activations > 2 * short.activations
    # Still linear in the batch: every row has its own s x s scores.
    assert est(ENCODER, MASKED, batch_size=8).activations == pytest.approx(
        2 * short.activations, abs=2
    )


def test_encoder_on_cuda_is_linear_in_seq_len() -> None:
    short = est(ENCODER, MASKED, seq_len=128, device="cuda")
    long = est(ENCODER, MASKED, seq_len=256, device="cuda")
    assert long.activations == 2 * short.activations


def test_eager_attention_adds_the_quadratic_term_to_a_decoder() -> None:
    short = est(DECODER, CAUSAL, seq_len=128, eager_attention=True)
    long = est(DECODER, CAUSAL, seq_len=256, eager_attention=True)
    assert long.activations > 2 * short.activations
    assert short.activations > est(DECODER, CAUSAL, seq_len=128).activations


def test_logits_of_a_language_model_scale_with_vocab() -> None:
    e = est(DECODER, CAUSAL)
    assert e.logits == CAUSAL.batch_size * CAUSAL.seq_len * VOCAB * LOGITS_BYTES_FP32
    wider = replace(DECODER, vocab_size=2 * VOCAB)
    assert estimate_memory(wider, CAUSAL).logits == 2 * e.logits


def test_classification_logits_are_tiny_and_length_free() -> None:
    setup = replace(MASKED, objective="sequence_classification", num_labels=3)
    e = estimate_memory(ENCODER, setup)
    assert e.logits == setup.batch_size * 3 * 12
    assert est(ENCODER, setup, seq_len=512).logits == e.logits
    assert e.logits < estimate_memory(ENCODER, MASKED).logits / 1000


# -- LoRA ------------------------------------------------------------------------------


def test_lora_parameters_counts_matching_layers_only() -> None:
    layers = [
        ("model.layers.0.self_attn.q_proj", 64, 64),
        ("model.layers.0.self_attn.k_proj", 64, 32),
        ("model.layers.0.self_attn.v_proj", 64, 32),
        ("model.layers.1.self_attn.q_proj", 64, 64),
        ("model.layers.1.self_attn.q_proj_extra", 64, 64),  # last name differs
        ("q_proj.inner", 10, 10),  # q_proj is not the last name
        ("lm_head", 64, 1000),
    ]
    assert lora_parameters(layers, ["q_proj", "v_proj"], 8) == 8 * (128 + 96 + 128)
    assert lora_parameters(layers, ["q_proj"], 4) == 4 * (128 + 128)
    assert lora_parameters(layers, ["lm_head"], 2) == 2 * 1064
    assert lora_parameters(layers, ["nothing"], 8) == 0
    assert lora_parameters([], ["q_proj"], 8) == 0


def test_lora_parameters_of_the_decoder() -> None:
    expected = DECODER.num_layers * 8 * ((H + H) + (H + KV))
    assert lora_parameters(DECODER.linear_layers, ("q_proj", "v_proj"), 8) == expected


def test_lora_trains_the_adapters_only() -> None:
    full = estimate_memory(DECODER, CAUSAL)
    lora = estimate_memory(DECODER, LORA)
    adapters = lora_parameters(DECODER.linear_layers, LORA.lora_targets, LORA.lora_r)
    assert lora.trainable_parameters == adapters
    assert lora.total_parameters == DECODER.num_parameters + adapters
    assert lora.gradients == 4 * adapters
    assert lora.optimizer == 8 * adapters
    assert lora.weights == 4 * (DECODER.num_parameters + adapters)
    assert lora.gradients < full.gradients / 50
    assert lora.optimizer < full.optimizer / 50
    assert lora.peak < full.peak
    assert lora.notes == []


def test_lora_state_is_linear_in_rank() -> None:
    r8 = est(DECODER, LORA, lora_r=8)
    for rank in (16, 32):
        bigger = est(DECODER, LORA, lora_r=rank)
        assert bigger.gradients == rank // 8 * r8.gradients
        assert bigger.optimizer == rank // 8 * r8.optimizer
        assert bigger.trainable_parameters == rank // 8 * r8.trainable_parameters


def test_lora_classification_also_trains_a_fresh_encoder_head() -> None:
    setup = TrainingSetup(
        objective="sequence_classification",
        lora=True,
        batch_size=4,
        seq_len=64,
        lora_r=8,
        lora_targets=("query", "value"),
        num_labels=3,
    )
    e = estimate_memory(ENCODER, setup)
    adapters = lora_parameters(ENCODER.linear_layers, ("query", "value"), 8)
    classifier = EH * 3 + 3
    pooler = EH * EH + EH
    assert e.trainable_parameters == adapters + classifier + pooler
    assert est(ENCODER, setup, num_labels=5).trainable_parameters == (
        e.trainable_parameters + 2 * (EH + 1)
    )


def test_lora_with_no_matching_target_says_so() -> None:
    e = est(DECODER, LORA, lora_targets=("query", "value"))
    assert e.trainable_parameters == 0
    assert e.gradients == 0
    assert e.optimizer == 0
    assert any("No LoRA target module matched" in n for n in e.notes)


# -- precision, checkpointing, optimizer, sharding -------------------------------------


def test_bf16_on_cuda_halves_activations_and_adds_the_autocast_copy() -> None:
    fp32 = est(DECODER, CAUSAL, device="cuda")
    bf16 = est(DECODER, CAUSAL, device="cuda", precision="bf16")
    assert bf16.activations * 2 == fp32.activations
    assert bf16.weights == fp32.weights + 2 * fp32.trainable_parameters
    assert bf16.gradients == fp32.gradients  # fp32 master gradients
    assert bf16.optimizer == fp32.optimizer
    assert fp32.logits == CAUSAL.batch_size * CAUSAL.seq_len * VOCAB * LOGITS_BYTES_FP32
    assert bf16.logits == CAUSAL.batch_size * CAUSAL.seq_len * VOCAB * LOGITS_BYTES_AMP


def test_bf16_autocast_copy_covers_trainable_weights_only() -> None:
    fp32 = est(DECODER, LORA, device="cuda")
    bf16 = est(DECODER, LORA, device="cuda", precision="fp16")
    assert bf16.weights - fp32.weights == 2 * fp32.trainable_parameters


def test_mixed_precision_on_cpu_keeps_fp32_activations() -> None:
    fp32 = est(DECODER, CAUSAL)
    bf16 = est(DECODER, CAUSAL, precision="bf16")
    assert bf16.activations == fp32.activations
    assert bf16.weights == fp32.weights


def test_gradient_checkpointing_keeps_only_layer_inputs() -> None:
    deep = llama_like(num_layers=24)
    plain = estimate_memory(deep, CAUSAL)
    checkpointed = est(deep, CAUSAL, gradient_checkpointing=True)
    assert checkpointed.activations < plain.activations / 2
    # Each extra layer costs its input (s·b·h) with checkpointing, its whole saved
    # state without.
    layer_input_bytes = CAUSAL.seq_len * CAUSAL.batch_size * H * 4
    per_layer_bytes = int(activation_elements_per_layer(deep, CAUSAL) * 4)
    deeper = llama_like(num_layers=25)
    assert (
        est(deeper, CAUSAL, gradient_checkpointing=True).activations - checkpointed.activations
        == layer_input_bytes
    )
    assert estimate_memory(deeper, CAUSAL).activations - plain.activations == per_layer_bytes
    assert per_layer_bytes > 5 * layer_input_bytes
    # Parameters and their state are untouched.
    assert checkpointed.weights == plain.weights
    assert checkpointed.optimizer == plain.optimizer


def test_gradient_checkpointing_cannot_help_a_single_layer() -> None:
    shallow = llama_like(num_layers=1)
    plain = estimate_memory(shallow, CAUSAL)
    checkpointed = est(shallow, CAUSAL, gradient_checkpointing=True)
    assert checkpointed.activations >= plain.activations


def test_optimizer_state_bytes() -> None:
    adamw = estimate_memory(DECODER, CAUSAL)
    n = DECODER.num_parameters
    assert adamw.optimizer == 8 * n
    assert est(DECODER, CAUSAL, optimizer="sgd").optimizer == 0
    assert est(DECODER, CAUSAL, optimizer="adamw_bnb_8bit").optimizer * 4 == adamw.optimizer
    assert est(DECODER, CAUSAL, optimizer="adafactor").optimizer == int(n * 0.5)
    assert OPTIMIZER_STATE_BYTES["sgd"] == 0
    # An optimizer the table does not know is costed like AdamW, not as free.
    assert est(DECODER, CAUSAL, optimizer="some_new_adam").optimizer == adamw.optimizer


def test_sgd_lowers_the_peak() -> None:
    assert est(DECODER, CAUSAL, optimizer="sgd").peak < estimate_memory(DECODER, CAUSAL).peak


def test_fsdp_shards_gradients_and_optimizer_over_the_gpus() -> None:
    single = est(DECODER, CAUSAL, device="cuda")
    fsdp = est(DECODER, CAUSAL, device="cuda", num_gpus=4, strategy="fsdp")
    assert fsdp.gradients == single.gradients // 4
    assert fsdp.optimizer == single.optimizer // 4
    gathered_layer = DECODER.num_parameters // DECODER.num_layers * 4
    assert fsdp.weights == single.weights // 4 + gathered_layer
    assert fsdp.activations == single.activations  # per GPU, the same micro-batch
    assert fsdp.peak < single.peak
    assert any("FSDP" in n and "4 GPUs" in n for n in fsdp.notes)


def test_ddp_replicates_everything() -> None:
    single = est(DECODER, CAUSAL, device="cuda")
    ddp = est(DECODER, CAUSAL, device="cuda", num_gpus=4, strategy="ddp")
    assert (ddp.weights, ddp.gradients, ddp.optimizer, ddp.peak) == (
        single.weights,
        single.gradients,
        single.optimizer,
        single.peak,
    )


def test_fsdp_on_one_gpu_does_not_shard() -> None:
    single = est(DECODER, CAUSAL, device="cuda")
    one = est(DECODER, CAUSAL, device="cuda", num_gpus=1, strategy="fsdp")
    assert one.peak == single.peak
    assert not any("FSDP" in n for n in one.notes)


# -- the peak --------------------------------------------------------------------------


def varying(e: MemoryEstimate) -> int:
    """The part of the peak above what stays all run (baseline, weights, optimizer)."""
    return e.peak - (e.baseline + e.weights + e.optimizer)


# Long sequences: activations and logits dominate. One short row: gradients and the
# optimizer step's temporaries dominate.
FORWARD_HEAVY = {"batch_size": 8, "seq_len": 512}
STEP_HEAVY = {"batch_size": 1, "seq_len": 8}


def test_the_two_regimes_are_what_their_names_say() -> None:
    f = est(DECODER, CAUSAL, **FORWARD_HEAVY)
    assert f.activations + f.logits > f.gradients + f.optimizer_step_temp
    s = est(DECODER, CAUSAL, **STEP_HEAVY)
    assert s.gradients + s.optimizer_step_temp > s.activations + s.logits


@pytest.mark.parametrize("regime", [FORWARD_HEAVY, STEP_HEAVY], ids=["forward", "step"])
def test_cpu_peak_takes_the_larger_of_forward_and_optimizer_step(
    regime: dict[str, int],
) -> None:
    """Accumulation 1 on CPU: activations are freed as gradients appear."""
    e = est(DECODER, CAUSAL, **regime)
    assert varying(e) == max(e.activations + e.logits, e.gradients + e.optimizer_step_temp)


def test_gradient_accumulation_keeps_gradients_during_forward() -> None:
    one = est(DECODER, CAUSAL, **FORWARD_HEAVY)
    accumulated = est(DECODER, CAUSAL, **FORWARD_HEAVY, gradient_accumulation_steps=4)
    assert varying(accumulated) == (
        accumulated.activations + accumulated.logits + accumulated.gradients
    )
    assert accumulated.peak == one.peak + one.gradients
    # How many micro-batches are accumulated does not matter, only that there are several.
    twice = est(DECODER, CAUSAL, **FORWARD_HEAVY, gradient_accumulation_steps=2)
    assert twice.peak == accumulated.peak


def test_cuda_reserved_peak_keeps_gradients_with_activations() -> None:
    e = est(DECODER, CAUSAL, **FORWARD_HEAVY, device="cuda")
    assert varying(e) == e.activations + e.logits + e.gradients


def test_the_optimizer_step_still_counts_with_accumulation_or_on_cuda() -> None:
    one = est(DECODER, CAUSAL, **STEP_HEAVY)
    accumulated = est(DECODER, CAUSAL, **STEP_HEAVY, gradient_accumulation_steps=4)
    # Accumulating adds memory (gradients kept), it never frees any.
    assert accumulated.peak >= one.peak
    cuda = est(DECODER, CAUSAL, **STEP_HEAVY, device="cuda")
    assert varying(cuda) >= cuda.gradients + cuda.optimizer_step_temp


def test_cpu_counts_the_framework_baseline() -> None:
    e = estimate_memory(DECODER, CAUSAL)
    assert e.device == "cpu"
    assert e.baseline == CPU_BASELINE_BYTES + CPU_RUNTIME_OVERHEAD_BYTES
    assert e.baseline > 256 * 1024**2
    assert not any("CUDA" in n for n in e.notes)


def test_cuda_peak_has_no_baseline_but_a_note_on_the_context() -> None:
    e = est(DECODER, CAUSAL, device="cuda")
    assert e.device == "cuda"
    assert e.baseline == 0
    assert any("CUDA context" in n for n in e.notes)


def test_parts_in_gb() -> None:
    e = estimate_memory(DECODER, CAUSAL)
    parts = e.parts_gb()
    gib = 1024**3
    assert parts == {
        "weights": e.weights / gib,
        "gradients": e.gradients / gib,
        "optimizer": e.optimizer / gib,
        "activations": e.activations / gib,
        "logits": e.logits / gib,
        "reference": 0.0,
        "generation": 0.0,
        "dequantization": 0.0,
        "baseline": e.baseline / gib,
        "peak": e.peak / gib,
    }
    assert e.peak_gb == e.peak / gib


def test_full_fine_tuning_parameter_bytes_follow_the_memory_anatomy() -> None:
    """fp32 AdamW: 4 B weights + 4 B gradients + 8 B moments per parameter."""
    e = estimate_memory(DECODER, CAUSAL)
    n = DECODER.num_parameters
    assert (e.weights, e.gradients, e.optimizer) == (4 * n, 4 * n, 8 * n)
    assert e.trainable_parameters == e.total_parameters == n


# -- QLoRA: a 4-bit base ---------------------------------------------------------------


def test_qlora_holds_the_block_weights_in_4_bits_with_their_scales() -> None:
    lora = estimate_memory(DECODER, LORA)
    blocks = DECODER.num_layers * sum(d_in * d_out for _, d_in, d_out in DECODER_LAYER)
    for double_quant, scale_bytes in ((False, 4 / 64), (True, 1 / 64 + 4 / (64 * 256))):
        q = est(DECODER, LORA, quantized_4bit=True, double_quant=double_quant)
        # Every block weight drops from 4 bytes to half a byte plus its share of scales;
        # the embeddings, the norms and the adapters stay in float32.
        saved = blocks * (4 - 0.5 - scale_bytes)
        assert q.weights == pytest.approx(lora.weights - saved, abs=1)
        # What trains is unchanged: the same adapters, gradients and optimizer states.
        assert (q.trainable_parameters, q.gradients, q.optimizer) == (
            lora.trainable_parameters,
            lora.gradients,
            lora.optimizer,
        )
    # Double quantization saves ~0.37 bits a weight (QLoRA paper: 0.5 -> 0.127).
    plain = est(DECODER, LORA, quantized_4bit=True, double_quant=False)
    double = est(DECODER, LORA, quantized_4bit=True, double_quant=True)
    assert (plain.weights - double.weights) * 8 / blocks == pytest.approx(0.373, abs=0.01)


def test_qlora_adds_the_transient_of_one_unpacked_weight() -> None:
    q = est(DECODER, LORA, quantized_4bit=True)
    largest = max(d_in * d_out for _, d_in, d_out in DECODER_LAYER)  # up/gate/down: H x F
    assert q.dequantization == largest * 4 * 2  # float32 on CPU, the copy and its cast
    assert est(
        DECODER, LORA, quantized_4bit=True, device="cuda", precision="bf16"
    ).dequantization == (largest * 2 * 2)
    assert estimate_memory(DECODER, LORA).dequantization == 0
    lora = estimate_memory(DECODER, LORA)
    assert q.peak - lora.peak == (q.weights - lora.weights) + q.dequantization


@pytest.mark.parametrize(
    ("name", "quantized"),
    [
        ("model.layers.0.self_attn.q_proj", True),
        ("bert.encoder.layer.11.output.dense", True),
        ("transformer.h.3.mlp.c_fc", True),
        ("layers.2.ffn", True),
        ("lm_head", False),
        ("classifier", False),
        ("bert.pooler.dense", False),
        ("score", False),
        ("model.embed_tokens", False),
        ("cls.predictions.transform.dense", False),
    ],
)
def test_qlora_quantizes_the_repeated_blocks_only(name: str, quantized: bool) -> None:
    """Heads, poolers and embeddings stay full: a head created fresh must train."""
    assert quantized_in_4bit(name) is quantized
    # transformers skips a module when the pattern matches its name from the start.
    assert (re.match(rf"(?:{KEEP_OUTSIDE_BLOCKS})(?:(?<=\.)|(?=\.|$))", name) is None) is quantized


def test_qlora_with_checkpointing_keeps_the_measured_excess() -> None:
    gc = replace(LORA, gradient_checkpointing=True)
    q, lora = est(DECODER, gc, quantized_4bit=True), estimate_memory(DECODER, gc)
    tokens = gc.batch_size * gc.seq_len
    excess = QLORA_CHECKPOINT_EXCESS * DECODER.num_layers * tokens * (H + DECODER.intermediate_size)
    assert q.activations - lora.activations == pytest.approx(excess * 4, abs=8)
    # Without checkpointing the activations are those of LoRA.
    assert (
        est(DECODER, LORA, quantized_4bit=True).activations
        == estimate_memory(DECODER, LORA).activations
    )
