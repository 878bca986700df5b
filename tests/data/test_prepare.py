"""Preparing records for a causal LM: rendering, completion-only masks, the cache.

Uses the built-in tiny Llama tokenizer (byte-level BPE, adds a BOS, no chat
template of its own), so the default template is what it renders with unless a
test gives it one.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from flextrain.data.prepare import (
    DEFAULT_CHAT_TEMPLATE,
    IGNORE_INDEX,
    TemplateError,
    cache_key,
    prepare_split,
    segments,
    tokenize_example,
    tokenize_processes,
)
from flextrain.models.resolve import ModelResolver

CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + "
    "'<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
CONVERSATION = {
    "messages": [
        {"role": "system", "content": "be kind"},
        {"role": "user", "content": "hi there"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "more please"},
        {"role": "assistant", "content": "ok then"},
    ]
}
INSTRUCTION = {"instruction": "Add the numbers.", "input": "2 and 3", "output": "five"}
OPTIONS = {"shape": "chat", "completion_only": True}
RECORDS = [
    {"instruction": f"Say {word}.", "input": "", "output": word}
    for word in ("red", "green", "blue", "warm", "cold", "bright")
]


@pytest.fixture(scope="module")
def tokenizer(models_cache: Path) -> Any:
    from transformers import AutoTokenizer

    folder = ModelResolver(models_cache).resolve("flextrain/tiny-llama").path
    return AutoTokenizer.from_pretrained(folder)


@pytest.fixture
def chatml_tokenizer(tokenizer: Any) -> Any:
    templated = copy.deepcopy(tokenizer)
    templated.chat_template = CHATML
    return templated


def encode(tokenizer: Any, text: str) -> list[int]:
    ids: list[int] = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids


def trained_text(tokenizer: Any, example: dict[str, list[int]]) -> str:
    ids = [
        i
        for i, label in zip(example["input_ids"], example["labels"], strict=True)
        if label != IGNORE_INDEX
    ]
    text: str = tokenizer.decode(ids)
    return text


def masked_runs(example: dict[str, list[int]]) -> list[bool]:
    """Whether each run of equal mask state is trained, in order: [F, T, F, T] etc."""
    runs: list[bool] = []
    for label in example["labels"]:
        trained = label != IGNORE_INDEX
        if not runs or runs[-1] != trained:
            runs.append(trained)
    return runs


def assert_labels_are_ids_or_ignored(example: dict[str, list[int]]) -> None:
    assert len(example["input_ids"]) == len(example["labels"]) == len(example["attention_mask"])
    assert all(a == 1 for a in example["attention_mask"])
    for token, label in zip(example["input_ids"], example["labels"], strict=True):
        assert label in (IGNORE_INDEX, token)


class TestDefaultTemplate:
    def test_renders_the_documented_format(self, tokenizer: Any) -> None:
        turns = CONVERSATION["messages"]
        text = tokenizer.apply_chat_template(
            turns, chat_template=DEFAULT_CHAT_TEMPLATE, tokenize=False
        )
        assert text == (
            "<|system|>\nbe kind\n<|user|>\nhi there\n<|assistant|>\nhello</s>"
            "<|user|>\nmore please\n<|assistant|>\nok then</s>"
        )
        prompt = tokenizer.apply_chat_template(
            turns[:2],
            chat_template=DEFAULT_CHAT_TEMPLATE,
            add_generation_prompt=True,
            tokenize=False,
        )
        assert prompt == "<|system|>\nbe kind\n<|user|>\nhi there\n<|assistant|>\n"


class TestInstruction:
    def test_every_prompt_token_is_ignored_and_every_answer_token_trained(
        self, tokenizer: Any
    ) -> None:
        example = tokenize_example(INSTRUCTION, "instruction", tokenizer, 128)
        prompt = encode(tokenizer, "<|user|>\nAdd the numbers.\n\n2 and 3\n<|assistant|>\n")
        answer = encode(tokenizer, "five</s>")
        assert example["input_ids"] == [tokenizer.bos_token_id, *prompt, *answer]
        assert example["labels"] == [IGNORE_INDEX] * (1 + len(prompt)) + answer
        assert answer[-1] == tokenizer.eos_token_id  # the model learns to stop

    def test_empty_input_is_left_out_of_the_prompt(self, tokenizer: Any) -> None:
        pieces = segments({**INSTRUCTION, "input": ""}, "instruction", tokenizer)
        assert pieces == [
            ("<|user|>\nAdd the numbers.\n<|assistant|>\n", False),
            ("five</s>", True),
        ]

    def test_without_completion_only_every_token_is_trained(self, tokenizer: Any) -> None:
        example = tokenize_example(
            INSTRUCTION, "instruction", tokenizer, 128, completion_only=False
        )
        # Every token but the first, which nothing predicts (see _assemble).
        assert example["labels"] == [-100, *example["input_ids"][1:]]
        masked = tokenize_example(INSTRUCTION, "instruction", tokenizer, 128)
        assert masked["input_ids"] == example["input_ids"]  # only the labels differ


class TestCompletion:
    def test_prompt_ignored_completion_and_eos_trained(self, tokenizer: Any) -> None:
        record = {"prompt": "The sky was", "completion": " bright today"}
        example = tokenize_example(record, "completion", tokenizer, 128)
        prompt, completion = encode(tokenizer, "The sky was"), encode(tokenizer, " bright today")
        eos = tokenizer.eos_token_id
        assert example["input_ids"] == [tokenizer.bos_token_id, *prompt, *completion, eos]
        assert example["labels"] == [IGNORE_INDEX] * (1 + len(prompt)) + [*completion, eos]

    def test_add_eos_off(self, tokenizer: Any) -> None:
        record = {"prompt": "The sky was", "completion": " bright"}
        example = tokenize_example(record, "completion", tokenizer, 128, add_eos=False)
        assert example["input_ids"][-1] != tokenizer.eos_token_id


class TestText:
    def test_one_trained_piece_with_eos(self, tokenizer: Any) -> None:
        assert segments({"text": "the river"}, "text", tokenizer) == [("the river", True)]
        example = tokenize_example({"text": "the river"}, "text", tokenizer, 128)
        # The same ids as tokenising text + eos in one go (what training did before).
        assert example["input_ids"] == tokenizer("the river</s>")["input_ids"]
        assert example["labels"][1:] == example["input_ids"][1:]


class TestChat:
    def test_default_template_trains_both_assistant_turns_only(self, tokenizer: Any) -> None:
        example = tokenize_example(CONVERSATION, "chat", tokenizer, 256)
        assert_labels_are_ids_or_ignored(example)
        assert masked_runs(example) == [False, True, False, True]
        assert trained_text(tokenizer, example) == "hello</s>ok then</s>"
        untrained = [
            i
            for i, label in zip(example["input_ids"], example["labels"], strict=True)
            if label == IGNORE_INDEX
        ]
        assert tokenizer.decode(untrained) == (
            "<s><|system|>\nbe kind\n<|user|>\nhi there\n<|assistant|>\n"
            "<|user|>\nmore please\n<|assistant|>\n"
        )

    def test_the_tokenizers_own_template_is_used_when_it_has_one(
        self, tokenizer: Any, chatml_tokenizer: Any
    ) -> None:
        pieces = segments(CONVERSATION, "chat", chatml_tokenizer)
        assert pieces == [
            (
                "<|im_start|>system\nbe kind<|im_end|>\n<|im_start|>user\nhi there<|im_end|>\n"
                "<|im_start|>assistant\n",
                False,
            ),
            ("hello<|im_end|>\n", True),
            ("<|im_start|>user\nmore please<|im_end|>\n<|im_start|>assistant\n", False),
            ("ok then<|im_end|>\n", True),
        ]
        example = tokenize_example(CONVERSATION, "chat", chatml_tokenizer, 256)
        assert trained_text(chatml_tokenizer, example) == "hello<|im_end|>\nok then<|im_end|>\n"
        assert masked_runs(example) == [False, True, False, True]
        default = tokenize_example(CONVERSATION, "chat", tokenizer, 256)
        assert default["input_ids"] != example["input_ids"]

    def test_instruction_data_uses_the_template_too(self, chatml_tokenizer: Any) -> None:
        pieces = segments(INSTRUCTION, "instruction", chatml_tokenizer)
        assert pieces == [
            (
                "<|im_start|>user\nAdd the numbers.\n\n2 and 3<|im_end|>\n<|im_start|>assistant\n",
                False,
            ),
            ("five<|im_end|>\n", True),
        ]

    def test_a_template_that_writes_bos_gets_no_second_one(self, tokenizer: Any) -> None:
        templated = copy.deepcopy(tokenizer)
        templated.chat_template = "{{ bos_token }}" + CHATML
        example = tokenize_example(CONVERSATION, "chat", templated, 256)
        assert example["input_ids"][0] == tokenizer.bos_token_id
        assert example["input_ids"][1] != tokenizer.bos_token_id

    def test_a_template_that_rewrites_earlier_turns_is_refused(self, tokenizer: Any) -> None:
        templated = copy.deepcopy(tokenizer)
        # Numbers turns from the end: each new message changes the earlier ones.
        templated.chat_template = (
            "{% for m in messages %}{{ (messages|length - loop.index)|string + m['content'] }}"
            "{% endfor %}"
        )
        with pytest.raises(TemplateError, match="rewrites earlier turns"):
            segments(CONVERSATION, "chat", templated)

    def test_truncation_keeps_the_mask_aligned(self, tokenizer: Any) -> None:
        full = tokenize_example(CONVERSATION, "chat", tokenizer, 256)
        first_answer = full["labels"].index(next(x for x in full["labels"] if x != IGNORE_INDEX))
        cut = first_answer + 2  # inside the first assistant turn
        short = tokenize_example(CONVERSATION, "chat", tokenizer, cut)
        assert len(short["input_ids"]) == cut
        assert short == {name: values[:cut] for name, values in full.items()}
        assert_labels_are_ids_or_ignored(short)
        assert short["labels"][first_answer:] == short["input_ids"][first_answer:]


class TestCacheKey:
    def test_same_inputs_same_key_even_with_a_reloaded_tokenizer(
        self, tokenizer: Any, models_cache: Path
    ) -> None:
        from transformers import AutoTokenizer

        again = AutoTokenizer.from_pretrained(tokenizer.name_or_path)
        assert cache_key("v1", tokenizer, 32, OPTIONS) == cache_key("v1", again, 32, dict(OPTIONS))

    def test_changes_with_version_length_options_and_template(
        self, tokenizer: Any, chatml_tokenizer: Any
    ) -> None:
        base = cache_key("v1", tokenizer, 32, OPTIONS)
        others = [
            cache_key("v2", tokenizer, 32, OPTIONS),
            cache_key("v1", tokenizer, 64, OPTIONS),
            cache_key("v1", tokenizer, 32, {**OPTIONS, "completion_only": False}),
            cache_key("v1", chatml_tokenizer, 32, OPTIONS),
        ]
        assert len({base, *others}) == 5


class TestPrepareSplit:
    def test_second_call_is_a_cache_hit_with_the_same_rows(
        self, tokenizer: Any, tmp_path: Path
    ) -> None:
        key = cache_key("v1", tokenizer, 64, {"shape": "instruction"})
        first, hit = prepare_split(
            RECORDS,
            "instruction",
            tokenizer,
            64,
            cache_dir=tmp_path,
            key=key,
            completion_only=True,
        )
        assert not hit
        assert (tmp_path / key).is_dir()
        assert [p.name for p in tmp_path.iterdir()] == [key]  # no staging folder left
        second, hit = prepare_split(
            iter(()),  # a hit does not read the records
            "instruction",
            tokenizer,
            64,
            cache_dir=tmp_path,
            key=key,
            completion_only=True,
        )
        assert hit
        assert second.to_list() == first.to_list()
        expected = [tokenize_example(r, "instruction", tokenizer, 64) for r in RECORDS]
        assert first.to_list() == expected

    def test_several_processes_give_the_same_rows_in_the_same_order(self, tokenizer: Any) -> None:
        records = [
            {"instruction": f"Say {word} {i}.", "input": "", "output": f"{word} {i}"}
            for i in range(7)
            for word in ("red", "green", "blue")
        ]
        common = {"cache_dir": None, "key": None, "completion_only": True}
        alone, _ = prepare_split(records, "instruction", tokenizer, 64, processes=1, **common)
        shared, _ = prepare_split(records, "instruction", tokenizer, 64, processes=3, **common)
        assert shared.to_list() == alone.to_list()
        assert len(alone) == 21

    def test_processes_grow_with_the_data_up_to_the_cores(self) -> None:
        assert tokenize_processes(2_000, cores=16) == 1
        assert tokenize_processes(35_000, cores=16) == 3
        assert tokenize_processes(1_000_000, cores=16) == 8
        assert tokenize_processes(1_000_000, cores=2) == 2

    def test_without_a_key_nothing_is_cached(self, tokenizer: Any, tmp_path: Path) -> None:
        dataset, hit = prepare_split(
            RECORDS,
            "instruction",
            tokenizer,
            64,
            cache_dir=tmp_path,
            key=None,
            completion_only=True,
        )
        assert not hit
        assert len(dataset) == len(RECORDS)
        assert list(tmp_path.iterdir()) == []

    def test_examples_with_nothing_to_train_within_max_length_are_left_out(
        self, tokenizer: Any
    ) -> None:
        long_prompt = {"instruction": "the river " * 40, "input": "", "output": "x"}
        dataset, _ = prepare_split(
            [*RECORDS, long_prompt],
            "instruction",
            tokenizer,
            32,
            cache_dir=None,
            key=None,
            completion_only=True,
        )
        assert len(dataset) == len(RECORDS)
        with pytest.raises(ValueError, match="raise max_length"):
            prepare_split(
                [long_prompt],
                "instruction",
                tokenizer,
                32,
                cache_dir=None,
                key=None,
                completion_only=True,
            )
