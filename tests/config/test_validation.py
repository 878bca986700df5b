"""Every rule of TrainingParameterValidator: one passing and one failing case per check.

Each failing case pins the issue's field, its severity and something specific
its message or fix says, so a rule that goes quiet, blames the wrong field or
stops telling the user how to fix it is caught.
"""

from __future__ import annotations

import re
import sys
from typing import Any, ClassVar

import pytest

from flextrain.config import validation
from flextrain.config.enums import TrainingType
from flextrain.config.schemas import (
    OPTIMIZERS,
    SCHEDULER_TYPES,
    AdvancedTrainingConfig,
    BasicTrainingConfig,
    ExpertTrainingConfig,
)
from flextrain.config.validation import (
    ConfigValidationError,
    DatasetFacts,
    MemoryFacts,
    ModelFacts,
    TrainingParameterValidator,
    ValidationIssue,
    config_for_mode,
)
from tests.conftest import cpu_hardware, gpu_hardware

LINEAR_NAMES = frozenset({"q_proj", "k_proj", "v_proj", "o_proj", "fc1", "fc2"})
MODEL = ModelFacts(max_position_embeddings=512, linear_module_names=LINEAR_NAMES)
DATA = DatasetFacts(num_rows=1000, has_labels=True, num_labels=3)


def make(**overrides: Any) -> AdvancedTrainingConfig:
    values: dict[str, Any] = {
        "model_id": "tiny-model",
        "dataset_id": "tiny-data",
        "training_type": TrainingType.FINE_TUNING,
    }
    values.update(overrides)
    return AdvancedTrainingConfig(**values)


def run(
    config: BasicTrainingConfig,
    *,
    hardware: Any = None,
    model: ModelFacts | None = MODEL,
    dataset: DatasetFacts | None = DATA,
) -> list[ValidationIssue]:
    if hardware is None:
        hardware = cpu_hardware()
    return TrainingParameterValidator().validate(
        config, hardware=hardware, model=model, dataset=dataset
    )


def on(issues: list[ValidationIssue], field: str) -> list[ValidationIssue]:
    return [i for i in issues if i.field == field]


def one(
    issues: list[ValidationIssue], field: str, pattern: str, severity: str = "error"
) -> ValidationIssue:
    """The single issue on `field`: right severity, and its text matches `pattern`."""
    found = on(issues, field)
    assert len(found) == 1, f"expected one issue on {field}, got {found} (all: {issues})"
    issue = found[0]
    assert issue.severity == severity, issue
    assert re.search(pattern, str(issue)), f"{pattern!r} not in {issue}"
    return issue


def errors(issues: list[ValidationIssue]) -> list[ValidationIssue]:
    return [i for i in issues if i.severity == "error"]


def test_a_sound_config_has_no_issue_at_all() -> None:
    assert run(make()) == []
    assert (
        run(
            make(
                training_type=TrainingType.LORA_ADAPTATION, lora_target_modules=["q_proj", "v_proj"]
            )
        )
        == []
    )


def test_every_rule_has_a_test_class_here() -> None:
    """A new rule must come with tests: this list is the one the classes below cover."""
    names = {rule.__name__ for rule in validation._RULES}
    assert names == {
        "_ids",
        "_learning_rate",
        "_counts",
        "_upper_bounds",
        "_max_length",
        "_eval_split",
        "_precision",
        "_optimizer",
        "_warmup",
        "_lora",
        "checkpointing_rule",
        "_settings_without_effect",
        "_early_stopping",
        "data_rule",
        "tracking_rule",
        "memory_rule",
        "distributed_rule",
        "expert_rule",
        "preference_rule",
        "hardware_rule",  # tests/config/test_rules_hardware.py, one test per table row
        "quantization_rule",  # TestFourBitBase
        "_custom_parameters",
    }


class TestIds:
    def test_named_ids_pass(self) -> None:
        issues = run(make())
        assert on(issues, "model_id") == []
        assert on(issues, "dataset_id") == []

    def test_empty_model_id(self) -> None:
        one(run(make(model_id="")), "model_id", r"is empty.*model folder")

    def test_blank_dataset_id(self) -> None:
        one(run(make(dataset_id="   ")), "dataset_id", r"is empty.*data file")


class TestCustomParameters:
    """The original module's free-form dict: empty is fine, anything in it refused."""

    def test_empty_passes(self) -> None:
        assert on(run(make(custom_parameters={})), "custom_parameters") == []

    def test_given_is_an_error_naming_the_keys_and_the_fix(self) -> None:
        [issue] = on(run(make(custom_parameters={"zeta": 1, "alpha": 2})), "custom_parameters")
        assert issue.severity == "error"
        assert str(issue).startswith(
            "custom_parameters: alpha, zeta: flextrain does not pass unnamed parameters on"
        )
        assert "Fix: give each as its own field" in str(issue)


class TestLearningRate:
    @pytest.mark.parametrize("lr", [1e-6, 2e-5, 1.0])
    def test_in_range_passes(self, lr: float) -> None:
        assert on(run(make(learning_rate=lr)), "learning_rate") == []

    @pytest.mark.parametrize("lr", [0.0, -1.0, 1.5])
    def test_out_of_range(self, lr: float) -> None:
        one(run(make(learning_rate=lr)), "learning_rate", rf"{lr} is outside \(0, 1\].*1e-5")


class TestCounts:
    FIELDS = (
        "num_epochs",
        "batch_size",
        "gradient_accumulation_steps",
        "logging_steps",
        "per_device_train_batch_size",
        "per_device_eval_batch_size",
        "save_steps",
        "save_total_limit",
        "eval_steps",
        "num_threads",
        "max_steps",
        "seed",
        "dataloader_num_workers",
    )

    def test_sound_counts_pass(self) -> None:
        config = make(
            per_device_eval_batch_size=4,
            save_steps=100,
            save_total_limit=1,
            eval_steps=50,
            num_threads=2,
            max_steps=10,
            seed=0,
            dataloader_num_workers=2,
        )
        issues = run(config)
        assert [i for i in issues if i.field in self.FIELDS] == []

    def test_zero_epochs(self) -> None:
        one(run(make(num_epochs=0)), "num_epochs", r"0 is below 1.*at least 1 epoch")

    def test_zero_epochs_is_fine_when_max_steps_bounds_the_run(self) -> None:
        assert on(run(make(num_epochs=0, max_steps=100)), "num_epochs") == []

    def test_zero_epochs_with_zero_max_steps(self) -> None:
        issues = run(make(num_epochs=0, max_steps=0))
        one(issues, "num_epochs", r"0 is below 1")
        one(issues, "max_steps", r"0 is not allowed")

    @pytest.mark.parametrize("name", ["batch_size", "gradient_accumulation_steps", "logging_steps"])
    def test_required_counts_below_one(self, name: str) -> None:
        one(run(make(**{name: 0})), name, rf"0 is below 1.*set {name} to 1 or more\.")

    @pytest.mark.parametrize(
        "name",
        [
            "per_device_train_batch_size",
            "per_device_eval_batch_size",
            "save_steps",
            "save_total_limit",
            "eval_steps",
            "num_threads",
        ],
    )
    @pytest.mark.parametrize("value", [0, -2])
    def test_optional_counts_below_one(self, name: str, value: int) -> None:
        overrides: dict[str, Any] = {name: value}
        if name == "per_device_train_batch_size":
            overrides["batch_size"] = value  # keep the two in agreement: only the count is wrong
        issues = run(make(**overrides))
        one(issues, name, rf"{value} is below 1.*set {name} to 1 or more, or leave it unset")

    @pytest.mark.parametrize(
        "name",
        [
            "per_device_train_batch_size",
            "save_steps",
            "save_total_limit",
            "eval_steps",
            "num_threads",
        ],
    )
    def test_optional_counts_may_stay_unset(self, name: str) -> None:
        assert on(run(make(**{name: None})), name) == []

    def test_batch_size_and_per_device_disagree(self) -> None:
        one(
            run(make(batch_size=8, per_device_train_batch_size=4)),
            "per_device_train_batch_size",
            r"4 disagrees with batch_size=8.*only one of them",
        )

    def test_batch_size_and_per_device_agree(self) -> None:
        issues = run(make(batch_size=4, per_device_train_batch_size=4))
        assert on(issues, "per_device_train_batch_size") == []

    def test_per_device_alone_overrides_the_default_batch_size(self) -> None:
        issues = run(make(per_device_train_batch_size=4))
        assert on(issues, "per_device_train_batch_size") == []

    def test_per_device_with_a_preset_batch_size_is_not_a_disagreement(self) -> None:
        issues = run(make(preset="quick", per_device_train_batch_size=4))
        assert on(issues, "per_device_train_batch_size") == []

    @pytest.mark.parametrize("steps", [-1, 1, 500])
    def test_max_steps_allowed(self, steps: int) -> None:
        assert on(run(make(max_steps=steps)), "max_steps") == []

    @pytest.mark.parametrize("steps", [0, -2])
    def test_max_steps_rejected(self, steps: int) -> None:
        one(run(make(max_steps=steps)), "max_steps", rf"{steps} is not allowed.*-1 \(all epochs\)")

    def test_negative_seed(self) -> None:
        one(run(make(seed=-1)), "seed", r"-1 is negative.*0 or more")

    def test_negative_workers(self) -> None:
        one(
            run(make(dataloader_num_workers=-1)),
            "dataloader_num_workers",
            r"is negative.*0 \(main process\)",
        )


class TestUpperBounds:
    """A typo of 10**30 is reported with the limit, not stored (it would overflow the
    database's integers and Trainer's arithmetic)."""

    @pytest.mark.parametrize("name", sorted(validation._UPPER_BOUNDS))
    def test_each_bound_is_inclusive_and_reported(self, name: str) -> None:
        bound = validation._UPPER_BOUNDS[name]
        over: dict[str, Any] = {name: bound + 1}
        at: dict[str, Any] = {name: bound}
        if name == "per_device_train_batch_size":
            over["batch_size"], at["batch_size"] = bound + 1, bound  # keep the two in agreement
        issues = [i for i in run(make(**over)) if "over the limit" in i.message]
        assert {i.field for i in issues} >= {name}
        mine = next(i for i in issues if i.field == name)
        assert re.search(
            rf"{bound + 1} is over the limit of {bound}.*use {bound} or less", str(mine)
        )
        assert not [i for i in run(make(**at)) if "over the limit" in i.message]

    def test_a_huge_epoch_count_is_an_error_not_an_overflow(self) -> None:
        one(run(make(num_epochs=10**30)), "num_epochs", r"over the limit of 100000")


class TestMaxLength:
    @pytest.mark.parametrize("length", [8, 128, 512])
    def test_within_model_limit(self, length: int) -> None:
        assert on(run(make(max_length=length)), "max_length") == []

    def test_below_eight(self) -> None:
        one(run(make(max_length=4)), "max_length", r"4 is below 8 tokens.*use 8 or more")

    def test_over_model_position_embeddings(self) -> None:
        one(
            run(make(max_length=1024)),
            "max_length",
            r"1024 is over the model's limit of 512 tokens.*512 or less",
        )

    def test_no_limit_known_no_issue(self) -> None:
        issues = run(make(max_length=100_000), model=ModelFacts())
        assert on(issues, "max_length") == []
        assert on(run(make(max_length=100_000), model=None), "max_length") == []


class TestEvalSplit:
    @pytest.mark.parametrize("split", [0.0, 0.1, 0.5])
    def test_in_range(self, split: float) -> None:
        assert on(run(make(eval_split=split)), "eval_split") == []

    @pytest.mark.parametrize("split", [-0.1, 0.6, 1.0])
    def test_out_of_range(self, split: float) -> None:
        one(
            run(make(eval_split=split)),
            "eval_split",
            rf"{split} is outside \[0, 0\.5\].*0\.1 is typical",
        )

    def test_holds_out_no_row_is_a_warning(self) -> None:
        data = DatasetFacts(num_rows=5, has_labels=True, num_labels=2)
        one(
            run(make(eval_split=0.1), dataset=data),
            "eval_split",
            r"holds out no row of 5.*evaluation is skipped",
            severity="warning",
        )

    def test_zero_split_on_tiny_data_is_fine(self) -> None:
        data = DatasetFacts(num_rows=5, has_labels=True, num_labels=2)
        assert on(run(make(eval_split=0.0), dataset=data), "eval_split") == []


class TestPrecision:
    def test_fp32_passes_anywhere(self) -> None:
        for hw in (cpu_hardware(), gpu_hardware(), gpu_hardware(bf16=False)):
            issues = run(make(), hardware=hw)
            assert on(issues, "fp16") == []
            assert on(issues, "bf16") == []

    def test_fp16_and_bf16_together(self) -> None:
        one(
            run(make(fp16=True, bf16=True), hardware=gpu_hardware()),
            "fp16",
            r"fp16 and bf16 are both on.*turn one of them off",
        )

    def test_fp16_and_bf16_together_without_hardware_facts(self) -> None:
        issues = TrainingParameterValidator().validate(make(fp16=True, bf16=True))
        one(issues, "fp16", r"both on")

    def test_fp16_on_cpu_is_an_error(self) -> None:
        one(run(make(fp16=True), hardware=cpu_hardware()), "fp16", r"needs a CUDA GPU.*fp16=False")

    def test_fp16_on_gpu_is_fine(self) -> None:
        assert on(run(make(fp16=True), hardware=gpu_hardware(bf16=False)), "fp16") == []
        assert on(run(make(fp16=True), hardware=gpu_hardware()), "fp16") == []

    def test_bf16_on_gpu_without_bf16(self) -> None:
        one(
            run(make(bf16=True), hardware=gpu_hardware(bf16=False)),
            "bf16",
            r"no bf16 support.*compute capability 8\.0.*fp16=True",
        )

    def test_bf16_on_gpu_with_bf16(self) -> None:
        assert on(run(make(bf16=True), hardware=gpu_hardware(bf16=True)), "bf16") == []


class TestOptimizer:
    FIELDS = (
        "weight_decay",
        "adam_beta1",
        "adam_beta2",
        "adam_epsilon",
        "max_grad_norm",
        "label_smoothing_factor",
        "lr_scheduler_type",
        "optim",
    )

    def test_sound_values_pass(self) -> None:
        config = make(
            weight_decay=0.0,
            adam_beta1=0.0,
            adam_beta2=0.95,
            adam_epsilon=1e-6,
            max_grad_norm=0.0,
            label_smoothing_factor=0.1,
            lr_scheduler_type="cosine",
            optim="adafactor",
        )
        assert [i for i in run(config) if i.field in self.FIELDS] == []

    @pytest.mark.parametrize("value", [-0.01, 1.0])
    def test_weight_decay(self, value: float) -> None:
        one(
            run(make(weight_decay=value)),
            "weight_decay",
            rf"{value} is outside \[0, 1\).*0 to 0\.1",
        )

    @pytest.mark.parametrize("name", ["adam_beta1", "adam_beta2"])
    @pytest.mark.parametrize("value", [-0.1, 1.0])
    def test_adam_betas(self, name: str, value: float) -> None:
        one(run(make(**{name: value})), name, rf"{value} is outside \[0, 1\).*{name}=0\.9")

    @pytest.mark.parametrize("value", [0.0, -1e-8])
    def test_adam_epsilon(self, value: float) -> None:
        one(run(make(adam_epsilon=value)), "adam_epsilon", r"is not positive.*1e-8")

    def test_negative_max_grad_norm(self) -> None:
        one(run(make(max_grad_norm=-1.0)), "max_grad_norm", r"is negative.*0 to disable")

    @pytest.mark.parametrize("value", [-0.1, 1.0])
    def test_label_smoothing(self, value: float) -> None:
        one(
            run(make(label_smoothing_factor=value)),
            "label_smoothing_factor",
            r"outside \[0, 1\).*0 to 0\.2",
        )

    def test_unknown_scheduler_lists_the_known_ones(self) -> None:
        issue = one(
            run(make(lr_scheduler_type="cosine_annealing")),
            "lr_scheduler_type",
            r"'cosine_annealing' is not a known scheduler",
        )
        for name in SCHEDULER_TYPES:
            assert name in issue.fix

    def test_unknown_optimizer_lists_the_supported_ones(self) -> None:
        issue = one(run(make(optim="adam_w")), "optim", r"'adam_w' is not a supported optimizer")
        for name in OPTIMIZERS:
            assert name in issue.fix

    @pytest.mark.parametrize("name", SCHEDULER_TYPES)
    def test_every_listed_scheduler_is_accepted(self, name: str) -> None:
        assert on(run(make(lr_scheduler_type=name)), "lr_scheduler_type") == []

    # 8-bit AdamW also needs bitsandbytes: see TestEightBitOptimizer.
    @pytest.mark.parametrize("name", [o for o in OPTIMIZERS if o != "adamw_bnb_8bit"])
    def test_every_listed_optimizer_is_accepted(self, name: str) -> None:
        assert on(run(make(optim=name)), "optim") == []


class TestWarmup:
    @pytest.mark.parametrize("overrides", [{}, {"warmup_steps": 100}, {"warmup_ratio": 0.1}])
    def test_one_or_no_warmup_passes(self, overrides: dict[str, Any]) -> None:
        issues = run(make(**overrides))
        assert on(issues, "warmup_steps") == []
        assert on(issues, "warmup_ratio") == []

    def test_negative_steps(self) -> None:
        one(run(make(warmup_steps=-5)), "warmup_steps", r"-5 is negative.*0 or more")

    @pytest.mark.parametrize("ratio", [-0.1, 1.0])
    def test_ratio_out_of_range(self, ratio: float) -> None:
        one(run(make(warmup_ratio=ratio)), "warmup_ratio", rf"{ratio} is outside \[0, 1\)")

    def test_both_steps_and_ratio(self) -> None:
        one(
            run(make(warmup_steps=10, warmup_ratio=0.1)),
            "warmup_ratio",
            r"both warmup_steps and warmup_ratio.*only one of them",
        )


class TestLora:
    @staticmethod
    def lora(**overrides: Any) -> AdvancedTrainingConfig:
        return make(training_type=TrainingType.LORA_ADAPTATION, **overrides)

    FIELDS = ("lora_r", "lora_alpha", "lora_dropout", "lora_target_modules")

    def test_sound_lora_passes(self) -> None:
        config = self.lora(
            lora_r=8, lora_alpha=8, lora_dropout=0.0, lora_target_modules=["q_proj", "fc2"]
        )
        assert [i for i in run(config) if i.field in self.FIELDS] == []

    def test_rank_below_one(self) -> None:
        one(run(self.lora(lora_r=0)), "lora_r", r"0 is below 1.*rank of 4 to 64")

    def test_alpha_below_one(self) -> None:
        one(run(self.lora(lora_alpha=0)), "lora_alpha", r"0 is below 1.*2 x lora_r")

    def test_alpha_below_rank_for_lora(self) -> None:
        one(
            run(self.lora(lora_r=16, lora_alpha=8)),
            "lora_alpha",
            r"8 is below lora_r=16.*at least 16 \(commonly 32\)",
        )

    def test_alpha_one_below_rank(self) -> None:
        one(run(self.lora(lora_r=16, lora_alpha=15)), "lora_alpha", r"15 is below lora_r=16")

    def test_alpha_not_compared_when_rank_is_invalid(self) -> None:
        issues = run(self.lora(lora_r=0, lora_alpha=1))
        assert on(issues, "lora_alpha") == []
        one(issues, "lora_r", r"0 is below 1")

    @pytest.mark.parametrize(
        "ttype",
        [t for t in TrainingType if t is not TrainingType.LORA_ADAPTATION and not t.is_preference],
    )
    def test_alpha_below_rank_is_ignored_for_other_types(self, ttype: TrainingType) -> None:
        issues = run(make(training_type=ttype, lora_r=16, lora_alpha=8, lora_dropout=5.0))
        # Not checked, only named as having no effect for this training type.
        found = [i for i in issues if i.field in self.FIELDS]
        assert {i.field for i in found} == {"lora_r", "lora_alpha", "lora_dropout"}
        assert all(i.severity == "warning" and "is ignored" in i.message for i in found)

    @pytest.mark.parametrize("dropout", [-0.1, 1.0])
    def test_dropout_out_of_range(self, dropout: float) -> None:
        one(run(self.lora(lora_dropout=dropout)), "lora_dropout", rf"{dropout} is outside \[0, 1\)")

    def test_empty_target_list(self) -> None:
        one(
            run(self.lora(lora_target_modules=[])),
            "lora_target_modules",
            r"empty list.*leave it unset",
        )

    def test_unknown_targets_list_the_available_names(self) -> None:
        issue = one(
            run(self.lora(lora_target_modules=["q_proj", "query", "dense"])),
            "lora_target_modules",
            r"query, dense not found among the model's linear",
        )
        assert "q_proj not found" not in issue.message
        assert issue.fix == "choose from: fc1, fc2, k_proj, o_proj, q_proj, v_proj."

    def test_unknown_targets_not_checked_without_model_facts(self) -> None:
        issues = run(self.lora(lora_target_modules=["query"]), model=ModelFacts())
        assert on(issues, "lora_target_modules") == []

    def test_targets_on_a_non_lora_run_are_a_warning(self) -> None:
        one(
            run(make(lora_target_modules=["q_proj"])),
            "lora_target_modules",
            r"ignored: training_type is not LoRA.*lora_adaptation",
            severity="warning",
        )


class TestSettingsWithoutEffect:
    """A value that only acts with another setting warns, naming what it waits for."""

    CASES: ClassVar[list[tuple[dict[str, Any], str, str]]] = [
        ({"early_stopping_threshold": 0.01}, "early_stopping_threshold", "early_stopping_patience"),
        ({"greater_is_better": True}, "greater_is_better", "metric_for_best_model"),
        ({"effective_batch_size": 32}, "effective_batch_size", "batch_size to auto"),
        ({"rdzv_endpoint": "node0:29400"}, "rdzv_endpoint", "num_nodes above 1"),
        ({"deepspeed_config": "ds.json"}, "deepspeed_config", "distributed_strategy to deepspeed"),
        ({"lora_r": 8}, "lora_r", "training_type=lora_adaptation"),
        ({"lora_dropout": 0.2}, "lora_dropout", "training_type=lora_adaptation"),
    ]

    @pytest.mark.parametrize(("values", "field", "fix"), CASES)
    def test_alone_it_warns(self, values: dict[str, Any], field: str, fix: str) -> None:
        one(run(make(**values)), field, re.escape(fix), severity="warning")

    @pytest.mark.parametrize(
        "values",
        [
            {"early_stopping_threshold": 0.01, "early_stopping_patience": 2},
            {"greater_is_better": False, "metric_for_best_model": "loss"},
            {"greater_is_better": True, "load_best_model_at_end": True},
            {"effective_batch_size": 32, "batch_size": "auto"},
            {"rdzv_endpoint": "node0:29400", "num_nodes": 2},
            {"lora_r": 8, "training_type": TrainingType.LORA_ADAPTATION},
        ],
    )
    def test_with_its_partner_it_does_not(self, values: dict[str, Any]) -> None:
        field = next(k for k in values if k in {f for _, f, _ in self.CASES})
        assert on(run(make(**values)), field) == []

    def test_a_default_value_given_explicitly_is_still_given(self) -> None:
        # Explicit 0.0 is a choice too, but one that changes nothing: only non-defaults
        # would matter, and this one is what the user wrote, so it is still named.
        one(
            run(make(early_stopping_threshold=0.0)),
            "early_stopping_threshold",
            "no effect",
            "warning",
        )


class TestEvalSteps:
    def test_eval_steps_alone_means_step_evaluation(self) -> None:
        config = make(eval_steps=25)
        assert config.eval_strategy == "steps"
        assert on(run(config), "eval_steps") == []

    def test_eval_steps_with_another_strategy_is_an_error_naming_both(self) -> None:
        one(
            run(make(eval_steps=25, eval_strategy="epoch")),
            "eval_steps",
            r"25 has no effect with eval_strategy epoch\..*set eval_strategy to steps",
        )


class TestConfigForMode:
    def test_a_wider_config_with_only_narrow_fields_is_narrowed(self) -> None:
        config = config_for_mode(make(num_epochs=2), "basic")
        assert type(config) is BasicTrainingConfig
        assert config.model_fields_set == {"model_id", "dataset_id", "training_type", "num_epochs"}

    def test_a_wider_field_is_refused_naming_it_and_the_mode_it_needs(self) -> None:
        with pytest.raises(ConfigValidationError) as info:
            config_for_mode(make(lora_r=8, weight_decay=0.1), "basic")
        assert [i.field for i in info.value.errors] == ["lora_r", "weight_decay"]
        assert "create an advanced job" in str(info.value)

    def test_a_narrower_config_is_lifted_keeping_its_given_fields(self) -> None:
        basic = BasicTrainingConfig(
            model_id="m", dataset_id="d", training_type=TrainingType.FINE_TUNING, seed=3
        )
        lifted = config_for_mode(basic, "expert")
        assert isinstance(lifted, ExpertTrainingConfig)
        assert lifted.model_fields_set == {"model_id", "dataset_id", "training_type", "seed"}


class TestCheckpointing:
    def test_supported_model_passes(self) -> None:
        assert on(run(make(gradient_checkpointing=True)), "gradient_checkpointing") == []

    def test_unsupported_model_is_a_warning(self) -> None:
        model = ModelFacts(max_position_embeddings=512, supports_gradient_checkpointing=False)
        one(
            run(make(gradient_checkpointing=True), model=model),
            "gradient_checkpointing",
            r"does not support it.*gradient_checkpointing=False",
            severity="warning",
        )

    def test_unsupported_model_with_checkpointing_off_passes(self) -> None:
        model = ModelFacts(supports_gradient_checkpointing=False)
        issues = run(make(gradient_checkpointing=False), model=model)
        assert on(issues, "gradient_checkpointing") == []


class TestEarlyStopping:
    def test_with_evaluation_passes(self) -> None:
        config = make(early_stopping_patience=2, eval_strategy="steps", eval_steps=5)
        assert errors(run(config)) == []

    def test_patience_below_one(self) -> None:
        one(run(make(early_stopping_patience=0)), "early_stopping_patience", r"below 1.*e\.g\. 3")

    def test_negative_threshold(self) -> None:
        one(
            run(make(early_stopping_threshold=-0.1, early_stopping_patience=2)),
            "early_stopping_threshold",
            r"negative",
        )

    def test_needs_an_evaluation_strategy(self) -> None:
        issues = run(make(early_stopping_patience=2, eval_strategy="no"))
        one(issues, "eval_strategy", r"compare evaluations.*'steps'")

    def test_steps_strategy_needs_eval_steps(self) -> None:
        issues = run(make(load_best_model_at_end=True, eval_strategy="steps"))
        one(issues, "eval_steps", r"not set.*give eval_steps")

    def test_needs_evaluation_data(self) -> None:
        issues = run(make(early_stopping_patience=2, eval_split=0.0))
        one(issues, "eval_split", r"nothing to evaluate on.*eval_file")

    def test_metric_must_be_reported_for_the_task(self) -> None:
        text = DatasetFacts(num_rows=100, has_labels=False)
        issues = run(make(metric_for_best_model="accuracy"), dataset=text)
        one(issues, "metric_for_best_model", r"language modelling.*loss, perplexity")
        issues = run(make(metric_for_best_model="eval_perplexity"))  # labelled DATA
        one(issues, "metric_for_best_model", r"classification.*loss, accuracy, f1")
        assert on(run(make(metric_for_best_model="eval_f1")), "metric_for_best_model") == []

    def test_monitor_interval_range(self) -> None:
        one(run(make(monitor_interval=0.1)), "monitor_interval", r"outside \[0.5, 600\]")


class TestData:
    def test_labelled_data_passes_task_specific(self) -> None:
        issues = run(make(training_type=TrainingType.TASK_SPECIFIC))
        assert on(issues, "dataset_id") == []

    def test_unlabelled_data_is_fine_for_other_types(self) -> None:
        data = DatasetFacts(num_rows=100, has_labels=False)
        for ttype in TrainingType:
            if ttype is TrainingType.TASK_SPECIFIC or ttype.is_preference:
                continue  # preference types need their own shapes (TestPreferenceRule)
            assert on(run(make(training_type=ttype), dataset=data), "dataset_id") == []

    @pytest.mark.parametrize("rows", [0, 1])
    def test_too_few_rows(self, rows: int) -> None:
        data = DatasetFacts(num_rows=rows, has_labels=True, num_labels=2)
        one(
            run(make(eval_split=0.0), dataset=data),
            "dataset_id",
            rf"has {rows} usable rows.*at least 2 rows",
        )

    def test_task_specific_without_labels(self) -> None:
        data = DatasetFacts(num_rows=100, has_labels=False)
        one(
            run(make(training_type=TrainingType.TASK_SPECIFIC), dataset=data),
            "dataset_id",
            r"task_specific training needs a 'label' column",
        )

    def test_task_specific_with_a_single_label(self) -> None:
        data = DatasetFacts(num_rows=100, has_labels=True, num_labels=1)
        one(
            run(make(training_type=TrainingType.TASK_SPECIFIC), dataset=data),
            "dataset_id",
            r"has 1 distinct label\(s\).*at least 2 labels",
        )


class TestMemory:
    FIX = "turn on gradient_checkpointing (about 1.20 GB)."

    @staticmethod
    def check(peak_gb: float, available_gb: float = 10.0, **extra: Any) -> list[ValidationIssue]:
        memory = MemoryFacts(peak_gb=peak_gb, available_gb=available_gb, kind="system", **extra)
        return TrainingParameterValidator().validate(
            make(), hardware=cpu_hardware(), model=MODEL, dataset=DATA, memory=memory
        )

    @pytest.mark.parametrize("peak", [0.5, 5.0, 8.9])
    def test_well_below_available_passes(self, peak: float) -> None:
        assert self.check(peak) == []

    def test_no_memory_facts_no_memory_issue(self) -> None:
        assert run(make(batch_size=4096, max_length=512)) == []

    @pytest.mark.parametrize("peak", [9.1, 10.0, 10.9])
    def test_near_the_limit_is_a_warning(self, peak: float) -> None:
        issue = one(
            self.check(peak, fix=self.FIX),
            "batch_size",
            rf"needs about {peak:.2f} GB of system memory; 10\.00 GB is available\. "
            r"It may not fit\.",
            severity="warning",
        )
        assert issue.fix == self.FIX

    @pytest.mark.parametrize("peak", [11.1, 20.0, 400.0])
    def test_clearly_over_is_an_error_with_the_fix(self, peak: float) -> None:
        issue = one(
            self.check(peak, fix=self.FIX),
            "batch_size",
            rf"needs about {peak:.2f} GB of system memory; 10\.00 GB is available\.",
        )
        assert "may not fit" not in issue.message
        assert issue.fix == f"{self.FIX} Or force it with ignore_memory_estimate."
        with pytest.raises(ConfigValidationError) as caught:
            TrainingParameterValidator().validate_or_raise(
                make(),
                memory=MemoryFacts(peak_gb=peak, available_gb=10.0, kind="system", fix=self.FIX),
            )
        assert f"batch_size: {issue.message} Fix: {self.FIX}" in str(caught.value)

    def test_default_fix_and_gpu_kind(self) -> None:
        memory = MemoryFacts(peak_gb=30.0, available_gb=20.0, kind="GPU")
        issues = TrainingParameterValidator().validate(make(), memory=memory)
        issue = one(issues, "batch_size", r"needs about 30\.00 GB of GPU memory; 20\.00 GB")
        assert "batch_size" in issue.fix
        assert "gradient_checkpointing" in issue.fix

    def test_memory_problem_is_reported_with_the_others(self) -> None:
        memory = MemoryFacts(peak_gb=50.0, available_gb=10.0, kind="system")
        issues = TrainingParameterValidator().validate(
            make(learning_rate=-1.0), hardware=cpu_hardware(), memory=memory
        )
        assert {i.field for i in errors(issues)} == {"learning_rate", "batch_size"}


class TestAllProblemsAtOnce:
    @staticmethod
    def broken() -> AdvancedTrainingConfig:
        return make(
            training_type=TrainingType.LORA_ADAPTATION,
            learning_rate=-1.0,
            batch_size=0,
            fp16=True,
            bf16=True,
            lora_r=16,
            lora_alpha=4,
        )

    def test_every_problem_is_reported(self) -> None:
        found = errors(run(self.broken(), hardware=gpu_hardware()))
        fields = {i.field for i in found}
        assert {"learning_rate", "batch_size", "fp16", "lora_alpha"} <= fields
        assert len(found) >= 4

    def test_a_basic_config_is_checked_too(self) -> None:
        basic = BasicTrainingConfig(
            model_id="",
            dataset_id="d",
            training_type=TrainingType.FINE_TUNING,
            learning_rate=-1.0,
            batch_size=0,
        )
        fields = {i.field for i in errors(run(basic))}
        assert fields == {"model_id", "learning_rate", "batch_size"}

    def test_validate_or_raise_lists_every_error_field(self) -> None:
        model = ModelFacts(max_position_embeddings=512, supports_gradient_checkpointing=False)
        with pytest.raises(ConfigValidationError) as caught:
            TrainingParameterValidator().validate_or_raise(
                self.broken(), hardware=cpu_hardware(), model=model, dataset=DATA
            )
        exc = caught.value
        text = str(exc)
        error_fields = {i.field for i in exc.errors}
        assert {"learning_rate", "batch_size", "fp16", "lora_alpha"} <= error_fields
        for field in error_fields:
            assert f"  - {field}:" in text
        # fp16 is wrong twice here: on together with bf16, and on a CPU.
        assert len(exc.errors) == 5
        assert text.startswith("Invalid training configuration (5 problems):")
        # The warning travels with the exception but is not listed as a problem.
        assert [i.field for i in exc.issues if i.severity == "warning"] == [
            "gradient_checkpointing"
        ]
        assert "gradient_checkpointing" not in text

    def test_single_error_uses_singular(self) -> None:
        with pytest.raises(ConfigValidationError, match=r"\(1 problem\):\n  - seed: -1"):
            TrainingParameterValidator().validate_or_raise(make(seed=-1))

    def test_validate_or_raise_returns_warnings_when_no_errors(self) -> None:
        model = ModelFacts(supports_gradient_checkpointing=False)
        warnings = TrainingParameterValidator().validate_or_raise(
            make(lora_target_modules=["q_proj"]),
            hardware=cpu_hardware(),
            model=model,
            dataset=DATA,
        )
        assert sorted(i.field for i in warnings) == [
            "gradient_checkpointing",
            "lora_target_modules",
        ]
        assert all(i.severity == "warning" for i in warnings)

    def test_validate_or_raise_returns_empty_for_a_clean_config(self) -> None:
        assert TrainingParameterValidator().validate_or_raise(make()) == []


class TestListsMatchTransformers:
    """SCHEDULER_TYPES and OPTIMIZERS must stay names transformers accepts."""

    def test_scheduler_types(self) -> None:
        from transformers.trainer_utils import SchedulerType

        known = {s.value for s in SchedulerType}
        assert [n for n in SCHEDULER_TYPES if n not in known] == []

    def test_optimizers(self) -> None:
        from transformers.training_args import OptimizerNames

        known = {o.value for o in OptimizerNames}
        assert [n for n in OPTIMIZERS if n not in known] == []


class TestEightBitOptimizer:
    CFG: ClassVar[dict[str, str]] = {
        "model_id": "m",
        "dataset_id": "d",
        "training_type": "fine_tuning",
    }

    def test_adamw_8bit_without_bitsandbytes_names_the_package(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # A None entry makes the package unimportable, as on a machine without it.
        monkeypatch.setitem(sys.modules, "bitsandbytes", None)
        cfg = AdvancedTrainingConfig(**self.CFG, optim="adamw_bnb_8bit")
        issues = [i for i in TrainingParameterValidator().validate(cfg) if i.field == "optim"]
        assert len(issues) == 1
        assert issues[0].severity == "error"
        assert "pip install bitsandbytes" in str(issues[0])

    def test_adamw_8bit_with_bitsandbytes_is_clean(self) -> None:
        pytest.importorskip("bitsandbytes")
        cfg = AdvancedTrainingConfig(**self.CFG, optim="adamw_bnb_8bit")
        assert [i for i in TrainingParameterValidator().validate(cfg) if i.field == "optim"] == []


class TestDistributed:
    def test_a_plain_layout_is_clean(self) -> None:
        assert not on(run(make(num_processes=2)), "num_processes")

    @pytest.mark.parametrize("name", ["num_processes", "num_nodes"])
    def test_counts_below_one(self, name: str) -> None:
        one(run(make(**{name: 0})), name, "1 or more")

    def test_more_cpu_processes_than_cores(self) -> None:
        issues = run(make(num_processes=3), hardware=cpu_hardware(cpu_cores=2))
        one(issues, "num_processes", "oversubscribed.*2 or fewer")

    def test_more_processes_than_gpus(self) -> None:
        one(
            run(make(num_processes=2), hardware=gpu_hardware()), "num_processes", "1 GPU.*num_nodes"
        )

    def test_sharding_with_one_process_is_a_warning(self) -> None:
        one(
            run(make(distributed_strategy="fsdp")),
            "distributed_strategy",
            "num_processes",
            "warning",
        )

    def test_deepspeed_needs_its_package_and_a_gpu(self) -> None:
        issues = on(
            run(make(num_processes=2, distributed_strategy="deepspeed")), "distributed_strategy"
        )
        assert issues
        assert all(i.severity == "error" for i in issues)
        assert any("GPUs" in str(i) for i in issues)

    def test_endpoint_needs_a_port(self) -> None:
        one(run(make(num_nodes=2, rdzv_endpoint="node0")), "rdzv_endpoint", "HOST:PORT")

    def test_timeout_too_short(self) -> None:
        one(run(make(distributed_timeout=5)), "distributed_timeout", "30 seconds")


def expert(**overrides: Any) -> ExpertTrainingConfig:
    values: dict[str, Any] = {
        "model_id": "tiny-model",
        "dataset_id": "tiny-data",
        "training_type": TrainingType.FINE_TUNING,
    }
    values.update(overrides)
    return ExpertTrainingConfig(**values)


class TestExpert:
    def test_a_full_expert_config_is_clean(self, tmp_path: Any) -> None:
        (tmp_path / "mine.py").write_text(
            "class Cb:\n    pass\n\ndef loss(m, i, o):\n    return 0\n"
        )
        config = expert(
            loss={"name": "focal", "focal_gamma": 2.0, "focal_alpha": 0.25, "z_loss": 1e-4},
            optimizer={
                "name": "SGD",
                "kwargs": {"momentum": 0.9},
                "param_groups": [{"pattern": "*lora_B*", "lr_scale": 10}],
                "layerwise_lr_decay": 0.8,
            },
            lr_schedule_expr="lr * min(1, step / warmup) * (1 - progress)",
            warmup_steps=10,
            callbacks=["mine:Cb"],
            clip_grad_value=1.0,
            ema_decay=0.999,
            code_dir=str(tmp_path),
        )
        assert errors(run(config)) == []

    def test_loss_parameters(self) -> None:
        issues = run(
            expert(
                loss={
                    "label_smoothing": 1.0,
                    "focal_gamma": -1,
                    "focal_alpha": 2.0,
                    "z_loss": -1,
                    "class_weights": {"a": 0},
                }
            )
        )
        one(issues, "loss.label_smoothing", "outside")
        one(issues, "loss.focal_gamma", "negative")
        one(issues, "loss.focal_alpha", "outside")
        one(issues, "loss.z_loss", "negative")
        one(issues, "loss.class_weights", "label 'a' has weight 0")

    def test_expression_is_parsed_and_evaluated(self) -> None:
        one(run(expert(lr_schedule_expr="__import__('os')")), "lr_schedule_expr", "__import__")
        # warmup 0 (no warmup_steps): the division fails at step 0, and the fix says why.
        one(run(expert(lr_schedule_expr="lr * step / warmup")), "lr_schedule_expr", "warmup = 0")
        one(
            run(expert(lr_schedule_expr="lr", lr_scheduler_type="cosine")),
            "lr_scheduler_type",
            "replaces",
            "warning",
        )

    def test_optimizer_settings(self) -> None:
        issues = run(
            expert(
                optimizer={
                    "name": "Adamm",
                    "layerwise_lr_decay": 1.5,
                    "param_groups": [{"pattern": "*", "lr": 0.1, "lr_scale": 2}],
                }
            )
        )
        one(issues, "optimizer.name", "not a torch.optim optimizer.*AdamW")
        one(issues, "optimizer.layerwise_lr_decay", "outside")
        one(issues, "optimizer.param_groups[0]", "both lr and lr_scale")

    def test_hooks(self) -> None:
        one(run(expert(clip_grad_value=0)), "clip_grad_value", "not above 0")
        one(run(expert(ema_decay=1.0)), "ema_decay", "outside")

    def test_user_code_is_read_not_run(self, tmp_path: Any) -> None:
        (tmp_path / "boom.py").write_text("raise SystemExit('ran at validation')\ndef f(): pass\n")
        assert not errors(run(expert(loss={"function": "boom:f"}, code_dir=str(tmp_path))))
        one(
            run(expert(callbacks=["boom:g"], code_dir=str(tmp_path))),
            "callbacks",
            "no top-level 'g'",
        )
        one(
            run(expert(callbacks=["nope:g"], code_dir=str(tmp_path))),
            "callbacks",
            "no file nope.py",
        )
        one(run(expert(trainer_class="boom:f")), "trainer_class", "code_dir is not set")
        one(
            run(expert(callbacks=["not a ref"], code_dir=str(tmp_path))), "callbacks", "module:name"
        )


def test_a_forced_run_over_the_estimate_is_only_warned_about() -> None:
    memory = MemoryFacts(peak_gb=20.0, available_gb=10.0, kind="system", fix="lower batch_size.")
    issues = TrainingParameterValidator().validate(make(ignore_memory_estimate=True), memory=memory)
    one(issues, "batch_size", "Started anyway", "warning")


PAIRS = DatasetFacts(num_rows=300, has_labels=False, shape="preference")
PROMPTS = DatasetFacts(num_rows=300, has_labels=False, shape="prompt")
CONTAINS = {"name": "contains", "pattern": "x"}


class TestPreferenceRule:
    def test_a_dpo_run_on_pairs_passes(self) -> None:
        assert run(make(training_type=TrainingType.DPO), dataset=PAIRS) == []

    def test_a_method_on_the_wrong_shape_names_the_columns_it_needs(self) -> None:
        issue = one(
            run(make(training_type=TrainingType.DPO), dataset=PROMPTS),
            "dataset_id",
            r"dpo needs rows with prompt, chosen, rejected.*prompt data",
        )
        assert "--shape preference" in issue.fix
        one(
            run(make(training_type=TrainingType.KTO), dataset=DATA),
            "dataset_id",
            r"true/false label.*plain text",
        )

    def test_a_supervised_type_refuses_preference_data(self) -> None:
        one(
            run(make(), dataset=PAIRS),
            "training_type",
            r"fine_tuning trains on text.*preference rows.*use a preference type",
        )

    def test_preference_options_on_a_supervised_type_are_ignored_with_a_warning(self) -> None:
        issues = run(make(preference={"beta": 0.3}), dataset=DATA)
        one(issues, "preference", r"is ignored: fine_tuning", "warning")

    def test_loss_type_is_checked_per_method(self) -> None:
        ok = make(training_type=TrainingType.DPO, preference={"loss_type": "ipo"})
        assert run(ok, dataset=PAIRS) == []
        bad = make(training_type=TrainingType.DPO, preference={"loss_type": "kto"})
        one(run(bad, dataset=PAIRS), "preference.loss_type", r"'kto' is not a dpo loss.*sigmoid")
        orpo = make(training_type=TrainingType.ORPO, preference={"loss_type": "ipo"})
        one(run(orpo, dataset=PAIRS), "preference.loss_type", r"orpo has no loss variants")

    def test_beta_must_be_positive_except_for_grpo(self) -> None:
        dpo = make(training_type=TrainingType.DPO, preference={"beta": 0.0})
        one(run(dpo, dataset=PAIRS), "preference.beta", r"not above 0")
        grpo = make(
            training_type=TrainingType.GRPO, preference={"beta": 0.0, "rewards": [CONTAINS]}
        )
        assert run(grpo, dataset=PROMPTS) == []

    def test_precomputed_reference_is_for_dpo_and_kto(self) -> None:
        cfg = make(training_type=TrainingType.SIMPO, preference={"reference": "precomputed"})
        one(run(cfg, dataset=PAIRS), "preference.reference", r"uses no reference model")

    def test_grpo_needs_rewards_where_the_data_has_no_reference_answer(self) -> None:
        one(
            run(make(training_type=TrainingType.GRPO), dataset=PROMPTS),
            "preference.rewards",
            r"GRPO learns from rewards and has none.*no reference answer",
        )
        # With reference answers, exact_match against them is the default reward.
        answers = DatasetFacts(num_rows=300, has_labels=False, shape="completion")
        assert run(make(training_type=TrainingType.GRPO), dataset=answers) == []

    def test_grpo_groups_must_divide_the_batch(self) -> None:
        cfg = make(
            training_type=TrainingType.GRPO,
            batch_size=6,
            preference={"num_generations": 4, "rewards": [CONTAINS]},
        )
        issue = one(run(cfg, dataset=PROMPTS), "preference.num_generations", r"does not divide")
        assert "multiple of 4" in issue.fix
        single = make(
            training_type=TrainingType.GRPO,
            preference={"num_generations": 1, "rewards": [CONTAINS]},
        )
        one(run(single, dataset=PROMPTS), "preference.num_generations", r"below 2")

    def test_reward_specs_are_checked(self) -> None:
        rewards = [
            {"name": "contains"},
            {"name": "format", "pattern": "(unclosed"},
            {"name": "length"},
            {"name": "exact_match"},
        ]
        cfg = make(training_type=TrainingType.GRPO, preference={"rewards": rewards})
        issues = run(cfg, dataset=PROMPTS)
        one(issues, "preference.rewards[0].pattern", r"contains needs one")
        one(issues, "preference.rewards[1].pattern", r"not a valid regex")
        one(issues, "preference.rewards[2].target_length", r"missing")
        one(issues, "preference.rewards[3].name", r"reference answer.*prompt data has none")

    def test_trl_options_are_checked_against_the_methods_config(self) -> None:
        cfg = make(
            training_type=TrainingType.DPO,
            preference={"trl_options": {"use_weighting": True, "beta": 0.5, "no_such": 1}},
        )
        issues = run(cfg, dataset=PAIRS)
        one(issues, "preference.trl_options.beta", r"set by flextrain.*preference.beta")
        one(issues, "preference.trl_options.no_such", r"not a field of TRL's dpo config")
        assert on(issues, "preference.trl_options.use_weighting") == []

    def test_lora_knobs_count_for_a_preference_type_with_its_adapter(self) -> None:
        cfg = make(training_type=TrainingType.DPO, lora_r=8)
        assert run(cfg, dataset=PAIRS) == []
        full = make(training_type=TrainingType.DPO, lora_r=8, preference={"use_lora": False})
        one(run(full, dataset=PAIRS), "lora_r", r"ignored", "warning")


def test_supervised_only_expert_knobs_are_named_as_ignored_for_preference_runs() -> None:
    cfg = ExpertTrainingConfig(
        model_id="tiny-model",
        dataset_id="tiny-data",
        training_type=TrainingType.DPO,
        loss={"name": "focal"},
        ema_decay=0.99,
    )
    issues = run(cfg, dataset=PAIRS)
    one(issues, "loss", r"ignored: dpo is trained by TRL's trainer", "warning")
    one(issues, "ema_decay", r"ignored", "warning")
    assert errors(issues) == []


class TestFourBitBase:
    """load_in_4bit (QLoRA): only under a LoRA adapter, with bitsandbytes, not sharded."""

    def test_lora_on_a_4bit_base_is_clean(self) -> None:
        issues = run(make(training_type=TrainingType.LORA_ADAPTATION, load_in_4bit=True))
        assert not [i for i in issues if "4" in i.field or i.field == "distributed_strategy"]

    @pytest.mark.parametrize(
        "ttype", [TrainingType.FINE_TUNING, TrainingType.CONTINUED_PRETRAINING]
    )
    def test_full_weight_training_is_refused(self, ttype: TrainingType) -> None:
        one(
            run(make(training_type=ttype, load_in_4bit=True)),
            "load_in_4bit",
            rf"{ttype.value} updates every weight, but 4-bit weights are frozen.*"
            r"Fix: use training_type=lora_adaptation",
        )

    def test_a_preference_run_without_its_adapter_is_refused(self) -> None:
        cfg = make(
            training_type=TrainingType.DPO, load_in_4bit=True, preference={"use_lora": False}
        )
        one(run(cfg), "load_in_4bit", r"dpo trains every weight \(preference.use_lora is off\)")
        with_adapter = make(training_type=TrainingType.DPO, load_in_4bit=True)
        assert not on(run(with_adapter), "load_in_4bit")

    @pytest.mark.parametrize("strategy", ["fsdp", "deepspeed"])
    def test_sharded_strategies_are_refused(self, strategy: str) -> None:
        cfg = make(
            training_type=TrainingType.LORA_ADAPTATION,
            load_in_4bit=True,
            num_processes=2,
            distributed_strategy=strategy,
        )
        found = [i for i in run(cfg, hardware=gpu_hardware()) if "flattened" in i.message]
        assert len(found) == 1
        assert found[0].field == "distributed_strategy"
        assert found[0].severity == "error"
        assert re.search(rf"{strategy} shards.*use distributed_strategy=ddp", str(found[0]))

    def test_without_bitsandbytes_the_fix_names_the_extra(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # unimportable, as if absent
        cfg = make(training_type=TrainingType.LORA_ADAPTATION, load_in_4bit=True)
        one(run(cfg), "load_in_4bit", r"needs the bitsandbytes package.*flextrain\[qlora\]")

    def test_4bit_options_without_load_in_4bit_warn(self) -> None:
        cfg = make(training_type=TrainingType.LORA_ADAPTATION, bnb_4bit_quant_type="fp4")
        one(run(cfg), "bnb_4bit_quant_type", "has no effect without load_in_4bit", "warning")
