"""A config as the config class of a mode (basic, advanced, expert): lifted when it is
narrower, refused naming the fields when it carries settings the mode lacks."""

from __future__ import annotations

from flextrain.config.issues import ConfigValidationError
from flextrain.config.issues import err as _err
from flextrain.config.schemas import (
    AdvancedTrainingConfig,
    BasicTrainingConfig,
    ExpertTrainingConfig,
    with_fields_set,
)

_MODE_CONFIGS: dict[str, type[BasicTrainingConfig]] = {
    "basic": BasicTrainingConfig,
    "advanced": AdvancedTrainingConfig,
    "expert": ExpertTrainingConfig,
}


def config_for_mode(config: BasicTrainingConfig, mode: str) -> BasicTrainingConfig:
    """`config` as the config class of `mode` (basic, advanced, expert).

    A narrower config is lifted; a wider one is accepted only when it gives nothing the
    mode lacks: a "basic" job quietly carrying advanced settings would be stored as one
    kind of job and read back at start as another (ConfigValidationError naming each
    such field and the mode it needs).
    """
    cls = _MODE_CONFIGS[mode]
    if type(config) is cls:
        return config
    if not isinstance(config, cls):
        lifted: BasicTrainingConfig = cls.from_basic(config)  # type: ignore[attr-defined]
        return lifted
    wider = sorted(f for f in config.model_fields_set if f not in cls.model_fields)
    if wider:
        needed = next(m for m, c in _MODE_CONFIGS.items() if set(wider) <= set(c.model_fields))
        raise ConfigValidationError(
            _err(
                name,
                f"is not a {mode} setting.",
                f"create an {needed} job (create_{needed}_training_job, POST /jobs/{needed}, "
                f"--mode {needed}), or leave {name} out.",
            )
            for name in wider
        )
    values = config.model_dump(include=set(cls.model_fields))
    return with_fields_set(cls(**values), config.model_fields_set)
