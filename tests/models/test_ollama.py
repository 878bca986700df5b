"""Ollama's template derived by example from a Jinja chat template: the pieces must
render any conversation as the Jinja template does, and a template that does more
than wrap each turn by its role is refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from transformers import AutoTokenizer

from flextrain.data.prepare import DEFAULT_CHAT_TEMPLATE
from flextrain.models.ollama import TemplateNotExpressibleError, modelfile, turn_pieces
from flextrain.models.resolve import ModelResolver

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
LLAMA3_STYLE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}"
    "<|end_header_id|>\n\n{{ m['content'] }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}"
    "<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
NO_SYSTEM = (
    "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system') }}"
    "{% endif %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}[assistant] {% endif %}"
)
COUNTING = (  # the fourth turn is marked: not a matter of role and text alone
    "{% for m in messages %}{% if loop.index0 == 3 %}(again) {% endif %}{{ m['role'] }}: "
    "{{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}"
)


@pytest.fixture(scope="module")
def tiny_llama(models_cache: Path) -> Path:
    return ModelResolver(models_cache).resolve("flextrain/tiny-llama").path


@pytest.fixture
def tokenizer(tiny_llama: Path) -> Any:
    """The tiny Llama's tokenizer (it adds BOS '<s>' itself); each test sets a template."""
    return AutoTokenizer.from_pretrained(str(tiny_llama))


CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi {{ there }}"},
    {"role": "assistant", "content": "Hello."},
    {"role": "user", "content": "Bye"},
]


@pytest.mark.parametrize("template", [DEFAULT_CHAT_TEMPLATE, CHATML, NO_SYSTEM])
def test_the_pieces_render_as_the_jinja_template(tokenizer: Any, template: str) -> None:
    tokenizer.chat_template = template
    pieces = turn_pieces(tokenizer)
    messages = CONVERSATION if "system" in pieces.before else CONVERSATION[1:]
    expected = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert pieces.render(messages) == expected
    assert ("system" in pieces.before) == (template != NO_SYSTEM)


def test_the_default_template_as_an_ollama_modelfile(tokenizer: Any, tiny_llama: Path) -> None:
    tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
    text = modelfile("m-q8_0.gguf", turn_pieces(tokenizer), tokenizer, tiny_llama)
    assert text == (
        "FROM ./m-q8_0.gguf\n"
        'TEMPLATE """{{ range .Messages }}'
        '{{ if eq .Role "system" }}<|system|>\n{{ .Content }}\n'
        '{{ else if eq .Role "user" }}<|user|>\n{{ .Content }}\n'
        '{{ else if eq .Role "assistant" }}<|assistant|>\n{{ .Content }}</s>'
        '{{ end }}{{ end }}<|assistant|>\n"""\n'
        'PARAMETER stop "</s>"\n'
        'PARAMETER stop "<|user|>"\n'
        "PARAMETER num_ctx 512\n"
        "PARAMETER temperature 0\n"
    )


def test_a_bos_in_the_template_is_left_to_the_runtime(tokenizer: Any) -> None:
    """The tokenizer adds BOS itself, and so does llama.cpp from the GGUF: a BOS written in
    Ollama's template too would be read twice."""
    tokenizer.chat_template = LLAMA3_STYLE
    pieces = turn_pieces(tokenizer)
    assert pieces.start == ""
    assert pieces.after["assistant"] == "<|eot_id|>"
    assert pieces.answer == "<|start_header_id|>assistant<|end_header_id|>\n\n"


def test_a_template_that_counts_turns_is_refused(tokenizer: Any) -> None:
    tokenizer.chat_template = COUNTING
    with pytest.raises(
        TemplateNotExpressibleError,
        match=r"cannot be written as an Ollama template \(its output depends on more than "
        r"each turn's role and text\)\. Fix: export --format gguf",
    ):
        turn_pieces(tokenizer)
