"""Encoder classifiers read one position of the last layer: compute only that one there.

BERT-family sequence classifiers (BERT, MiniLM, RoBERTa, XLM-R, ELECTRA, CamemBERT)
classify from the first token's final hidden state. The last layer's keys and values
still need every position (the first token attends to all of them), but its queries,
attention output, residual, layer norms and feed-forward are needed at the first
position only. Computing them there and nowhere else is exact: the logits, the loss and
every gradient are those of the whole layer (tests/train/test_pooled.py), at 5/6 less
work in that layer (about 9% of a step of the 6-layer MiniLM).

The layer's own modules are called (so LoRA wrappers on them still apply); only its
`forward` is replaced, on that one instance, so saved weights and names are unchanged.
Before the model is used it is checked once against the untouched layer on a small
padded batch; a model whose layer does not match (a transformers release that changes
the layer, a remote-code model of the same name) keeps its own forward.
"""

from __future__ import annotations

from types import MethodType
from typing import Any

import torch
import torch.nn.functional as F

# Models whose head reads `last_hidden_state[:, 0]` (directly or through the pooler).
FIRST_TOKEN_CLASSIFIERS = frozenset(
    {
        "BertForSequenceClassification",
        "RobertaForSequenceClassification",
        "XLMRobertaForSequenceClassification",
        "ElectraForSequenceClassification",
        "CamembertForSequenceClassification",
    }
)
_LAYER_PARTS = ("attention", "intermediate", "output")
_ATTENTION_PARTS = ("query", "key", "value", "num_attention_heads", "attention_head_size")
# Logits of the checked batch may differ by float rounding only.
_TOLERANCE = 1e-4


def first_position_only(model: Any) -> bool:
    """Make the last encoder layer of `model` compute the first position only, when the
    model is one whose head reads only that position and the result checks out equal.
    Returns whether it did."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if type(base).__name__ not in FIRST_TOKEN_CLASSIFIERS:
        return False
    layer = _last_layer(base)
    if layer is None or getattr(base.config, "_attn_implementation", None) not in ("sdpa", "eager"):
        return False
    if "forward" in vars(layer):  # already replaced (a rebuilt model is a new instance)
        return True
    layer.forward = MethodType(_first_position_forward, layer)
    if not _same_logits(model, layer):
        del layer.forward
        return False
    return True


def _last_layer(base: Any) -> Any:
    encoder = getattr(getattr(base, "base_model", None), "encoder", None)
    layers = getattr(encoder, "layer", None)
    if not layers:
        return None
    layer = layers[-1]
    if not all(hasattr(layer, part) for part in _LAYER_PARTS):
        return None
    attention = getattr(layer.attention, "self", None)
    if attention is None or not all(hasattr(attention, part) for part in _ATTENTION_PARTS):
        return None
    if not hasattr(layer.attention, "output") or not hasattr(attention, "dropout"):
        return None
    if getattr(layer, "is_decoder", False) or getattr(layer, "add_cross_attention", False):
        return None
    if getattr(layer, "chunk_size_feed_forward", 0):
        return None
    return layer


def _first_position_forward(
    self: Any,
    hidden_states: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *_: Any,
    **__: Any,
) -> torch.Tensor:
    """The layer's forward for position 0 only: shape (batch, 1, hidden)."""
    attention = self.attention.self
    batch, length = hidden_states.shape[0], hidden_states.shape[1]
    heads, size = attention.num_attention_heads, attention.attention_head_size
    first = hidden_states[:, :1]
    query = attention.query(first).view(batch, 1, heads, size).transpose(1, 2)
    key = attention.key(hidden_states).view(batch, length, heads, size).transpose(1, 2)
    value = attention.value(hidden_states).view(batch, length, heads, size).transpose(1, 2)
    mask = attention_mask
    if mask is not None and mask.dim() == 4 and mask.shape[-2] != 1:
        mask = mask[:, :, :1, :]  # the first query's row
    context = F.scaled_dot_product_attention(
        query,
        key,
        value,
        attn_mask=mask,
        dropout_p=attention.dropout.p if self.training else 0.0,
        scale=getattr(attention, "scaling", size**-0.5),
    )
    context = context.transpose(1, 2).reshape(batch, 1, heads * size)
    attended = self.attention.output(context, first)
    return self.output(self.intermediate(attended), attended)


def _same_logits(model: Any, layer: Any) -> bool:
    """The model's logits on a small padded batch, with the replaced layer and without."""
    embeddings = model.get_input_embeddings()
    device = embeddings.weight.device
    vocab = min(int(embeddings.num_embeddings), 1000)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(5, vocab, (2, 7), generator=generator).to(device)
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0  # one row padded: the mask path is checked too
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            ours = model(input_ids=ids, attention_mask=mask).logits
            replaced = vars(layer).pop("forward")
            try:
                theirs = model(input_ids=ids, attention_mask=mask).logits
            finally:
                layer.forward = replaced
        # Weights not materialised here (on the meta device) cannot be compared either.
        return bool(ours.shape == theirs.shape and torch.allclose(ours, theirs, atol=_TOLERANCE))
    except Exception:  # any failure means the layer is not what this code expects
        return False
    finally:
        model.train(was_training)
