"""Start-up: what `import flextrain`, `flextrain --help` and `flextrain jobs list` load.

Each check runs in a fresh interpreter and looks at `sys.modules` afterwards,
so it states behaviour, not a time: the front ends must not import the
training stack (torch, transformers, datasets, peft, accelerate), the plotting
and tracking libraries, pandas/pyarrow or the FastAPI app. Those imports take
seconds; `benchmarks/startup.py` measures what is left. (tests/test_layering.py
checks the same direction module by module, with torch blocked.)
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import typer.core
import typer.main

import flextrain
from flextrain.main import app
from flextrain.settings import Settings

HEAVY = (
    "torch",
    "transformers",
    "datasets",
    "peft",
    "accelerate",
    "matplotlib",
    "mlflow",
    "pandas",
    "pyarrow",
    "fastapi",
    "starlette",
)

# Runs in a fresh interpreter: the CLI as its console script does (or only
# `import flextrain`), then reports the exit code and the modules loaded.
_PROBE = textwrap.dedent(
    """
    import json, runpy, sys

    argv, report = json.loads(sys.argv[1]), sys.argv[2]
    code = 0
    if argv is None:
        import flextrain
    else:
        sys.argv = ["flextrain", *argv]
        try:
            runpy.run_module("flextrain.main", run_name="__main__")
        except SystemExit as exc:
            code = exc.code
    with open(report, "w") as out:
        json.dump({"code": code, "modules": sorted(sys.modules)}, out)
    """
)


def _probe(argv: list[str] | None, tmp_path: Path, env: dict[str, str]) -> dict[str, Any]:
    report = tmp_path / f"modules-{len(list(tmp_path.glob('modules-*')))}.json"
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(argv), str(report)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(report.read_text())
    result["stdout"] = done.stdout
    return result


# `flextrain serve` is the API's command (added to the CLI by flextrain.main): its module
# is light (typer, rich); the app, its routes and FastAPI load only when it runs.
LIGHT_API = {"flextrain.api", "flextrain.api.serve"}


def _heavy(modules: list[str]) -> list[str]:
    return sorted(
        {m.split(".")[0] for m in modules if m.split(".")[0] in HEAVY}
        | {m for m in modules if m.startswith("flextrain.api.") and m not in LIGHT_API}
    )


@pytest.fixture
def cli_env(settings: Settings) -> dict[str, str]:
    env = {
        **os.environ,
        "FLEXTRAIN_HOME": str(settings.home),
        "FLEXTRAIN_DATABASE_URL": settings.resolved_database_url,
        "FLEXTRAIN_MODELS_CACHE": str(settings.models_cache),
        "COLUMNS": "200",
    }
    return env


def test_import_flextrain_loads_no_submodule(tmp_path: Path, cli_env: dict[str, str]) -> None:
    """The public names are loaded on first use; importing the package loads none."""
    loaded = _probe(None, tmp_path, cli_env)["modules"]
    assert _heavy(loaded) == []
    assert [m for m in loaded if m.startswith("flextrain.")] == []
    assert "sqlalchemy" not in loaded
    assert "pydantic" not in loaded


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["jobs", "--help"], ["datasets", "--help"], ["users", "--help"]],
    ids=" ".join,
)
def test_cli_help_stays_off_heavy_libraries(
    argv: list[str], tmp_path: Path, cli_env: dict[str, str]
) -> None:
    result = _probe(argv, tmp_path, cli_env)
    assert result["code"] == 0, result["stdout"]
    assert _heavy(result["modules"]) == []
    # --help runs no command: neither the database nor the service is touched.
    assert "sqlalchemy" not in result["modules"]
    assert "flextrain.service" not in result["modules"]


def test_cli_help_still_lists_every_command(tmp_path: Path, cli_env: dict[str, str]) -> None:
    group = typer.main.get_command(app)
    assert isinstance(group, typer.core.TyperGroup)
    names = set(group.commands)
    assert {"train", "check", "jobs", "datasets", "users", "audit", "serve"} <= names
    shown = _probe(["--help"], tmp_path, cli_env)["stdout"]
    assert [n for n in sorted(names) if n not in shown] == []
    jobs = group.commands["jobs"]
    assert isinstance(jobs, typer.core.TyperGroup)
    shown = _probe(["jobs", "--help"], tmp_path, cli_env)["stdout"]
    assert [n for n in sorted(jobs.commands) if n not in shown] == []


def test_jobs_list_stays_off_heavy_libraries(tmp_path: Path, cli_env: dict[str, str]) -> None:
    first = _probe(["jobs", "list"], tmp_path, cli_env)
    assert first["code"] == 0, first["stdout"]
    assert "Training jobs" in first["stdout"]
    assert _heavy(first["modules"]) == []
    # Once the database is at the head revision, opening it needs no Alembic.
    again = _probe(["jobs", "list", "--json"], tmp_path, cli_env)
    assert again["code"] == 0, again["stdout"]
    assert json.loads(again["stdout"]) == []
    assert _heavy(again["modules"]) == []
    assert "alembic" not in again["modules"]


def test_every_public_name_resolves_to_its_defining_object() -> None:
    """`from flextrain import X` works for every name of the public API."""
    namespace: dict[str, Any] = {}
    exec("from flextrain import *", namespace)
    exported = set(flextrain.__all__)
    assert exported <= set(namespace)
    assert exported <= set(dir(flextrain))
    for name in flextrain.__all__:
        module = sys.modules[flextrain._EXPORTS[name]]
        assert getattr(flextrain, name) is getattr(module, name), name
    with pytest.raises(AttributeError, match="no attribute 'NoSuchThing'"):
        _ = flextrain.NoSuchThing


def test_lazy_table_matches_the_imports_type_checkers_see() -> None:
    """`_EXPORTS` (used at run time) and the TYPE_CHECKING imports (seen by mypy and
    editors) name the same objects from the same modules, and __all__ lists them."""
    tree = ast.parse(Path(flextrain.__file__).read_text())
    block = next(
        node
        for node in tree.body
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING"
    )
    seen = {
        alias.asname or alias.name: node.module
        for node in block.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert seen == flextrain._EXPORTS
    assert sorted(flextrain.__all__) == sorted(seen)


def test_a_second_job_of_a_model_is_created_without_the_training_libraries(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    """The model's facts (built on the meta device, which needs torch and transformers)
    are kept in the home: the next job of that model is created without importing them."""
    argv = [
        "train",
        *("--model", "flextrain/tiny-bert", "--dataset", "demo/sentiment", "--type", "lora"),
        *("--max-length", "32", "--no-start"),
    ]
    # The first inspects the model, so it loads torch (and then ends without unloading
    # it: no report from the probe; see test_a_command_that_loaded_torch_ends_...).
    first = subprocess.run(
        [sys.executable, "-m", "flextrain", *argv],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert first.returncode == 0, first.stderr
    assert list((Path(cli_env["FLEXTRAIN_HOME"]) / "cache" / "model-info").glob("*.json"))
    second = _probe(argv, tmp_path, cli_env)
    assert second["code"] == 0, second["stdout"]
    assert "created" in second["stdout"]
    assert _heavy(second["modules"]) == []


def test_a_command_that_loaded_torch_ends_with_its_status_and_all_its_output(
    cli_env: dict[str, str],
) -> None:
    """Such a command skips unloading torch at exit (seconds), never its output or code."""
    argv = ["train", "--model", "flextrain/tiny-bert", "--dataset", "demo/sentiment"]
    bad = [*argv, "--type", "lora", "--max-length", "100000", "--learning-rate", "5"]
    done = subprocess.run(
        [sys.executable, "-m", "flextrain", *bad],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "learning_rate: 5.0 is outside" in done.stderr
    assert done.stderr.rstrip().endswith("or less.")  # the last issue, whole
    ok = subprocess.run(
        [sys.executable, "-m", "flextrain", "check", "flextrain/tiny-bert", "--json"],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["is_compatible"] is True
