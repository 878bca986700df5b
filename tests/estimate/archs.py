"""Hand-built architectures for the pure estimate tests: a Llama-like decoder and a
BERT-like encoder, with module paths and sizes as transformers would list them."""

from __future__ import annotations

from flextrain.estimate.memory import Architecture

H, F, HEADS, KV_HEADS, VOCAB = 256, 688, 8, 4, 1000
KV = H * KV_HEADS // HEADS  # width of k_proj / v_proj under grouped-query attention

DECODER_LAYER = (
    ("self_attn.q_proj", H, H),
    ("self_attn.k_proj", H, KV),
    ("self_attn.v_proj", H, KV),
    ("self_attn.o_proj", H, H),
    ("mlp.gate_proj", H, F),
    ("mlp.up_proj", H, F),
    ("mlp.down_proj", F, H),
)

EH, EF, E_HEADS = 128, 512, 4
ENCODER_LAYER = (
    ("attention.self.query", EH, EH),
    ("attention.self.key", EH, EH),
    ("attention.self.value", EH, EH),
    ("attention.output.dense", EH, EH),
    ("intermediate.dense", EH, EF),
    ("output.dense", EF, EH),
)


def llama_like(num_layers: int = 4) -> Architecture:
    """Pre-norm SwiGLU decoder with tied embeddings (no biases)."""
    layers = (
        *(
            (f"model.layers.{i}.{name}", d_in, d_out)
            for i in range(num_layers)
            for name, d_in, d_out in DECODER_LAYER
        ),
        ("lm_head", H, VOCAB),
    )
    per_layer = sum(d_in * d_out for _, d_in, d_out in DECODER_LAYER) + 2 * H  # + 2 norms
    return Architecture(
        num_parameters=VOCAB * H + num_layers * per_layer + H,
        hidden_size=H,
        num_layers=num_layers,
        num_heads=HEADS,
        num_kv_heads=KV_HEADS,
        intermediate_size=F,
        vocab_size=VOCAB,
        is_encoder=False,
        linear_layers=layers,
        model_type="llama",
    )


def bert_like(num_layers: int = 2) -> Architecture:
    """Post-LN encoder with biases, a pooler and an MLM head."""
    layers = (
        *(
            (f"bert.encoder.layer.{i}.{name}", d_in, d_out)
            for i in range(num_layers)
            for name, d_in, d_out in ENCODER_LAYER
        ),
        ("bert.pooler.dense", EH, EH),
        ("cls.predictions.transform.dense", EH, EH),
        ("cls.predictions.decoder", EH, VOCAB),
    )
    per_layer = sum((d_in + 1) * d_out for _, d_in, d_out in ENCODER_LAYER) + 4 * EH
    embeddings = (VOCAB + 512 + 2) * EH + 2 * EH
    return Architecture(
        num_parameters=embeddings + num_layers * per_layer + (EH + 1) * EH + VOCAB,
        hidden_size=EH,
        num_layers=num_layers,
        num_heads=E_HEADS,
        num_kv_heads=E_HEADS,
        intermediate_size=EF,
        vocab_size=VOCAB,
        is_encoder=True,
        linear_layers=layers,
        model_type="bert",
    )
