"""The errors of datasets, apart from the modules that raise them (the registry and
the shape detection), so that each can import them without the other."""

from __future__ import annotations

from flextrain.errors import InvalidInputError


class FieldAndFix:
    """Mixin of data errors raised with the input at fault (`field`, default the dataset
    id) and what to do (`fix`); both travel to the REST error's `errors` list. Not an
    exception itself: the classes that use it are flextrain errors of their kind."""

    field: str | None = "dataset_id"
    fix: str | None = None

    def __init__(self, message: str, *, field: str | None = None, fix: str | None = None) -> None:
        super().__init__(message)  # type: ignore[call-arg]  # the exception class after it
        if field is not None:  # else the class's
            self.field = field
        if fix is not None:
            self.fix = fix


class DatasetFormatError(FieldAndFix, InvalidInputError, ValueError):
    """The file exists but cannot serve as training data (`field`: the input at fault,
    `fix`: what to do)."""

    code = "dataset_format"
