"""GRPO's reward functions: the built-ins a config names, and user functions.

TRL calls each reward function with a batch: `prompts`, `completions` and every
other column of the data as keyword lists. Each function here is wrapped so an
exception names the function and the row it failed on (found by calling it again
row by row), and so a function that returns the wrong number of values, or a
value that is not a number, says so: the job then fails with that message instead
of hanging in TRL's gather or training on garbage.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any

from flextrain.config.preference import RewardSpec
from flextrain.train import usercode
from flextrain.train.usercode import UserCodeError

RewardFn = Callable[..., list[float]]


class RewardFunctionError(UserCodeError):
    """A reward function raised or returned something unusable; names it and the row."""

    code = "reward_function"


def text_of(completion: Any) -> str:
    """A completion's text: plain text as it is, a conversational one's last message."""
    if isinstance(completion, list):
        return str(completion[-1].get("content", "")) if completion else ""
    return str(completion)


def builtin_reward(spec: RewardSpec) -> RewardFn:
    """The reward function of a built-in spec (see RewardSpec for each one's meaning)."""
    pattern = re.compile(spec.pattern) if spec.pattern else None

    def reference(kw: dict[str, Any], n: int) -> list[str]:
        refs = kw.get("completion")
        return [text_of(r) for r in refs] if refs is not None else [""] * n

    def one(completions: Sequence[Any], **kw: Any) -> list[float]:
        texts = [text_of(c) for c in completions]
        if spec.name == "contains":
            assert pattern is not None
            return [1.0 if pattern.search(t) else 0.0 for t in texts]
        if spec.name == "format":
            assert pattern is not None
            return [1.0 if pattern.fullmatch(t.strip()) else 0.0 for t in texts]
        if spec.name == "length":
            target = float(spec.target_length or 1)
            return [max(0.0, 1.0 - abs(len(t) - target) / target) for t in texts]
        refs = reference(kw, len(texts))
        if spec.name == "exact_match":
            return [
                1.0 if t.strip() == r.strip() else 0.0 for t, r in zip(texts, refs, strict=True)
            ]
        assert pattern is not None  # regex_match
        return [_same_answer(pattern, t, r) for t, r in zip(texts, refs, strict=True)]

    one.__name__ = spec.name
    return one


def _same_answer(pattern: re.Pattern[str], text: str, reference: str) -> float:
    """1 when the answer `pattern` extracts from the completion equals the reference's
    (what the pattern extracts from it, or the whole reference when it finds nothing:
    a reference column often holds the bare answer)."""
    got = _extract(pattern, text)
    want = _extract(pattern, reference)
    return (
        1.0 if got is not None and got == (want if want is not None else reference.strip()) else 0.0
    )


def _extract(pattern: re.Pattern[str], text: str) -> str | None:
    """The first group of `pattern`'s first match in `text` (the whole match without
    groups), stripped; None without a match."""
    found = pattern.search(text)
    if found is None:
        return None
    return (found.group(1) if pattern.groups else found.group(0)).strip()


def reward_functions(
    builtins: list[RewardSpec], user: list[str], code_dir: str | None
) -> tuple[list[RewardFn], list[float]]:
    """Every reward of the run, each guarded (see the module docstring), with weights."""
    functions: list[RewardFn] = []
    weights: list[float] = []
    for spec in builtins:
        functions.append(guarded(builtin_reward(spec), f"reward '{spec.name}'"))
        weights.append(spec.weight)
    for ref in user:
        fn = usercode.load(ref, code_dir)
        if not callable(fn):
            raise RewardFunctionError(f"{ref}: is not a function.")
        functions.append(guarded(fn, ref, code_dir))
        weights.append(1.0)
    return functions, weights


def guarded(fn: RewardFn, name: str, code_dir: str | None = None) -> RewardFn:
    """`fn` with its failures told by name and row (TRL names reward functions by
    __name__, so the wrapper keeps it)."""

    def call(prompts: list[Any], completions: list[Any], **kw: Any) -> list[float]:
        try:
            values = fn(prompts=prompts, completions=completions, **kw)
        except Exception as exc:
            row = _failing_row(fn, prompts, completions, kw)
            where = ""
            if row is not None:
                where = f" on the completion of prompt {text_of(prompts[row])[:80]!r}"
            detail = usercode.describe(exc, code_dir)
            raise RewardFunctionError(f"{name} raised {detail}{where}.") from exc
        return _checked(name, values, len(completions), prompts)

    call.__name__ = getattr(fn, "__name__", name)
    return call


def _checked(name: str, values: Any, n: int, prompts: list[Any]) -> list[float]:
    if not isinstance(values, list | tuple) or len(values) != n:
        got = len(values) if isinstance(values, list | tuple) else type(values).__name__
        raise RewardFunctionError(
            f"{name} returned {got} values for {n} completions. Fix: return one number "
            "(or None to skip) per completion."
        )
    out: list[float] = []
    for i, value in enumerate(values):
        if value is None:  # TRL's way to say "not mine to score"
            out.append(math.nan)
            continue
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not number or not math.isfinite(value):
            raise RewardFunctionError(
                f"{name} returned {value!r} for the completion of prompt "
                f"{text_of(prompts[i])[:80]!r}. Fix: return a finite number per completion."
            )
        out.append(float(value))
    return out


def _failing_row(
    fn: RewardFn, prompts: list[Any], completions: list[Any], kw: dict[str, Any]
) -> int | None:
    """The first row `fn` fails on when called alone, or None (it fails only batched)."""
    for i in range(len(completions)):
        one = {k: v[i : i + 1] if isinstance(v, list) else v for k, v in kw.items()}
        try:
            fn(prompts=prompts[i : i + 1], completions=completions[i : i + 1], **one)
        except Exception:
            return i
    return None
