"""An Ollama Modelfile for an exported GGUF file: the chat template as Ollama's Go
template, the stop tokens, and the generation defaults.

Ollama formats a conversation with its own Go template, not the model's Jinja one.
The Go template is derived by example: the Jinja template is rendered for small
conversations whose contents are unique markers, which shows the text each role's
turn is wrapped in, what comes first and what asks for the answer. The pieces are
then checked by rendering a longer conversation both ways, and a template whose
output depends on more than the role and the content (so the pieces cannot say
it) is refused rather than approximated.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flextrain.models.trained import AfterTrainingError

MODELFILE = "Modelfile"
ROLES = ("system", "user", "assistant")
_MARK = "\u2063{}\u2063"  # invisible separators around markers no real text contains


class TemplateNotExpressibleError(AfterTrainingError):
    """The chat template cannot be written as an Ollama template."""

    code = "ollama_template"
    field = "format"


@dataclass(frozen=True)
class TurnPieces:
    """A chat template as Ollama needs it: text before everything, each role's text
    before and after its content, and the text that asks for the answer."""

    start: str
    before: dict[str, str]
    after: dict[str, str]
    answer: str

    def render(self, messages: list[dict[str, str]]) -> str:
        """The conversation as these pieces format it (what Ollama's template renders)."""
        body = "".join(
            self.before[m["role"]] + m["content"] + self.after[m["role"]] for m in messages
        )
        return self.start + body + self.answer

    def go_template(self) -> str:
        """The pieces as an Ollama (Go text/template) TEMPLATE."""
        branches = "".join(
            f'{{{{ {"if" if i == 0 else "else if"} eq .Role "{role}" }}}}'
            f"{_go_text(self.before[role])}{{{{ .Content }}}}{_go_text(self.after[role])}"
            for i, role in enumerate(r for r in ROLES if r in self.before)
        )
        return (
            f"{_go_text(self.start)}{{{{ range .Messages }}}}{branches}{{{{ end }}}}"
            f"{{{{ end }}}}{_go_text(self.answer)}"
        )


def _go_text(text: str) -> str:
    """Literal text inside a Go template (its only special sequence is '{{')."""
    return text.replace("{{", '{{ "{{" }}')


def turn_pieces(tokenizer: Any) -> TurnPieces:
    """Derive the pieces from the tokenizer's chat template; TemplateNotExpressibleError
    when the template does more than wrap each turn by its role."""
    mark = [_MARK.format(i) for i in range(8)]

    def render(messages: list[dict[str, str]], answer: bool) -> str:
        text: str = tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=answer
        )
        return text

    def turn(role: str, i: int) -> dict[str, str]:
        return {"role": role, "content": mark[i]}

    one = render([turn("user", 0)], False)
    asked = render([turn("user", 0)], True)
    two = render([turn("user", 0), turn("assistant", 1)], False)
    three = render([turn("user", 0), turn("assistant", 1), turn("user", 2)], False)
    if not (asked.startswith(one) and two.startswith(one) and three.startswith(two)):
        raise _not_expressible("a turn changes the text of the turns before it")
    answer = asked[len(one) :]
    user_before = three[len(two) : three.index(mark[2])]
    start = one[: one.index(mark[0])]
    if not start.endswith(user_before):
        raise _not_expressible("the first turn is not wrapped like the others")
    start = start[: len(start) - len(user_before)]
    user_after = one[one.index(mark[0]) + len(mark[0]) :]
    assistant = two[len(one) :]
    before = {
        "user": user_before,
        "assistant": assistant[: assistant.index(mark[1])],
    }
    after = {
        "user": user_after,
        "assistant": assistant[assistant.index(mark[1]) + len(mark[1]) :],
    }
    try:
        with_system = render([turn("system", 3), turn("user", 0)], False)
    except Exception:  # templates may refuse a system turn (jinja raise_exception)
        with_system = None
    if with_system is not None and with_system.endswith(one[len(start) :]):
        head = with_system[: len(with_system) - len(one) + len(start)]
        if head.startswith(start) and mark[3] in head:
            system = head[len(start) :]
            before["system"] = system[: system.index(mark[3])]
            after["system"] = system[system.index(mark[3]) + len(mark[3]) :]
    pieces = TurnPieces(start, before, after, answer)
    _check(pieces, render, mark)
    bos = tokenizer.bos_token
    if bos and start.startswith(bos) and _adds_bos(tokenizer):
        # The runtime adds BOS itself (the GGUF says so), as the tokenizer does: written
        # in the template too, it would come twice.
        pieces = TurnPieces(start[len(bos) :], before, after, answer)
    return pieces


def _adds_bos(tokenizer: Any) -> bool:
    ids = tokenizer("a")["input_ids"]
    return bool(ids) and ids[0] == tokenizer.bos_token_id


def _check(pieces: TurnPieces, render: Any, mark: list[str]) -> None:
    """Render a longer conversation both ways: the pieces must give the same text."""
    roles = ["user", "assistant", "user", "assistant", "user"]
    if "system" in pieces.before:
        roles = ["system", *roles]
    messages = [{"role": r, "content": mark[i] + "text " + str(i)} for i, r in enumerate(roles)]
    if render(messages, True) != pieces.render(messages):
        raise _not_expressible("its output depends on more than each turn's role and text")


def _not_expressible(why: str) -> TemplateNotExpressibleError:
    return TemplateNotExpressibleError(
        f"format ollama: the model's chat template cannot be written as an Ollama template "
        f"({why}). Fix: export --format gguf and write the Modelfile's TEMPLATE by hand."
    )


def modelfile(gguf_name: str, pieces: TurnPieces | None, tokenizer: Any, folder: Path) -> str:
    """The Modelfile text: FROM the GGUF beside it, TEMPLATE, stops, parameters."""
    lines = [f"FROM ./{gguf_name}"]
    if pieces is not None:
        lines.append(f'TEMPLATE """{pieces.go_template()}"""')
    stops = []
    if tokenizer.eos_token:
        stops.append(tokenizer.eos_token)
    if pieces is not None:
        for text in (pieces.before["user"].strip(), pieces.after["assistant"].strip()):
            if text and text not in stops:
                stops.append(text)
    lines += [f"PARAMETER stop {json.dumps(s)}" for s in stops]
    lines += [f"PARAMETER {k} {v}" for k, v in _parameters(folder).items()]
    return "\n".join(lines) + "\n"


def _parameters(folder: Path) -> dict[str, Any]:
    """Generation defaults from the model's config: context length, and greedy decoding
    (temperature 0) when the generation config does not sample."""
    params: dict[str, Any] = {}
    try:
        config = json.loads((folder / "config.json").read_text())
        params["num_ctx"] = min(int(config["max_position_embeddings"]), 8192)
    except (OSError, ValueError, KeyError):
        pass
    try:
        generation = json.loads((folder / "generation_config.json").read_text())
    except (OSError, ValueError):
        generation = {}
    if not generation.get("do_sample"):
        params["temperature"] = 0
    else:
        for key, name in (("temperature", "temperature"), ("top_p", "top_p"), ("top_k", "top_k")):
            if key in generation:
                params[name] = generation[key]
    if "repetition_penalty" in generation:
        params["repeat_penalty"] = generation["repetition_penalty"]
    return params
