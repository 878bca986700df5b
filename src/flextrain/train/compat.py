"""Trainer argument names that moved between transformers releases.

transformers 5.25 renamed `gradient_checkpointing(_kwargs)` to
`activation_checkpointing(_kwargs)` and warns on every run that uses the old names;
the supported range (>=5.0) still includes releases that know only the old ones.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from transformers import TrainingArguments

_NEW_NAMES = "activation_checkpointing" in {f.name for f in dataclasses.fields(TrainingArguments)}


def checkpointing_arguments(enabled: bool) -> dict[str, Any]:
    """TrainingArguments keywords that turn activation (gradient) checkpointing on or off,
    non-reentrant (the reentrant variant breaks with frozen inputs, as under LoRA)."""
    prefix = "activation" if _NEW_NAMES else "gradient"
    return {
        f"{prefix}_checkpointing": enabled,
        f"{prefix}_checkpointing_kwargs": {"use_reentrant": False},
    }
