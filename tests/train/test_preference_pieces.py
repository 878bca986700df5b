"""The pieces of preference training without a trainer: built-in rewards, the rows each
method reads (implicit prompts, conversations, KTO from pairs), held-out preference
accuracy, and the shapes the data is detected as."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from flextrain.config.enums import TrainingType
from flextrain.config.preference import RewardSpec
from flextrain.data.checks import check_records, identical_pairs
from flextrain.data.shapes import detect_shape
from flextrain.train.preference.data import to_method_rows
from flextrain.train.preference.evaluate import preference_accuracy
from flextrain.train.preference.rewards import RewardFunctionError, builtin_reward, guarded
from tests.train.helpers import tiny_llama

COMPLETIONS = ["The answer is 42.", "It is 41", "#### 42", ""]


def _reward(**spec: Any) -> list[float]:
    return builtin_reward(RewardSpec(**spec))(
        completions=COMPLETIONS, completion=["42"] * len(COMPLETIONS)
    )


def test_builtin_rewards_score_each_completion() -> None:
    assert _reward(name="contains", pattern=r"\b42\b") == [1.0, 0.0, 1.0, 0.0]
    assert _reward(name="format", pattern=r"#### \d+") == [0.0, 0.0, 1.0, 0.0]
    assert _reward(name="exact_match") == [0.0, 0.0, 0.0, 0.0]
    # The number after "is" or "####", compared with the bare reference answer.
    assert _reward(name="regex_match", pattern=r"(?:is|####) (\d+)") == [1.0, 0.0, 1.0, 0.0]
    assert _reward(name="length", target_length=8) == pytest.approx([0.0, 1.0, 0.875, 0.0])


def test_a_conversational_completion_is_scored_by_its_text() -> None:
    fn = builtin_reward(RewardSpec(name="contains", pattern="yes"))
    assert fn(completions=[[{"role": "assistant", "content": "yes"}]]) == [1.0]


def test_a_reward_that_returns_a_non_number_is_refused_by_name() -> None:
    def bad(prompts: list[str], completions: list[str], **kw: Any) -> list[Any]:
        return ["high" for _ in completions]

    with pytest.raises(RewardFunctionError, match=r"mine returned 'high' for the completion"):
        guarded(bad, "mine")(prompts=["p"], completions=["c"])


def test_pairs_become_each_methods_rows() -> None:
    pair = {"shape": "preference", "prompt": "Q?", "chosen": "good", "rejected": "bad"}
    assert to_method_rows([pair], TrainingType.DPO) == [
        {"prompt": "Q?", "chosen": "good", "rejected": "bad"}
    ]
    assert to_method_rows([pair], TrainingType.KTO) == [
        {"prompt": "Q?", "completion": "good", "label": True},
        {"prompt": "Q?", "completion": "bad", "label": False},
    ]
    assert to_method_rows([pair], TrainingType.GRPO) == [{"prompt": "Q?", "completion": "good"}]


def test_an_implicit_prompt_is_the_shared_start_of_two_conversations() -> None:
    user = {"role": "user", "content": "Hi?"}
    good = {"role": "assistant", "content": "Hello!"}
    bad = {"role": "assistant", "content": "Go away."}
    pair = {"shape": "preference", "prompt": None, "chosen": [user, good], "rejected": [user, bad]}
    assert to_method_rows([pair], TrainingType.ORPO) == [
        {"prompt": [user], "chosen": [good], "rejected": [bad]}
    ]
    # Text prompt with conversational answers: the prompt becomes the user turn.
    mixed = {"shape": "preference", "prompt": "Hi?", "chosen": [good], "rejected": [bad]}
    assert to_method_rows([mixed], TrainingType.DPO)[0]["prompt"] == [user]


def test_shapes_of_preference_data_are_detected() -> None:
    assert detect_shape([{"prompt": "a", "chosen": "b", "rejected": "c"}]) == "preference"
    assert detect_shape([{"prompt": "a", "completion": "b", "label": "true"}]) == "unpaired"
    # A numeric or class label is not KTO's flag: that is completion data with a column.
    assert detect_shape([{"prompt": "a", "completion": "b", "label": 3}]) == "completion"
    assert detect_shape([{"question": "a"}]) == "prompt"


def test_pair_checks_name_rows_and_count_identical_answers() -> None:
    rows = [
        {"prompt": "a", "chosen": "x", "rejected": "x"},
        {"prompt": "b", "chosen": "", "rejected": "y"},
        {"chosen": "plain", "rejected": "text"},
        {"prompt": "c", "chosen": 5, "rejected": "z"},
    ]
    report = check_records(rows, "preference")
    lines = report.issue_lines()
    assert identical_pairs(report) == 1
    assert "error: row 2, chosen: is empty" in lines
    assert any(
        "row 3, prompt: is missing and the answers are not conversations" in x for x in lines
    )
    assert "error: row 4, chosen: must be text or a list of messages, got int" in lines
    marked = check_records([{"prompt": "a", "completion": "b", "label": "maybe"}], "unpaired")
    assert "must be true or false" in marked.issue_lines()[0]


class _WordTokenizer:
    """One token per character: enough for the accuracy's bookkeeping."""

    pad_token_id = 0
    eos_token_id = 1

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        return {"input_ids": [2 + (ord(c) % 60) for c in text]}


def test_preference_accuracy_follows_the_model() -> None:
    model = tiny_llama()
    rows = [{"prompt": "ab", "chosen": "cd", "rejected": "ef"}] * 3
    with torch.no_grad():
        # Make one token (the chosen answer's first) far more likely after any input.
        model.lm_head.weight[2 + (ord("c") % 60)] += 5.0
    result = preference_accuracy(model, _WordTokenizer(), rows, max_length=16)
    assert result["preference_accuracy"] == 1.0
    assert result["logp_margin"] > 0
