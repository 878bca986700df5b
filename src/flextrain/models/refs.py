"""Names and references of registered models, and the registry's errors.

A registered model is a name with numbered versions. A reference is `name` (the
latest version), `name:latest` (the same, said outright) or `name:N` (version N).
The ':' cannot occur in a name, a path flextrain accepts as a model id, or a hub
id, so a reference is never mistaken for one of those.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from flextrain.errors import ConflictError, InvalidInputError
from flextrain.models.resolve import ModelNotFoundError

# Letters, digits, '_', '.', '-', and at most one '/': the dataset names' rule. It keeps
# names apart from paths ('/', '.', '~' first) and from hub ids with a revision.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,99})?$")
_VERSION_PATTERN = re.compile(r"^(latest|[1-9][0-9]{0,8})$")
RESERVED_PREFIX = "flextrain/"  # the built-in models' namespace
MAX_NAME, MAX_PATH = 200, 2000  # the columns' lengths (PostgreSQL enforces them)


class ModelRegistryError(InvalidInputError, ValueError):
    """A name or folder that cannot be registered; the message names the fix."""

    code = "model_registry"
    field = "name"


class ModelNameTakenError(ConflictError, ModelRegistryError):
    """The name (or this folder as a version of it) is taken."""

    code = "model_name_taken"


class ModelInUseError(ConflictError, ModelRegistryError):
    """A job that has not finished names this model."""

    code = "model_in_use"


class ModelNotRegisteredError(ModelNotFoundError):
    """No registration has this name (or version)."""

    code = "model_not_registered"
    field = "name"


@dataclass(frozen=True)
class ModelRef:
    """A parsed reference: the name, and the version (None: the latest)."""

    name: str
    version: int | None = None

    def __str__(self) -> str:
        return self.name if self.version is None else f"{self.name}:{self.version}"


def parse_ref(text: str) -> ModelRef | None:
    """`text` as a reference to a registered model, or None when it cannot be one (a
    path, a built-in id, a name the rules refuse, a version that is not a number)."""
    text = text.strip()
    name, colon, version = text.rpartition(":")
    if not colon:
        name, version = text, "latest"
    if not is_model_name(name) or not _VERSION_PATTERN.match(version):
        return None
    return ModelRef(name, None if version == "latest" else int(version))


def is_model_name(text: str) -> bool:
    """`text` has the shape of a registered name (not a path, not a built-in id)."""
    return (
        len(text) <= MAX_NAME
        and bool(NAME_PATTERN.match(text))
        and not text.startswith(RESERVED_PREFIX)
    )


def check_name(name: str) -> str:
    """The name, stripped, or ModelRegistryError saying what is wrong and what to use."""
    name = name.strip()
    if not name:
        raise ModelRegistryError("name is empty. Fix: give a short name, e.g. 'llama-support'.")
    if name.startswith(RESERVED_PREFIX):
        raise ModelRegistryError(
            f"name '{name}': names starting with '{RESERVED_PREFIX}' are the built-in models'. "
            "Fix: choose another name."
        )
    if ":" in name and parse_ref(name) is not None:
        raise ModelRegistryError(
            f"name '{name}' names a version. Fix: give the name alone ("
            f"'{name.rpartition(':')[0]}'); registering under it adds the next version."
        )
    if not NAME_PATTERN.match(name) or len(name) > MAX_NAME:
        shown = name if len(name) <= 60 else name[:60] + "..."
        raise ModelRegistryError(
            f"name {shown!r} is not valid. Fix: use letters, digits, '_', '.', '-' (starting "
            "with a letter or digit, up to 100 characters) and at most one '/' (200 in all), "
            "e.g. 'team/llama-support'."
        )
    return name


def not_registered(ref: str) -> ModelNotRegisteredError:
    """The error for a reference with no registration (or one the caller may not see)."""
    shown = ref if len(ref) <= 60 else ref[:60] + "..."
    parsed = parse_ref(ref)
    if parsed is not None and parsed.version is not None:
        return ModelNotRegisteredError(
            f"Model {shown!r} is not registered: '{parsed.name}' has no version "
            f"{parsed.version}. Fix: see its versions with `flextrain models show "
            f"{parsed.name}`."
        )
    return ModelNotRegisteredError(
        f"No model named {shown!r} is registered. Fix: see `flextrain models list`, "
        "or register a folder with `flextrain models add PATH --name NAME`."
    )
