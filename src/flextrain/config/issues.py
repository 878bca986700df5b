"""What a validation rule reports, and what it may look at.

The issue (field, message, fix), the error that carries them, and the plain facts a
rule is given about the hardware, the model, the data and the memory estimate: kept
apart from the rules (`config.validation`, `config.rules_expert`) so that each rule
module imports only these.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal, Protocol

from flextrain.config.schemas import AdvancedTrainingConfig
from flextrain.errors import InvalidInputError

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class ValidationIssue:
    """One problem: which field, what is wrong, and how to fix it."""

    field: str
    message: str
    fix: str
    severity: Severity = "error"

    def __str__(self) -> str:
        return f"{self.field}: {self.message} Fix: {self.fix}"


class ConfigValidationError(InvalidInputError, ValueError):
    """A configuration with at least one error; carries every issue found."""

    code = "config_invalid"
    field = "config"

    def __init__(self, issues: Iterable[ValidationIssue]) -> None:
        self.issues = list(issues)
        errors = [i for i in self.issues if i.severity == "error"]
        lines = "\n".join(f"  - {issue}" for issue in errors)
        noun = "problem" if len(errors) == 1 else "problems"
        super().__init__(f"Invalid training configuration ({len(errors)} {noun}):\n{lines}")

    @property
    def errors(self) -> list[ValidationIssue]:
        return [i for i in self.issues if i.severity == "error"]


class HardwareFacts(Protocol):
    """What the rules need to know about the machine (HardwareConstraints fits)."""

    @property
    def gpu_count(self) -> int: ...

    @property
    def supports_bf16(self) -> bool: ...


@dataclass(frozen=True)
class ModelFacts:
    """What the rules need to know about the model, read from its config."""

    max_position_embeddings: int | None = None
    linear_module_names: frozenset[str] | None = None
    supports_gradient_checkpointing: bool = True
    num_parameters: int | None = None


@dataclass(frozen=True)
class DatasetFacts:
    """What the rules need to know about the data, read from the file."""

    num_rows: int
    has_labels: bool
    num_labels: int = 0
    shape: str | None = None  # flextrain.data.shapes: text, preference, prompt...


@dataclass(frozen=True)
class RuleContext:
    """Everything a rule may look at; `fields_set` tells explicit values from defaults."""

    config: AdvancedTrainingConfig
    fields_set: frozenset[str]
    hardware: HardwareFacts | None
    model: ModelFacts | None
    dataset: DatasetFacts | None
    memory: MemoryFacts | None = None


Rule = Callable[[RuleContext], Iterable[ValidationIssue]]


@dataclass(frozen=True)
class MemoryFacts:
    """The memory estimate for this config on this machine, and the best fix."""

    peak_gb: float
    available_gb: float
    kind: str  # "GPU" or "system"
    fix: str = "lower batch_size or max_length, or turn on gradient_checkpointing."


def err(field: str, message: str, fix: str) -> ValidationIssue:
    return ValidationIssue(field, message, fix, "error")


def warn(field: str, message: str, fix: str) -> ValidationIssue:
    return ValidationIssue(field, message, fix, "warning")
