"""Positional construction, as the original module's dataclasses allowed.

Programs written for the original `training_interface` module may build its
configs and hardware facts positionally (`HardwareConstraints(16.0, 24.0, 1, 8)`);
flextrain's pydantic models take keywords, so their `__init__` names the positional
arguments in the original's field order first.
"""

from __future__ import annotations

from typing import Any


def positional_fields(
    name: str, order: tuple[str, ...], args: tuple[Any, ...], data: dict[str, Any]
) -> dict[str, Any]:
    """`data` with `args` named by `order`: the original module's classes were
    dataclasses, which programs may build positionally. Errors read like Python's own."""
    if len(args) > len(order):
        raise TypeError(f"{name}() takes at most {len(order)} positional arguments")
    for key, value in zip(order, args, strict=False):
        if key in data:
            raise TypeError(f"{name}() got multiple values for argument '{key}'")
        data[key] = value
    return data
