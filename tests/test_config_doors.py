"""Every config field, given alone through every door, reaches the worker.

The class of test behind issue 19's first defect: a value accepted when the job is
created must also be accepted when it starts, and must arrive where the worker
uses it. For each field of the Basic and Advanced configs, a non-default value is
given alone (beside the three required ids) through each door that takes it:

- `cli-file`: a YAML file to `flextrain train --config F --no-start`, then
  `flextrain jobs start ID --dry-run --json` (the run spec, printed by the CLI);
- `cli-flag`: the same with the field's own `flextrain train` flag, where it has one;
- `python`: `FlexibleTrainingInterface.create_advanced_training_job`, then
  `TrainingService.plan_start`;
- `rest`: `POST /api/training/jobs/advanced` as a trainer, then `plan_start`.

`plan_start` is the start without the launch: every check `start_job` makes against
this machine, and the run spec its worker would read. The spec's config then builds
the worker's TrainingArguments (`flextrain.train.arguments.training_arguments`), and
each case reads its value where the worker uses it. No case trains: the matrix must
stay fast, and training itself is covered by the training tests.

A test below fails when a config field has no case here, so a new knob cannot be
added without saying where it lands.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from transformers import TrainingArguments
from typer.testing import CliRunner

from flextrain.api.app import create_app
from flextrain.cli.main import app as cli_app
from flextrain.config.cluster import ClusterOptions
from flextrain.config.health import HealthOptions
from flextrain.config.presets import preset_values
from flextrain.config.schemas import AdvancedTrainingConfig, BasicTrainingConfig
from flextrain.config.validation import ConfigValidationError
from flextrain.interface import FlexibleTrainingInterface
from flextrain.jobs.launch import build_launch_command
from flextrain.jobs.resources import Layout
from flextrain.jobs.spec import RunSpec
from flextrain.service import TrainingService
from flextrain.settings import Settings
from flextrain.train.arguments import training_arguments
from flextrain.train.model import quantized_loading
from flextrain.train.preference.run import method_options
from flextrain.train.tracking import configure_tracking
from tests.conftest import TEST_CLIENT_HOST

REQUIRED = ("model_id", "dataset_id", "training_type")
FINE = {
    "model_id": "flextrain/tiny-llama",
    "dataset_id": "demo/text",
    "training_type": "fine_tuning",
}
LORA = {**FINE, "training_type": "lora_adaptation"}
DPO = {**FINE, "dataset_id": "demo/preferences", "training_type": "dpo"}
QLORA = {**LORA, "load_in_4bit": True}

Observe = Callable[["Seen"], Any]


@dataclass(frozen=True)
class Seen:
    """What the worker would get: its run spec and the TrainingArguments it builds."""

    spec: RunSpec
    args: TrainingArguments
    report_to: list[str]
    argv: list[str]
    warnings: list[str]


@dataclass(frozen=True)
class Case:
    """One field's non-default value and where the worker shows it."""

    field: str
    value: Any
    observe: Observe
    expected: Any = None  # None: the value itself
    base: dict[str, Any] = field(default_factory=lambda: dict(FINE))
    flag: list[str] | None = None  # `flextrain train` arguments giving the same value
    warns: bool = False  # the value waits for another setting: a warning names it
    refused_here: str | None = None  # this CPU machine cannot run it: the refusal names this
    rest_admin: bool = False  # over REST only an admin may give it (trainers get a 403)

    @property
    def id(self) -> str:
        return f"{self.field}={self.value!r}"

    def wanted(self) -> Any:
        return self.value if self.expected is None else self.expected


def _cfg(name: str) -> Observe:
    return lambda seen: getattr(seen.spec.config, name)


def _arg(name: str) -> Observe:
    return lambda seen: getattr(seen.args, name)


def _enum_arg(name: str) -> Observe:
    return lambda seen: str(getattr(getattr(seen.args, name), "value", getattr(seen.args, name)))


def _four_bit(seen: Seen) -> Any:
    """The BitsAndBytesConfig the worker loads the base with (absent: not 4-bit)."""
    return quantized_loading(seen.spec).get("quantization_config")


def _flag_after(flag: str) -> Observe:
    return lambda seen: seen.argv[seen.argv.index(flag) + 1] if flag in seen.argv else None


QUICK = preset_values("quick", "fine_tuning")

CASES: list[Case] = [
    # -- basic --------------------------------------------------------------------------
    Case("num_epochs", 2, _arg("num_train_epochs"), flag=["--epochs", "2"]),
    Case("learning_rate", 1e-3, _arg("learning_rate"), flag=["--learning-rate", "0.001"]),
    Case("batch_size", 4, _arg("per_device_train_batch_size"), flag=["--batch-size", "4"]),
    Case(
        "batch_size",
        "auto",
        lambda s: (
            isinstance(s.spec.config.batch_size, int)
            and s.args.per_device_train_batch_size * s.args.gradient_accumulation_steps == 16
        ),
        expected=True,
        flag=["--batch-size", "auto"],
    ),
    Case("max_length", 64, _cfg("max_length"), flag=["--max-length", "64"]),
    Case("use_mixed_precision", False, _cfg("use_mixed_precision"), flag=["--no-mixed-precision"]),
    Case(
        "gradient_checkpointing",
        False,
        _arg("gradient_checkpointing"),
        flag=["--no-gradient-checkpointing"],
    ),
    # Explicitly on: kept, although the service turns the default off when memory is plenty.
    Case(
        "gradient_checkpointing",
        True,
        _arg("gradient_checkpointing"),
        flag=["--gradient-checkpointing"],
    ),
    Case(
        "preset",
        "quick",
        lambda s: (s.args.num_train_epochs, s.args.learning_rate, s.spec.config.max_length),
        expected=(QUICK["num_epochs"], QUICK["learning_rate"], QUICK["max_length"]),
        flag=["--preset", "quick"],
    ),
    Case("seed", 7, _arg("seed"), flag=["--seed", "7"]),
    Case("eval_split", 0.2, _cfg("eval_split"), flag=["--eval-split", "0.2"]),
    Case("logging_steps", 3, _arg("logging_steps"), flag=["--logging-steps", "3"]),
    Case(
        "save_steps",
        5,
        lambda s: (str(s.args.save_strategy.value), s.args.save_steps),
        expected=("steps", 5),
        flag=["--save-steps", "5"],
    ),
    Case("save_total_limit", 1, _arg("save_total_limit")),
    Case(
        "lora_target_modules",
        ["q_proj"],
        lambda s: s.spec.lora_target_modules,
        base=LORA,
        flag=["--lora-target-modules", "q_proj"],
    ),
    Case("run_name", "matrix run", _arg("run_name"), flag=["--run-name", "matrix run"]),
    # output_dir: a fresh folder per door (two jobs may not share one); see _value().
    Case("output_dir", "<fresh>", lambda s: Path(s.spec.output_dir).name, expected="<fresh>"),
    # -- advanced -----------------------------------------------------------------------
    Case("weight_decay", 0.1, _arg("weight_decay")),
    Case("adam_beta1", 0.8, _arg("adam_beta1")),
    Case("adam_beta2", 0.99, _arg("adam_beta2")),
    Case("adam_epsilon", 1e-6, _arg("adam_epsilon")),
    Case("lr_scheduler_type", "cosine", _enum_arg("lr_scheduler_type")),
    Case("gradient_accumulation_steps", 2, _arg("gradient_accumulation_steps")),
    Case("fp16", True, _arg("fp16"), refused_here="fp16"),
    Case("bf16", True, lambda s: (s.spec.precision, s.args.bf16), expected=("bf16", True)),
    Case("lora_r", 8, _cfg("lora_r"), base=LORA),
    Case("lora_alpha", 64, _cfg("lora_alpha"), base=LORA),
    Case("lora_dropout", 0.05, _cfg("lora_dropout"), base=LORA),
    # Read by the worker's model loading (train/model.py) into transformers' 4-bit config.
    Case(
        "load_in_4bit",
        True,
        lambda s: _four_bit(s).load_in_4bit,
        base=LORA,
        flag=["--load-in-4bit"],
    ),
    Case(
        "bnb_4bit_quant_type",
        "fp4",
        lambda s: _four_bit(s).bnb_4bit_quant_type,
        base=QLORA,
    ),
    Case(
        "bnb_4bit_use_double_quant",
        False,
        lambda s: _four_bit(s).bnb_4bit_use_double_quant,
        base=QLORA,
    ),
    Case("per_device_train_batch_size", 4, _arg("per_device_train_batch_size")),
    Case("per_device_eval_batch_size", 3, _arg("per_device_eval_batch_size")),
    Case("effective_batch_size", 8, _cfg("effective_batch_size"), warns=True),
    Case("warmup_steps", 3, _arg("warmup_steps")),
    Case("warmup_ratio", 0.1, _arg("warmup_steps")),  # the Trainer takes a ratio there too
    Case("max_steps", 5, _arg("max_steps")),
    Case("max_grad_norm", 0.5, _arg("max_grad_norm")),
    Case("optim", "sgd", _enum_arg("optim")),
    Case("label_smoothing_factor", 0.1, _arg("label_smoothing_factor")),
    Case("eval_strategy", "steps", _enum_arg("eval_strategy")),
    Case(
        "eval_steps",
        5,
        lambda s: (str(s.args.eval_strategy.value), s.args.eval_steps),
        expected=("steps", 5),
    ),
    Case("dataloader_num_workers", 1, _arg("dataloader_num_workers")),
    Case("evaluate_before_training", False, _cfg("evaluate_before_training")),
    Case("num_threads", 1, lambda s: s.spec.num_threads),
    Case("completion_only_loss", False, _cfg("completion_only_loss")),
    Case("eval_file", "demo/text", lambda s: s.spec.eval_data is not None, expected=True),
    Case("packing", False, _cfg("packing")),
    Case("torch_compile", True, _arg("torch_compile")),
    Case("attn_implementation", "eager", _cfg("attn_implementation")),
    Case("group_by_length", False, _enum_arg("train_sampling_strategy"), expected="random"),
    Case(
        "early_stopping_patience",
        2,
        lambda s: (s.spec.config.early_stopping_patience, s.args.load_best_model_at_end),
        expected=(2, True),
        flag=["--early-stopping-patience", "2"],
    ),
    Case("early_stopping_threshold", 0.01, _cfg("early_stopping_threshold"), warns=True),
    Case("metric_for_best_model", "perplexity", _arg("metric_for_best_model"), "eval_perplexity"),
    Case("greater_is_better", True, _cfg("greater_is_better"), warns=True),
    Case("load_best_model_at_end", True, _arg("load_best_model_at_end")),
    Case(
        "tracking",
        ["tensorboard"],
        lambda s: s.report_to,
        flag=["--tracking", "tensorboard"],
    ),
    Case("monitor_interval", 2.0, _cfg("monitor_interval")),
    Case("ignore_memory_estimate", True, _cfg("ignore_memory_estimate"), flag=["--force"]),
    Case("oom_recovery", False, _cfg("oom_recovery")),
    Case(
        "num_processes",
        2,
        _flag_after("--nproc-per-node"),
        expected="2",
        flag=["--num-processes", "2"],
    ),
    Case("num_nodes", 2, _flag_after("--nnodes"), expected="2", flag=["--num-nodes", "2"]),
    Case(
        "distributed_strategy",
        "fsdp",
        _cfg("distributed_strategy"),
        flag=["--strategy", "fsdp"],
        warns=True,
    ),
    Case("rdzv_endpoint", "127.0.0.1:29555", _cfg("rdzv_endpoint"), warns=True, rest_admin=True),
    Case("distributed_timeout", 120, _cfg("distributed_timeout")),
    # Read only by the slurm executor (tests/cluster); here it must arrive intact.
    Case(
        "cluster",
        {"partition": "gpu", "time_limit": "02:00:00"},
        _cfg("cluster"),
        expected=ClusterOptions(partition="gpu", time_limit="02:00:00"),
    ),
    Case("deepspeed_config", "<file>", _cfg("deepspeed_config"), expected="<file>", warns=True),
    # The original module's free-form dict: refused when not empty (docs/compat.md).
    Case(
        "custom_parameters",
        {"foo": 1},
        _cfg("custom_parameters"),
        refused_here="custom_parameters",
    ),
    # Read by the run's guards (train/guards.py) from the spec's config.
    Case(
        "health",
        {"on_divergence": "rollback"},
        _cfg("health"),
        expected=HealthOptions(on_divergence="rollback"),
        flag=["--on-divergence", "rollback"],
    ),
    # Read into the method's TRL config (DPOConfig) by the preference runner.
    Case(
        "preference",
        {"beta": 0.2, "loss_type": "ipo", "trl_options": {"ld_alpha": 0.5}},
        lambda s: {k: method_options(s.spec.config)[k] for k in ("beta", "loss_type", "ld_alpha")},
        expected={"beta": 0.2, "loss_type": ["ipo"], "ld_alpha": 0.5},
        base=DPO,
    ),
]

DOORS = ("cli-file", "cli-flag", "python", "rest")
MATRIX = [
    pytest.param(door, case, id=f"{door}:{case.id}")
    for case in CASES
    for door in DOORS
    if door != "cli-flag" or case.flag is not None
]


def test_every_config_field_has_a_case() -> None:
    fields = set(AdvancedTrainingConfig.model_fields) - set(REQUIRED)
    assert set(BasicTrainingConfig.model_fields) - set(REQUIRED) <= fields
    assert {case.field for case in CASES} == fields


def test_every_case_value_differs_from_the_default() -> None:
    # Explicit gradient_checkpointing=True is kept, where the default may be turned off.
    for case in CASES:
        if (case.field, case.value) == ("gradient_checkpointing", True):
            continue
        default = AdvancedTrainingConfig.model_fields[case.field].get_default(
            call_default_factory=True
        )
        assert case.value != default, case.id


# -- the doors ------------------------------------------------------------------------
@dataclass
class Doors:
    settings: Settings
    service: TrainingService
    client: TestClient
    token: str
    admin_token: str
    files: Path
    env: dict[str, str]


@pytest.fixture(scope="module")
def doors(tmp_path_factory: pytest.TempPathFactory, models_cache: Path) -> Iterator[Doors]:
    root = tmp_path_factory.mktemp("doors")
    settings = Settings(
        home=root / "home", models_cache=models_cache, allowed_hosts=[TEST_CLIENT_HOST]
    )
    api = create_app(settings)
    service: TrainingService = api.state.service
    _, token = service.users.create("tom", "trainer")
    _, admin_token = service.users.create("ada", "admin")
    files = root / "files"
    files.mkdir()
    deepspeed = json.dumps({"zero_optimization": {"stage": 2}})
    (files / "deepspeed.json").write_text(deepspeed)
    # A REST trainer names files inside their own folder only.
    own = settings.home / "outputs" / "tom"
    own.mkdir(parents=True)
    (own / "deepspeed.json").write_text(deepspeed)
    env = {
        "FLEXTRAIN_HOME": str(settings.home),
        "FLEXTRAIN_MODELS_CACHE": str(models_cache),
        "COLUMNS": "400",
    }
    with TestClient(api, raise_server_exceptions=False) as client:
        yield Doors(settings, service, client, token, admin_token, files, env)
    service.engine.dispose()


def _value(case: Case, door: str, doors: Doors) -> Any:
    if case.value == "<fresh>":
        name = f"out-{door}"
        # REST trainers name folders inside their own; the others give any path.
        return name if door == "rest" else str(doors.files / name)
    if case.value == "<file>":
        # REST trainers name it relative to their own folder.
        return "deepspeed.json" if door == "rest" else str(doors.files / "deepspeed.json")
    return case.value


def _expected(case: Case, door: str, doors: Doors) -> Any:
    if case.expected == "<fresh>":
        return f"out-{door}"
    if case.expected == "<file>":
        if door == "rest":
            return str((doors.settings.home / "outputs" / "tom" / "deepspeed.json").resolve())
        return str(doors.files / "deepspeed.json")
    return case.wanted()


@dataclass(frozen=True)
class Created:
    """A door's answer to creating the job: its id and warnings, or the refusal."""

    job_id: str | None
    warnings: list[str]
    refusal: str = ""


def _cli(doors: Doors, *args: str) -> Any:
    return CliRunner().invoke(cli_app, list(args), env=doors.env)


def _create(door: str, case: Case, doors: Doors) -> Created:
    value = _value(case, door, doors)
    body = {**case.base, case.field: value}
    if door in ("cli-file", "cli-flag"):
        base = case.base
        args = ["train", "--model", base["model_id"], "--dataset", base["dataset_id"]]
        args += ["--type", base["training_type"], "--no-start"]
        if door == "cli-flag":
            assert case.flag is not None
            args += [a if a != "<fresh>" else str(value) for a in case.flag]
            if case.field == "output_dir":
                args += ["--output-dir", str(value)]
        else:
            config = doors.files / f"{door}-{case.field}.yaml"
            extra = {k: v for k, v in base.items() if k not in REQUIRED}  # e.g. load_in_4bit
            config.write_text(yaml.safe_dump({**extra, case.field: value}))
            args += ["--config", str(config)]
        result = _cli(doors, *args)
        text = " ".join(result.output.split())
        if result.exit_code != 0:
            assert result.exit_code == 2, result.output
            assert "Traceback" not in result.output, result.output
            return Created(None, [], text)
        job_id = text.split("Job ")[1].split()[0]
        return Created(job_id, [w for w in text.split("warning: ")[1:]])
    if door == "python":
        interface = FlexibleTrainingInterface(service=doors.service)
        try:
            job = asyncio.run(
                interface.create_advanced_training_job(AdvancedTrainingConfig(**body))
            )
        except ConfigValidationError as exc:
            return Created(None, [], str(exc))
        return Created(job.job_id, job.warnings)
    token = doors.admin_token if case.rest_admin else doors.token
    response = doors.client.post(
        "/api/training/jobs/advanced",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
    )
    if response.status_code != 201:
        assert response.status_code == 422, response.text
        return Created(None, [], response.text)
    return Created(response.json()["job_id"], response.json()["warnings"])


def _plan(door: str, job_id: str, doors: Doors) -> RunSpec:
    if door.startswith("cli"):
        result = _cli(doors, "jobs", "start", job_id, "--dry-run", "--json")
        assert result.exit_code == 0, result.output
        return RunSpec.model_validate_json(result.stdout)
    return doors.service.plan_start(job_id)


def _seen(spec: RunSpec, warnings: list[str], doors: Doors) -> Seen:
    config = spec.config
    has_eval = spec.eval_data is not None or config.eval_split > 0
    report_to, _ = configure_tracking(spec, doors.settings.home, environ={})
    args = training_arguments(
        spec, has_eval, supports_gc=True, report_to=report_to, grouped=config.group_by_length
    )
    argv, _ = build_launch_command(
        spec.job_id, Layout.of(config), doors.settings, rdzv_endpoint="node0:29400"
    )
    return Seen(spec, args, report_to, argv, warnings)


@pytest.mark.parametrize(("door", "case"), MATRIX)
def test_a_value_given_alone_starts_and_reaches_the_worker(
    door: str, case: Case, doors: Doors
) -> None:
    created = _create(door, case, doors)
    if case.refused_here is not None and created.job_id is None:
        # Refused at creation (the CLI asks for this machine's hardware): named.
        assert case.refused_here in created.refusal
        return
    assert created.job_id is not None, created.refusal
    if case.warns:
        assert any(case.field in w for w in created.warnings), created.warnings
    if case.refused_here is not None:
        # A plan for other hardware (the API keeps it with a warning): its start here is
        # refused with the reason, the job left pending.
        assert any(case.refused_here in w for w in created.warnings), created.warnings
        with pytest.raises(Exception, match=case.refused_here):
            doors.service.plan_start(created.job_id)
        return
    spec = _plan(door, created.job_id, doors)
    assert case.field in (spec.config_fields or []) or case.field == "preset"
    seen = _seen(spec, created.warnings, doors)
    assert case.observe(seen) == _expected(case, door, doors)


def test_a_job_that_names_no_optimizer_gets_the_fused_adamw(doors: Doors) -> None:
    """The worker's own choices read which fields were given: they must survive the
    store and job.json (a restored config counted every default as given, so no job
    ever got the fused kernel a plain Trainer uses)."""
    created = _create("python", Case("seed", 3, _arg("seed")), doors)
    assert created.job_id is not None
    spec = RunSpec.model_validate_json(_plan("python", created.job_id, doors).model_dump_json())
    assert "optim" not in (spec.config_fields or [])
    assert str(_seen(spec, [], doors).args.optim.value) == "adamw_torch_fused"
