"""Expression schedules: exact values, LambdaLR, and everything unsafe refused."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import pytest

from flextrain.config.expression import (
    ExpressionError,
    compile_schedule,
    lr_lambda,
    plot_schedule,
    schedule_values,
)

WARMUP_COSINE = "lr * min(1, step / warmup) * 0.5 * (1 + cos(pi * progress))"


def _warmup_cosine(step: int, *, lr: float, warmup: int, total: int) -> float:
    return lr * min(1, step / warmup) * 0.5 * (1 + math.cos(math.pi * (step / total)))


class TestValues:
    def test_warmup_then_cosine_decay_gives_exact_lr(self) -> None:
        lr, warmup, total = 3e-4, 10, 100
        values = schedule_values(WARMUP_COSINE, lr=lr, total_steps=total, warmup=warmup)

        assert len(values) == total
        for step in (0, warmup // 2, warmup, total // 2, total - 1):
            assert values[step] == _warmup_cosine(step, lr=lr, warmup=warmup, total=total)
        assert values[0] == 0.0
        assert values[warmup] == max(values)  # the peak is where warm-up ends
        assert values[total // 2] == pytest.approx(lr / 2)

    def test_constant_lr(self) -> None:
        assert schedule_values("lr", lr=2e-5, total_steps=4) == [2e-5] * 4

    def test_conditional_form(self) -> None:
        text = "lr * step / warmup if step < warmup else lr / 10 if progress >= 0.5 else lr"
        values = schedule_values(text, lr=1.0, total_steps=8, warmup=2)

        assert values == [0.0, 0.5, 1.0, 1.0, 0.1, 0.1, 0.1, 0.1]

    def test_boolean_operators_short_circuit(self) -> None:
        # `step > 0 and lr / step` would divide by zero at step 0 without short-circuiting
        values = schedule_values("step > 0 and lr / step or lr", lr=1.0, total_steps=3)

        assert values == [1.0, 1.0, 0.5]

    def test_epoch_uses_steps_per_epoch(self) -> None:
        values = schedule_values(
            "lr * 0.5 ** floor(epoch)", lr=1.0, total_steps=7, steps_per_epoch=3
        )

        assert values == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25]

    def test_epoch_without_steps_per_epoch_is_refused(self) -> None:
        with pytest.raises(ExpressionError, match="steps_per_epoch"):
            schedule_values("lr * epoch", lr=1.0, total_steps=3)

    def test_value_at_a_single_step(self) -> None:
        schedule = compile_schedule("  lr * (1 - progress)  ")

        assert schedule.value(step=25, total_steps=100, lr=0.4) == pytest.approx(0.3)
        assert schedule.source == "lr * (1 - progress)"

    def test_no_steps_is_refused(self) -> None:
        with pytest.raises(ExpressionError, match="total_steps must be 1 or more"):
            schedule_values("lr", lr=1.0, total_steps=0)


class TestLambdaLR:
    def test_optimizer_lr_follows_the_schedule_and_other_groups_keep_their_ratio(
        self, tmp_path: Path
    ) -> None:
        torch = pytest.importorskip("torch")
        lr, warmup, total = 0.1, 4, 20
        schedule = compile_schedule(WARMUP_COSINE)
        main, head = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
        optimizer = torch.optim.SGD([{"params": [main]}, {"params": [head], "lr": lr / 10}], lr=lr)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lr_lambda(schedule, lr=lr, total_steps=total, warmup=warmup)
        )

        for k in range(total):
            expected = schedule.value(step=k, total_steps=total, lr=lr, warmup=warmup)
            assert optimizer.param_groups[0]["lr"] == pytest.approx(expected, rel=1e-12, abs=0)
            assert optimizer.param_groups[1]["lr"] == pytest.approx(expected / 10, rel=1e-12)
            optimizer.step()
            scheduler.step()

        # the multiplier is a plain function, so it stays out of checkpoints
        torch.save(scheduler.state_dict(), tmp_path / "scheduler.pt")
        torch.load(tmp_path / "scheduler.pt", weights_only=True)

    def test_peak_lr_must_be_positive(self) -> None:
        with pytest.raises(ExpressionError, match="above 0"):
            lr_lambda(compile_schedule("lr"), lr=0.0, total_steps=10)

    def test_multiplier_refuses_a_negative_lr_naming_the_step(self) -> None:
        multiplier = lr_lambda(compile_schedule("lr * (5 - step)"), lr=1.0, total_steps=10)

        assert multiplier(5) == 0.0
        with pytest.raises(ExpressionError, match=r"negative .* at step 6"):
            multiplier(6)


class TestRejected:
    @pytest.mark.parametrize(
        ("text", "message"),
        [
            (
                "__import__('os').system('x')",
                r"attribute access .* in `__import__\('os'\)\.system`",
            ),
            ("__import__('os')", r"unknown function `__import__`.*functions that exist are cos"),
            ("().__class__", r"attribute access .* in `\(\)\.__class__`"),
            ("().__class__.__bases__", "attribute access"),
            ("lr.real", r"attribute access .* in `lr\.real`"),
            ("[1][0]", r"indexing with \[\.\.\.\] not allowed in `\[1\]\[0\]`"),
            ("'a'", "text strings not allowed in `'a'`"),
            ("b'a'", "bytes not allowed"),
            ("lambda: 1", "lambda functions not allowed in `lambda: 1`"),
            ("open('x')", r"unknown function `open` in `open\('x'\)`.*cos, sin"),
            ("exp(step, base=2)", r"keyword arguments .*`exp`.*pass arguments by position"),
            ("unknown_name", "unknown name `unknown_name`.*names that exist are lr, step"),
            ("stepp * lr", "did you mean `step`"),
            ("[x for x in ()]", "comprehensions not allowed"),
            ("f'{lr}'", "f-strings not allowed"),
            ("(x := 1)", r"assignment expressions \(:=\) not allowed"),
            ("max(*[1, 2])", r"starred arguments"),
            ("lr ^ 2", r"operator `\^` is not allowed.*use \*\*"),
            ("step in (1, 2)", "comparison `in` is not allowed"),
            ("cos", r"`cos` is a function.*cos\(step\)"),
            ("min(lr)", r"`min` takes 2 or more argument\(s\), got 1"),
            ("True", "True/False not allowed.*use 1 or 0"),
            ("lr *", "not valid syntax"),
            ("", "empty"),
            ("10 ** 10 ** 10", r"exponent 1e\+10 is too far from 0 in `10 \*\* 10 \*\* 10`"),
            ("x" * 600, "600 characters long, more than the limit of 500"),
            ("-" * 100 + "lr", "nested more than 50 levels"),
        ],
    )
    def test_refused_with_what_where_and_fix(self, text: str, message: str) -> None:
        with pytest.raises(ExpressionError, match=message) as caught:
            compile_schedule(text)

        assert "; fix: " in str(caught.value)

    def test_division_by_zero_names_the_step(self) -> None:
        schedule = compile_schedule("1 / (step - 3)")

        with pytest.raises(
            ExpressionError, match=r"division by zero at step 3 in `1 / \(step - 3\)`"
        ):
            schedule.value(step=3, total_steps=10, lr=1.0)
        with pytest.raises(ExpressionError, match="division by zero at step 3") as caught:
            schedule_values("lr / abs(step - 3)", lr=1.0, total_steps=10)
        assert caught.value.step == 3

    def test_overflow_at_evaluation_names_the_step(self) -> None:
        with pytest.raises(ExpressionError, match="grows too large at step 710 in `exp"):
            schedule_values("lr * exp(step)", lr=1.0, total_steps=1000)
        with pytest.raises(ExpressionError, match="grows too large at step 144"):
            schedule_values("step ** step", lr=1.0, total_steps=1000)

    def test_math_domain_error_names_the_step(self) -> None:
        with pytest.raises(ExpressionError, match=r"outside .* at step 0 in `log\(step\)`"):
            schedule_values("lr * log(step)", lr=1.0, total_steps=3)

    def test_negative_lr_is_refused(self) -> None:
        with pytest.raises(ExpressionError, match=r"negative \(-0\.1\) at step 0 in `-lr`"):
            schedule_values("-lr", lr=0.1, total_steps=3)

    def test_infinite_lr_is_refused(self) -> None:
        with pytest.raises(ExpressionError, match=r"infinite \(inf\) at step 0"):
            schedule_values("lr * 1e308 * (10 + step)", lr=1.0, total_steps=3)

    def test_error_survives_pickling(self) -> None:
        with pytest.raises(ExpressionError) as caught:
            schedule_values("lr / (step - 1)", lr=1.0, total_steps=3)
        copy = pickle.loads(pickle.dumps(caught.value))

        assert str(copy) == str(caught.value)
        assert copy.step == caught.value.step


def test_plot_schedule_writes_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    values = schedule_values(WARMUP_COSINE, lr=3e-4, total_steps=50, warmup=5)

    out = plot_schedule(values, tmp_path / "plots" / "schedule.png", title="warm-up + cosine")

    data = out.read_bytes()
    assert out == tmp_path / "plots" / "schedule.png"
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) > 1000
