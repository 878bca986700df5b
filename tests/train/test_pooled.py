"""The last encoder layer at the classified position only (train/pooled.py): the same
logits, loss and gradients as the whole layer, or the model is left as it was."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    LlamaConfig,
    LlamaForSequenceClassification,
    RobertaConfig,
    RobertaForSequenceClassification,
)

from flextrain.train.pooled import first_position_only

SIZES = dict(
    vocab_size=120,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    max_position_embeddings=40,
    num_labels=3,
)


def _bert(attn: str = "sdpa", dropout: float = 0.0, **extra: Any) -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = BertConfig(
        **SIZES, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout, **extra
    )
    config._attn_implementation = attn
    return BertForSequenceClassification(config)


def _batch() -> dict[str, torch.Tensor]:
    ids = torch.randint(5, 120, (3, 9), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[0, 5:] = 0
    mask[2, 2:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 2, 1])}


def _loss_and_grads(model: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.train()
    model.zero_grad()
    out = model(**_batch())
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.logits.detach(), grads


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_logits_loss_and_every_gradient_equal_the_whole_layers(attn: str) -> None:
    whole = _bert(attn)
    first = copy.deepcopy(whole)
    assert first_position_only(first)
    assert "forward" in vars(first.bert.encoder.layer[-1])
    assert "forward" not in vars(first.bert.encoder.layer[0])

    want_logits, want = _loss_and_grads(whole)
    got_logits, got = _loss_and_grads(first)
    torch.testing.assert_close(got_logits, want_logits, atol=1e-5, rtol=1e-5)
    assert got.keys() == want.keys()
    for name, grad in want.items():
        torch.testing.assert_close(got[name], grad, atol=1e-5, rtol=1e-4, msg=name)
    # What the last layer no longer computes has no gradient to give: its query weights
    # see the first position only, and still get one.
    assert got["bert.encoder.layer.1.attention.self.query.weight"].abs().sum() > 0


def test_a_roberta_classifier_and_a_lora_wrapped_bert_are_done_too() -> None:
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    config = RobertaConfig(**SIZES, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    config.max_position_embeddings = 48
    roberta = RobertaForSequenceClassification(config)
    whole = copy.deepcopy(roberta)
    assert first_position_only(roberta)
    torch.testing.assert_close(_loss_and_grads(roberta)[0], _loss_and_grads(whole)[0])

    lora = get_peft_model(
        _bert(), LoraConfig(r=4, target_modules=["query", "value"], task_type="SEQ_CLS")
    )
    plain = copy.deepcopy(lora)
    assert first_position_only(lora)
    logits, grads = _loss_and_grads(lora)
    want_logits, want = _loss_and_grads(plain)
    torch.testing.assert_close(logits, want_logits, atol=1e-5, rtol=1e-5)
    for name, grad in want.items():
        torch.testing.assert_close(grads[name], grad, atol=1e-5, rtol=1e-4, msg=name)


def test_with_dropout_it_trains_and_dropout_still_acts() -> None:
    model = _bert(dropout=0.1)
    assert first_position_only(model)
    model.train()
    torch.manual_seed(3)
    one = model(**_batch()).logits
    two = model(**_batch()).logits
    assert not torch.equal(one, two)  # dropout masks differ from call to call
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(**_batch()).logits, model(**_batch()).logits)


def test_other_models_and_other_layers_keep_their_own_forward() -> None:
    llama = LlamaForSequenceClassification(
        LlamaConfig(
            vocab_size=120,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_labels=2,
            pad_token_id=0,
        )
    )
    assert not first_position_only(llama)  # it reads the last token, not the first
    chunked = _bert(chunk_size_feed_forward=2)
    assert not first_position_only(chunked)
    assert "forward" not in vars(chunked.bert.encoder.layer[-1])


def test_a_layer_that_does_not_check_out_equal_is_put_back() -> None:
    """A layer whose output depends on more than this code knows (here: the sequence
    length reaches the feed-forward) fails the check; its forward is restored."""
    model = _bert()
    layer = model.bert.encoder.layer[-1]
    layer.intermediate.register_forward_hook(lambda mod, args, out: out + args[0].shape[1])
    before = model(**_batch()).logits.detach()
    assert not first_position_only(model)
    assert "forward" not in vars(layer)
    assert model.training  # the check's eval() is undone
    torch.testing.assert_close(model(**_batch()).logits.detach(), before)


def test_the_estimate_knows_the_same_models() -> None:
    """estimate/timing.py (pure: no transformers) lists the model types of these
    classes, and counts their skipped work."""
    import transformers

    from flextrain.estimate.timing import FIRST_TOKEN_MODEL_TYPES
    from flextrain.train.pooled import FIRST_TOKEN_CLASSIFIERS

    types = {
        getattr(transformers, name).config_class.model_type for name in FIRST_TOKEN_CLASSIFIERS
    }
    assert types == FIRST_TOKEN_MODEL_TYPES
