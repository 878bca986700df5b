"""The configuration shapes: the seed's parameter tables, enums and presets."""

from __future__ import annotations

from typing import Any, Literal

import pytest
from pydantic import ValidationError
from pydantic_core import PydanticUndefined

from flextrain.config.enums import TrainingMode, TrainingStatus, TrainingType
from flextrain.config.presets import PRESET_NAMES, preset_values
from flextrain.config.schemas import AdvancedTrainingConfig, BasicTrainingConfig
from flextrain.config.validation import TrainingParameterValidator

REQUIRED: dict[str, Any] = {
    "model_id": "tiny-model",
    "dataset_id": "tiny-data",
    "training_type": "fine_tuning",
}

BASIC_TABLE: dict[str, tuple[type, Any]] = {
    "model_id": (str, PydanticUndefined),
    "dataset_id": (str, PydanticUndefined),
    "training_type": (TrainingType, PydanticUndefined),
    "num_epochs": (int, 3),
    "learning_rate": (float, 2e-5),
    "batch_size": (int, 8),
    "max_length": (int, 512),
    "use_mixed_precision": (bool, True),
    "gradient_checkpointing": (bool, True),
}

ADVANCED_TABLE: dict[str, tuple[type, Any]] = {
    "weight_decay": (float, 0.01),
    "adam_beta1": (float, 0.9),
    "adam_beta2": (float, 0.999),
    "lr_scheduler_type": (str, "linear"),
    "gradient_accumulation_steps": (int, 1),
    "fp16": (bool, False),
    "bf16": (bool, False),
    "lora_r": (int, 16),
    "lora_alpha": (int, 32),
    "lora_dropout": (float, 0.1),
}


# The seed's types, widened where an issue asked for more: batch_size also takes "auto"
# (issue 7); its default stays the seed's int.
WIDENED: dict[str, Any] = {"batch_size": int | Literal["auto"]}


def check_table(model: type[BasicTrainingConfig], table: dict[str, tuple[type, Any]]) -> None:
    fields = model.model_fields
    missing = [name for name in table if name not in fields]
    assert missing == []
    for name, (annotation, default) in table.items():
        info = fields[name]
        assert info.annotation == WIDENED.get(name, annotation), (name, info.annotation)
        assert info.is_required() is (default is PydanticUndefined), name
        if default is not PydanticUndefined:
            assert type(info.default) is annotation, (name, info.default)
            assert info.default == default, (name, info.default)


class TestSeedTables:
    def test_basic_parameters(self) -> None:
        check_table(BasicTrainingConfig, BASIC_TABLE)

    def test_advanced_parameters(self) -> None:
        check_table(AdvancedTrainingConfig, {**BASIC_TABLE, **ADVANCED_TABLE})

    def test_advanced_knobs_are_not_in_basic_mode(self) -> None:
        assert set(ADVANCED_TABLE).isdisjoint(BasicTrainingConfig.model_fields)

    def test_defaults_on_an_instance(self) -> None:
        config = AdvancedTrainingConfig(**REQUIRED)
        for name, (_, default) in {**BASIC_TABLE, **ADVANCED_TABLE}.items():
            if default is not PydanticUndefined:
                assert getattr(config, name) == default, name

    @pytest.mark.parametrize("model", [BasicTrainingConfig, AdvancedTrainingConfig])
    @pytest.mark.parametrize("missing", ["model_id", "dataset_id", "training_type"])
    def test_required_fields(self, model: type[BasicTrainingConfig], missing: str) -> None:
        values = {k: v for k, v in REQUIRED.items() if k != missing}
        with pytest.raises(ValidationError) as caught:
            model(**values)
        assert [e["loc"] for e in caught.value.errors()] == [(missing,)]
        assert caught.value.errors()[0]["type"] == "missing"

    @pytest.mark.parametrize("model", [BasicTrainingConfig, AdvancedTrainingConfig])
    def test_unknown_keys_are_rejected(self, model: type[BasicTrainingConfig]) -> None:
        with pytest.raises(ValidationError, match="num_epoch") as caught:
            model(**REQUIRED, num_epoch=3)
        errors = caught.value.errors()
        assert [(e["loc"], e["type"]) for e in errors] == [(("num_epoch",), "extra_forbidden")]

    def test_advanced_key_is_unknown_in_basic_mode(self) -> None:
        with pytest.raises(ValidationError, match="lora_r"):
            BasicTrainingConfig(**REQUIRED, lora_r=8)

    def test_assignment_is_validated(self) -> None:
        config = BasicTrainingConfig(**REQUIRED)
        with pytest.raises(ValidationError, match="num_epochs"):
            config.num_epochs = "many"  # type: ignore[assignment]


class TestEnums:
    @pytest.mark.parametrize(
        "value",
        [
            "fine_tuning",
            "lora_adaptation",
            "continued_pretraining",
            "task_specific",
            "full_training",
        ],
    )
    def test_training_type_accepts_the_string_values(self, value: str) -> None:
        config = BasicTrainingConfig(**{**REQUIRED, "training_type": value})
        assert config.training_type is TrainingType(value)
        assert config.training_type == value

    def test_training_type_values_are_exactly_these(self) -> None:
        assert {t.value for t in TrainingType} == {
            "fine_tuning",
            "lora_adaptation",
            "continued_pretraining",
            "task_specific",
            "full_training",
            "dpo",
            "orpo",
            "kto",
            "simpo",
            "grpo",
        }
        assert {t.value for t in TrainingType if t.is_preference} == {
            "dpo",
            "orpo",
            "kto",
            "simpo",
            "grpo",
        }

    def test_unknown_training_type_names_the_field(self) -> None:
        with pytest.raises(ValidationError) as caught:
            BasicTrainingConfig(**{**REQUIRED, "training_type": "distillation"})
        error = caught.value.errors()[0]
        assert error["loc"] == ("training_type",)
        assert "lora_adaptation" in error["msg"]

    def test_unknown_training_type_with_a_preset_names_the_field(self) -> None:
        with pytest.raises(ValidationError) as caught:
            BasicTrainingConfig(**{**REQUIRED, "training_type": "distillation", "preset": "quick"})
        assert caught.value.errors()[0]["loc"] == ("training_type",)

    def test_training_modes(self) -> None:
        assert [m.value for m in TrainingMode] == ["basic", "advanced", "expert"]
        assert TrainingMode("advanced") is TrainingMode.ADVANCED

    def test_training_statuses(self) -> None:
        assert [s.name for s in TrainingStatus] == [
            "PENDING",
            "QUEUED",
            "VALIDATING",
            "PREPARING",
            "TRAINING",
            "EVALUATING",
            "COMPLETED",
            "FAILED",
            "CANCELLED",
            "INTERRUPTED",
            "DIVERGED",
            "PAUSED",
        ]
        assert all(s.value == s.name.lower() for s in TrainingStatus)

    def test_terminal_and_active_statuses(self) -> None:
        terminal = {s for s in TrainingStatus if s.is_terminal}
        active = {s for s in TrainingStatus if s.is_active}
        assert terminal == {
            TrainingStatus.COMPLETED,
            TrainingStatus.FAILED,
            TrainingStatus.CANCELLED,
            TrainingStatus.INTERRUPTED,
            TrainingStatus.DIVERGED,
            TrainingStatus.PAUSED,
        }
        assert active == {
            TrainingStatus.VALIDATING,
            TrainingStatus.PREPARING,
            TrainingStatus.TRAINING,
            TrainingStatus.EVALUATING,
        }
        assert not TrainingStatus.PENDING.is_terminal
        assert not TrainingStatus.PENDING.is_active
        # Queued: waiting for resources, no worker yet (so nothing to reconcile or kill).
        assert not TrainingStatus.QUEUED.is_terminal
        assert not TrainingStatus.QUEUED.is_active


PRESET_KNOBS = ("num_epochs", "batch_size", "max_length", "learning_rate")


class TestPresets:
    def test_preset_names(self) -> None:
        assert PRESET_NAMES == ("quick", "balanced", "thorough")

    @pytest.mark.parametrize("name", PRESET_NAMES)
    @pytest.mark.parametrize("ttype", list(TrainingType))
    def test_preset_fills_the_knobs(self, name: str, ttype: TrainingType) -> None:
        config = BasicTrainingConfig(**{**REQUIRED, "training_type": ttype, "preset": name})
        expected = preset_values(name, ttype)
        assert set(expected) == set(PRESET_KNOBS)
        for knob in PRESET_KNOBS:
            assert getattr(config, knob) == expected[knob], knob

    def test_quick_preset_values(self) -> None:
        config = BasicTrainingConfig(**REQUIRED, preset="quick")
        assert (config.num_epochs, config.batch_size, config.max_length) == (1, 16, 128)
        assert config.learning_rate == 5e-5
        default = BasicTrainingConfig(**REQUIRED)
        assert (default.num_epochs, default.max_length) == (3, 512)

    def test_presets_grow_in_effort(self) -> None:
        epochs = [preset_values(n, TrainingType.FINE_TUNING)["num_epochs"] for n in PRESET_NAMES]
        lengths = [preset_values(n, TrainingType.FINE_TUNING)["max_length"] for n in PRESET_NAMES]
        assert epochs == sorted(epochs)
        assert len(set(epochs)) == 3
        assert lengths == sorted(lengths)

    @pytest.mark.parametrize("name", PRESET_NAMES)
    def test_lora_gets_a_higher_rate_than_fine_tuning(self, name: str) -> None:
        lora = BasicTrainingConfig(
            **{**REQUIRED, "training_type": "lora_adaptation", "preset": name}
        )
        fine = BasicTrainingConfig(**{**REQUIRED, "training_type": "fine_tuning", "preset": name})
        assert lora.learning_rate > fine.learning_rate

    @pytest.mark.parametrize("model", [BasicTrainingConfig, AdvancedTrainingConfig])
    def test_explicit_values_override_the_preset(self, model: type[BasicTrainingConfig]) -> None:
        config = model(**REQUIRED, preset="quick", num_epochs=7, learning_rate=1e-4)
        assert config.num_epochs == 7
        assert config.learning_rate == 1e-4
        # The knobs left unset still come from the preset.
        assert config.batch_size == 16
        assert config.max_length == 128

    def test_explicit_value_equal_to_default_still_wins(self) -> None:
        config = BasicTrainingConfig(**REQUIRED, preset="quick", max_length=512)
        assert config.max_length == 512

    def test_unknown_preset_names_the_field(self) -> None:
        with pytest.raises(ValidationError) as caught:
            BasicTrainingConfig(**REQUIRED, preset="fast")
        errors = caught.value.errors()
        assert [e["loc"] for e in errors] == [("preset",)]
        assert "quick" in errors[0]["msg"]
        assert "thorough" in errors[0]["msg"]

    def test_unknown_preset_name_raises_keyerror_in_preset_values(self) -> None:
        with pytest.raises(KeyError):
            preset_values("fast", TrainingType.FINE_TUNING)

    @pytest.mark.parametrize("model", [BasicTrainingConfig, AdvancedTrainingConfig])
    @pytest.mark.parametrize("name", PRESET_NAMES)
    @pytest.mark.parametrize("ttype", list(TrainingType))
    def test_every_shipped_preset_validates(
        self, model: type[BasicTrainingConfig], name: str, ttype: TrainingType
    ) -> None:
        config = model(**{**REQUIRED, "training_type": ttype, "preset": name})
        issues = TrainingParameterValidator().validate(config)
        assert [i for i in issues if i.severity == "error"] == []


class TestFromBasic:
    def test_keeps_every_basic_value(self) -> None:
        basic = BasicTrainingConfig(
            model_id="m",
            dataset_id="d",
            training_type="lora_adaptation",
            num_epochs=5,
            learning_rate=3e-4,
            batch_size=2,
            max_length=64,
            use_mixed_precision=False,
            gradient_checkpointing=False,
            seed=7,
            eval_split=0.2,
            logging_steps=3,
            save_steps=11,
            save_total_limit=None,
            lora_target_modules=["q_proj"],
            output_dir="/tmp/out",
            run_name="run",
        )
        advanced = AdvancedTrainingConfig.from_basic(basic)
        assert isinstance(advanced, AdvancedTrainingConfig)
        for name in BasicTrainingConfig.model_fields:
            if name == "preset":
                continue
            assert getattr(advanced, name) == getattr(basic, name), name
        # Advanced knobs keep their defaults.
        assert advanced.lora_r == 16
        assert advanced.fp16 is False

    def test_keeps_preset_filled_values(self) -> None:
        basic = BasicTrainingConfig(**REQUIRED, preset="thorough", batch_size=4)
        advanced = AdvancedTrainingConfig.from_basic(basic)
        for knob in PRESET_KNOBS:
            assert getattr(advanced, knob) == getattr(basic, knob), knob
        assert advanced.batch_size == 4
        assert advanced.num_epochs == 5

    def test_an_advanced_config_is_returned_as_is(self) -> None:
        advanced = AdvancedTrainingConfig(**REQUIRED, lora_r=4)
        assert AdvancedTrainingConfig.from_basic(advanced) is advanced


class TestBatchSizes:
    def test_train_batch_size_defaults_to_batch_size(self) -> None:
        config = AdvancedTrainingConfig(**REQUIRED, batch_size=6)
        assert config.train_batch_size == 6

    def test_per_device_train_batch_size_wins(self) -> None:
        config = AdvancedTrainingConfig(**REQUIRED, batch_size=6, per_device_train_batch_size=3)
        assert config.train_batch_size == 3

    def test_eval_batch_size(self) -> None:
        config = AdvancedTrainingConfig(**REQUIRED, batch_size=6)
        assert config.eval_batch_size == 6
        config = AdvancedTrainingConfig(**REQUIRED, batch_size=6, per_device_eval_batch_size=12)
        assert config.eval_batch_size == 12
