"""Learning-rate schedules written as math expressions, evaluated safely.

An expert config may give `lr_schedule_expr`, e.g.
`lr * min(1, step / warmup) * 0.5 * (1 + cos(pi * progress))`. The text is data
a trainer role may send over REST, so it is never handed to `eval`/`exec`/`compile`:
`ast.parse(text, mode="eval")` gives a tree that is checked node by node against a
whitelist and turned into nested Python closures. Every number is a float, so
no integer can grow without bound, and the size of the text and the tree are
capped, so one evaluation costs a bounded amount of work.

Pure: only the standard library at module level (matplotlib is imported inside
`plot_schedule`, torch never).
"""

from __future__ import annotations

import ast
import difflib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from flextrain.errors import InvalidInputError

__all__ = [
    "FUNCTIONS",
    "MAX_DEPTH",
    "MAX_LENGTH",
    "MAX_NODES",
    "MAX_POWER_EXPONENT",
    "VARIABLES",
    "ExpressionError",
    "Schedule",
    "compile_schedule",
    "lr_lambda",
    "plot_schedule",
    "schedule_values",
]

MAX_LENGTH = 500
"""Longest expression text accepted, in characters."""
MAX_NODES = 250
"""Most expression nodes (numbers, names, operators, calls) in one expression."""
MAX_DEPTH = 50
"""Deepest nesting of expression nodes; also bounds recursion while evaluating."""
MAX_POWER_EXPONENT = 100.0
"""Largest absolute value of an exponent that is known before training starts."""

VARIABLES: Mapping[str, str] = {
    "lr": "the configured peak learning rate",
    "step": "the optimizer step, counted from 0",
    "total_steps": "the number of optimizer steps of the run",
    "progress": "step / max(total_steps, 1), from 0 towards 1",
    "warmup": "the number of warm-up steps",
    "epoch": "step / steps per epoch (a float)",
    "pi": "3.14159...",
    "e": "2.71828...",
}
"""The names an expression may use, with what each one means."""

_CONSTANTS: Mapping[str, float] = {"pi": math.pi, "e": math.e}


def _log(x: float, base: float = math.e) -> float:
    return math.log(x, base)


def _min(*args: float) -> float:
    return min(args)


def _max(*args: float) -> float:
    return max(args)


# name -> (function, fewest arguments, most arguments or None for any number)
_FUNCTION_TABLE: Mapping[str, tuple[Callable[..., float], int, int | None]] = {
    "cos": (math.cos, 1, 1),
    "sin": (math.sin, 1, 1),
    "tan": (math.tan, 1, 1),
    "exp": (math.exp, 1, 1),
    "log": (_log, 1, 2),
    "log2": (math.log2, 1, 1),
    "log10": (math.log10, 1, 1),
    "sqrt": (math.sqrt, 1, 1),
    "tanh": (math.tanh, 1, 1),
    "floor": (math.floor, 1, 1),
    "ceil": (math.ceil, 1, 1),
    "abs": (abs, 1, 1),
    "min": (_min, 2, None),
    "max": (_max, 2, None),
}
FUNCTIONS: tuple[str, ...] = tuple(_FUNCTION_TABLE)
"""The functions an expression may call, with positional arguments only."""

_BINARY_OPERATORS: Mapping[type[ast.operator], tuple[str, Callable[[float, float], float]]] = {
    ast.Add: ("+", lambda a, b: a + b),
    ast.Sub: ("-", lambda a, b: a - b),
    ast.Mult: ("*", lambda a, b: a * b),
    ast.Div: ("/", lambda a, b: a / b),
    ast.FloorDiv: ("//", lambda a, b: a // b),
    ast.Mod: ("%", lambda a, b: a % b),
    # math.pow, not `**`: it raises on overflow and on a negative base with a
    # fractional exponent instead of returning a huge int or a complex number.
    ast.Pow: ("**", math.pow),
}
_COMPARISONS: Mapping[type[ast.cmpop], Callable[[float, float], bool]] = {
    ast.Eq: lambda a, b: a == b,
    ast.NotEq: lambda a, b: a != b,
    ast.Lt: lambda a, b: a < b,
    ast.LtE: lambda a, b: a <= b,
    ast.Gt: lambda a, b: a > b,
    ast.GtE: lambda a, b: a >= b,
}
_REJECTED_OPERATORS: Mapping[type[ast.AST], tuple[str, str]] = {
    ast.BitXor: ("^", "use ** for a power, e.g. 0.5 ** (step / 100)"),
    ast.BitAnd: ("&", "use `and` for a condition"),
    ast.BitOr: ("|", "use `or` for a condition"),
    ast.LShift: ("<<", "use * 2 ** n"),
    ast.RShift: (">>", "use / 2 ** n"),
    ast.MatMult: ("@", "use * to multiply numbers"),
    ast.Invert: ("~", "use - to negate a number"),
    ast.Is: ("is", "use == to compare numbers"),
    ast.IsNot: ("is not", "use != to compare numbers"),
    ast.In: ("in", "compare with ==, <, <= and combine with `or`"),
    ast.NotIn: ("not in", "compare with !=, <, <= and combine with `and`"),
}
_REJECTED_NODES: Mapping[type[ast.AST], str] = {
    ast.Attribute: "attribute access (a dot after a value)",
    ast.Subscript: "indexing with [...]",
    ast.Lambda: "lambda functions",
    ast.ListComp: "comprehensions",
    ast.SetComp: "comprehensions",
    ast.DictComp: "comprehensions",
    ast.GeneratorExp: "comprehensions",
    ast.JoinedStr: "f-strings",
    ast.FormattedValue: "f-strings",
    ast.NamedExpr: "assignment expressions (:=)",
    ast.Starred: "starred arguments (*args)",
    ast.List: "lists",
    ast.Tuple: "tuples",
    ast.Set: "sets",
    ast.Dict: "dicts",
    ast.Slice: "slices",
    ast.Await: "await",
    ast.Yield: "yield",
    ast.YieldFrom: "yield",
}

_ALLOWED = (
    "an expression may use numbers, the names "
    + ", ".join(VARIABLES)
    + ", the functions "
    + ", ".join(f"{name}(...)" for name in FUNCTIONS)
    + ", + - * / // % **, comparisons, and/or/not and `a if condition else b`"
)
_EXAMPLE = "lr * min(1, step / max(warmup, 1)) * 0.5 * (1 + cos(pi * progress))"

_Env = Mapping[str, float]
_Eval = Callable[[_Env], float]


class ExpressionError(InvalidInputError, ValueError):
    """A schedule expression that is not allowed, or that fails at some step.

    The message says what is wrong, where (the offending piece of the text and,
    when evaluating, the step) and how to fix it; the parts are kept as
    attributes so a front end can highlight the piece.
    """

    code = "schedule_expression"
    field = "lr_schedule_expr"

    def __init__(
        self,
        problem: str,
        *,
        fix: str = "",
        fragment: str | None = None,
        step: int | None = None,
    ) -> None:
        self.problem = problem
        self.fix = fix
        self.fragment = fragment
        self.step = step
        where = ""
        if step is not None:
            where += f" at step {step}"
        if fragment is not None:
            shown = fragment if len(fragment) <= 80 else fragment[:77] + "..."
            where += f" in `{shown}`"
        message = problem + where
        if fix:
            message += f"; fix: {fix}"
        super().__init__(message)

    def __reduce__(
        self,
    ) -> tuple[Callable[..., ExpressionError], tuple[str, str, str | None, int | None]]:
        # Keyword-only arguments would otherwise break pickling across processes.
        return _rebuild_error, (self.problem, self.fix or "", self.fragment, self.step)


def _rebuild_error(
    problem: str, fix: str, fragment: str | None, step: int | None
) -> ExpressionError:
    return ExpressionError(problem, fix=fix, fragment=fragment, step=step)


class _EvaluationFailure(Exception):
    """Raised inside the closures; `Schedule.value` adds the step and the fix."""

    def __init__(self, fragment: str, error: ArithmeticError | ValueError) -> None:
        super().__init__(fragment)
        self.fragment = fragment
        self.error = error


@dataclass(frozen=True)
class Schedule:
    """A validated schedule expression, ready to evaluate at any step.

    Holds the source text and the checked tree; `_evaluate` is the tree turned
    into closures once, so evaluating each step does not walk the tree again.
    """

    source: str
    tree: ast.Expression = field(compare=False, repr=False)
    names: frozenset[str] = field(compare=False, repr=False)
    _evaluate: _Eval = field(compare=False, repr=False)

    def value(
        self,
        *,
        step: int,
        total_steps: int,
        lr: float,
        warmup: int = 0,
        steps_per_epoch: float | None = None,
    ) -> float:
        """The expression's value (the learning rate) at `step`.

        Not checked for sign or finiteness: `schedule_values` and `lr_lambda` do
        that. Raises ExpressionError, naming the step, when an operation fails.
        """
        if step < 0:
            raise ExpressionError(f"step must be 0 or more, got {step}", fix="count steps from 0")
        if warmup < 0:
            raise ExpressionError(
                f"warmup must be 0 or more, got {warmup}", fix="set warm-up steps to 0 or more"
            )
        env: dict[str, float] = {
            "lr": float(lr),
            "step": float(step),
            "total_steps": float(total_steps),
            "progress": step / max(total_steps, 1),
            "warmup": float(warmup),
        }
        if "epoch" in self.names:
            if steps_per_epoch is None or not steps_per_epoch > 0:
                raise ExpressionError(
                    f"the name `epoch` needs a positive steps_per_epoch, got {steps_per_epoch}",
                    fragment=self.source,
                    fix="pass steps_per_epoch, or write the schedule with `step` or `progress`",
                )
            env["epoch"] = step / steps_per_epoch
        try:
            return self._evaluate(env)
        except _EvaluationFailure as failure:
            raise _runtime_error(failure, step) from failure.error


def _runtime_error(failure: _EvaluationFailure, step: int) -> ExpressionError:
    error = failure.error
    if isinstance(error, ZeroDivisionError):
        problem, fix = "division by zero", "keep the divisor away from zero, e.g. max(x, 1)"
    elif isinstance(error, OverflowError):
        problem = "the number grows too large"
        fix = "use a smaller exponent or argument, or clamp it with min(...)"
    else:
        problem = f"a value is outside what the operation accepts ({error})"
        fix = (
            "keep arguments in the function's domain, e.g. log(max(x, 1e-12)), "
            "sqrt(max(x, 0)), and no negative base with a fractional exponent"
        )
    return ExpressionError(problem, fragment=failure.fragment, step=step, fix=fix)


def compile_schedule(text: str) -> Schedule:
    """Parse and check a schedule expression; raise ExpressionError if it is not allowed.

    Checking happens once, here, so a bad expression fails when the config is
    validated rather than hours into training.
    """
    source = text.strip()  # eval mode rejects leading whitespace as an indent
    if not source:
        raise ExpressionError("the schedule expression is empty", fix=f"write one, e.g. {_EXAMPLE}")
    if len(text) > MAX_LENGTH:
        raise ExpressionError(
            f"the schedule expression is {len(text)} characters long, "
            f"more than the limit of {MAX_LENGTH}",
            fragment=source,
            fix="shorten it; min(...), max(...) and `a if condition else b` keep schedules short",
        )
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError as error:
        offset = max((error.offset or 1) - 1, 0)
        line = (error.text or source).strip("\n")
        raise ExpressionError(
            f"the schedule expression is not valid syntax ({error.msg})",
            fragment=line[offset : offset + 20] or line,
            fix=f"check brackets and operators; a valid example: {_EXAMPLE}",
        ) from error
    except (ValueError, RecursionError, MemoryError) as error:  # null bytes, deep nesting
        raise ExpressionError(
            f"the schedule expression cannot be parsed ({error})",
            fix=f"write plain arithmetic; a valid example: {_EXAMPLE}",
        ) from error
    _check_size(tree.body, source)
    names: set[str] = set()
    evaluate = _Compiler(source, names).build(tree.body)
    return Schedule(source=source, tree=tree, names=frozenset(names), _evaluate=evaluate)


def _check_size(root: ast.expr, source: str) -> None:
    """Count nodes and depth without recursion, before anything recurses on the tree."""
    count = 0
    stack: list[tuple[ast.AST, int]] = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, ast.expr):
            count += 1
            if depth > MAX_DEPTH:
                raise ExpressionError(
                    f"the schedule expression is nested more than {MAX_DEPTH} levels deep",
                    fragment=_segment(source, node),
                    fix="simplify it, e.g. with min(...) and max(...) instead of deep nesting",
                )
            if count > MAX_NODES:
                raise ExpressionError(
                    f"the schedule expression has more than {MAX_NODES} parts",
                    fragment=source,
                    fix="simplify it",
                )
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))


def _segment(source: str, node: ast.AST) -> str:
    return ast.get_source_segment(source, node) or source


class _Compiler:
    """Turns a checked tree into closures; rejects every node not on the whitelist."""

    def __init__(self, source: str, names: set[str]) -> None:
        self.source = source
        self.names = names

    def reject(self, node: ast.AST, problem: str, fix: str = _ALLOWED) -> ExpressionError:
        return ExpressionError(problem, fragment=_segment(self.source, node), fix=fix)

    def build(self, node: ast.expr) -> _Eval:
        if isinstance(node, ast.Constant):
            return self.constant(node)
        if isinstance(node, ast.Name):
            return self.name(node)
        if isinstance(node, ast.BinOp):
            return self.binary(node)
        if isinstance(node, ast.UnaryOp):
            return self.unary(node)
        if isinstance(node, ast.BoolOp):
            return self.boolean(node)
        if isinstance(node, ast.Compare):
            return self.compare(node)
        if isinstance(node, ast.IfExp):
            return self.conditional(node)
        if isinstance(node, ast.Call):
            return self.call(node)
        what = _REJECTED_NODES.get(type(node), f"{type(node).__name__} expressions")
        raise self.reject(node, f"{what} not allowed")

    def constant(self, node: ast.Constant) -> _Eval:
        value = node.value
        if isinstance(value, bool) or not isinstance(value, int | float):
            kind = {
                str: "text strings",
                bytes: "bytes",
                bool: "True/False",
                complex: "complex numbers",
            }
            what = kind.get(type(value), f"the constant {value!r}")
            fix = "use 1 or 0" if isinstance(value, bool) else _ALLOWED
            raise self.reject(node, f"{what} not allowed", fix)
        try:
            number = float(value)
        except OverflowError as error:
            raise self.reject(node, "a number too large", "use a number below 1e308") from error
        return lambda env: number

    def name(self, node: ast.Name) -> _Eval:
        name = node.id
        if name in _CONSTANTS:
            number = _CONSTANTS[name]
            return lambda env: number
        if name in VARIABLES:
            self.names.add(name)
            return lambda env: env[name]
        if name in _FUNCTION_TABLE:
            raise self.reject(node, f"`{name}` is a function", f"call it, e.g. {name}(step)")
        close = difflib.get_close_matches(name, list(VARIABLES), n=1)
        hint = f"did you mean `{close[0]}`? " if close else ""
        raise self.reject(
            node,
            f"unknown name `{name}`",
            f"{hint}the names that exist are " + ", ".join(VARIABLES),
        )

    def binary(self, node: ast.BinOp) -> _Eval:
        if type(node.op) not in _BINARY_OPERATORS:
            symbol, fix = _REJECTED_OPERATORS.get(type(node.op), (type(node.op).__name__, ""))
            raise self.reject(node, f"the operator `{symbol}` is not allowed", fix or _ALLOWED)
        _, operation = _BINARY_OPERATORS[type(node.op)]
        left, right = self.build(node.left), self.build(node.right)
        if isinstance(node.op, ast.Pow) and not _uses_names(node.right):
            self.check_exponent(node, right)
        fragment = _segment(self.source, node)

        def evaluate(env: _Env) -> float:
            a, b = left(env), right(env)
            try:
                return operation(a, b)
            except (ArithmeticError, ValueError) as error:
                raise _EvaluationFailure(fragment, error) from error

        return evaluate

    def check_exponent(self, node: ast.BinOp, exponent: _Eval) -> None:
        """An exponent known before training must be small: `10 ** 10 ** 10` never runs."""
        try:
            value = exponent({})
        except _EvaluationFailure as failure:
            raise self.reject(
                node.right, f"the exponent cannot be computed ({failure.error})", "simplify it"
            ) from failure.error
        if not abs(value) <= MAX_POWER_EXPONENT:
            raise self.reject(
                node,
                f"the exponent {value:g} is too far from 0",
                f"constant exponents must lie between -{MAX_POWER_EXPONENT:g} "
                f"and {MAX_POWER_EXPONENT:g}",
            )

    def unary(self, node: ast.UnaryOp) -> _Eval:
        operand = self.build(node.operand)
        if isinstance(node.op, ast.USub):
            return lambda env: -operand(env)
        if isinstance(node.op, ast.UAdd):
            return operand
        if isinstance(node.op, ast.Not):
            return lambda env: 0.0 if operand(env) else 1.0
        symbol, fix = _REJECTED_OPERATORS.get(type(node.op), (type(node.op).__name__, _ALLOWED))
        raise self.reject(node, f"the operator `{symbol}` is not allowed", fix)

    def boolean(self, node: ast.BoolOp) -> _Eval:
        operands = [self.build(value) for value in node.values]
        if isinstance(node.op, ast.And):

            def both(env: _Env) -> float:
                result = 0.0
                for operand in operands:  # short-circuits like Python's `and`
                    result = operand(env)
                    if not result:
                        break
                return result

            return both

        def either(env: _Env) -> float:
            result = 0.0
            for operand in operands:
                result = operand(env)
                if result:
                    break
            return result

        return either

    def compare(self, node: ast.Compare) -> _Eval:
        tests: list[Callable[[float, float], bool]] = []
        for op in node.ops:
            if type(op) not in _COMPARISONS:
                symbol, fix = _REJECTED_OPERATORS.get(type(op), (type(op).__name__, _ALLOWED))
                raise self.reject(node, f"the comparison `{symbol}` is not allowed", fix)
            tests.append(_COMPARISONS[type(op)])
        first = self.build(node.left)
        rest = [self.build(value) for value in node.comparators]

        def evaluate(env: _Env) -> float:
            left = first(env)
            for test, operand in zip(tests, rest, strict=True):  # chains like 0 < x < 1
                right = operand(env)
                if not test(left, right):
                    return 0.0
                left = right
            return 1.0

        return evaluate

    def conditional(self, node: ast.IfExp) -> _Eval:
        condition = self.build(node.test)
        when_true, when_false = self.build(node.body), self.build(node.orelse)
        return lambda env: when_true(env) if condition(env) else when_false(env)

    def call(self, node: ast.Call) -> _Eval:
        if not isinstance(node.func, ast.Name):
            self.build(node.func)  # attribute access, a lambda, ...: rejected with its own name
            raise self.reject(node, "only the listed functions can be called", _ALLOWED)
        name = node.func.id
        if name not in _FUNCTION_TABLE:
            close = difflib.get_close_matches(name, FUNCTIONS, n=1)
            hint = f"did you mean `{close[0]}`? " if close else ""
            raise self.reject(
                node,
                f"unknown function `{name}`",
                f"{hint}the functions that exist are " + ", ".join(FUNCTIONS),
            )
        if node.keywords:
            raise self.reject(
                node,
                f"keyword arguments are not allowed (`{name}` got "
                + ", ".join(f"{kw.arg or '**'}=" for kw in node.keywords)
                + ")",
                "pass arguments by position, e.g. log(x, 2)",
            )
        function, fewest, most = _FUNCTION_TABLE[name]
        arguments = [self.build(argument) for argument in node.args]
        count = len(arguments)
        if count < fewest or (most is not None and count > most):
            if most is None:
                expected = f"{fewest} or more"
            else:
                expected = f"{fewest}" if fewest == most else f"{fewest} to {most}"
            raise self.reject(
                node,
                f"`{name}` takes {expected} argument(s), got {count}",
                f"call it as {name}({', '.join(['x', 'y'][: max(fewest, 1)])})",
            )
        fragment = _segment(self.source, node)

        def evaluate(env: _Env) -> float:
            values = [argument(env) for argument in arguments]
            try:
                return float(function(*values))  # floor/ceil give ints; keep floats
            except (ArithmeticError, ValueError) as error:
                raise _EvaluationFailure(fragment, error) from error

        return evaluate


def _uses_names(node: ast.expr) -> bool:
    """Whether the value depends on the step (pi and e are constants)."""
    return any(
        isinstance(child, ast.Name) and child.id not in _CONSTANTS for child in ast.walk(node)
    )


def _checked(schedule: Schedule, value: float, step: int) -> float:
    if not math.isfinite(value) or value < 0:
        kind = (
            "not a number" if math.isnan(value) else "infinite" if math.isinf(value) else "negative"
        )
        raise ExpressionError(
            f"the learning rate is {kind} ({value})",
            fragment=schedule.source,
            step=step,
            fix="keep the expression finite and 0 or more at every step, e.g. max(0, ...)",
        )
    return value


def schedule_values(
    text: str,
    *,
    lr: float,
    total_steps: int,
    warmup: int = 0,
    steps_per_epoch: float | None = None,
) -> list[float]:
    """The learning rate at every step 0..total_steps-1, each checked.

    This is the validation before training: every step is evaluated once, so a
    division by zero at step 3 or a negative lr is reported now, naming the step.
    """
    if total_steps < 1:
        raise ExpressionError(
            f"total_steps must be 1 or more to compute a schedule, got {total_steps}",
            fix="train for at least one step",
        )
    schedule = compile_schedule(text)
    values = []
    for step in range(total_steps):
        value = schedule.value(
            step=step,
            total_steps=total_steps,
            lr=lr,
            warmup=warmup,
            steps_per_epoch=steps_per_epoch,
        )
        values.append(_checked(schedule, value, step))
    return values


def lr_lambda(
    schedule: Schedule,
    *,
    lr: float,
    total_steps: int,
    warmup: int = 0,
    steps_per_epoch: float | None = None,
) -> Callable[[int], float]:
    """The multiplier value/lr for `torch.optim.lr_scheduler.LambdaLR`.

    LambdaLR multiplies each param group's initial lr, so the group whose
    initial lr is `lr` follows the schedule exactly and any other group keeps its
    ratio to it. A plain function (not a callable object) is returned because
    LambdaLR's state_dict then leaves it out, and checkpoints stay loadable with
    `torch.load(weights_only=True)`.
    """
    if not (math.isfinite(lr) and lr > 0):
        raise ExpressionError(
            f"the peak learning rate must be a finite number above 0, got {lr}",
            fix="set learning_rate above 0",
        )

    def multiplier(step: int) -> float:
        value = schedule.value(
            step=step,
            total_steps=total_steps,
            lr=lr,
            warmup=warmup,
            steps_per_epoch=steps_per_epoch,
        )
        return _checked(schedule, value, step) / lr

    return multiplier


def plot_schedule(values: list[float], out: Path, title: str = "Learning-rate schedule") -> Path:
    """Write a PNG of the learning rate against the step, to show before training.

    matplotlib is imported here only: the rest of this module stays importable
    without it, and the Agg backend needs no display.
    """
    if not values:
        raise ValueError("no learning-rate values to plot")
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure  # no pyplot: no global figure state

    figure = Figure(figsize=(6.4, 3.6), dpi=100, layout="tight")
    axes = figure.subplots()
    axes.plot(range(len(values)), values, linewidth=1.5)
    axes.set_xlabel("step")
    axes.set_ylabel("learning rate")
    axes.set_title(title)
    axes.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    axes.grid(True, alpha=0.3)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, format="png")
    return out
