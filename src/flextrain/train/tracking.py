"""Optional experiment tracking through transformers' own MLflow and TensorBoard callbacks.

flextrain does not log metrics itself: transformers' `MLflowCallback` and
`TensorBoardCallback` do, switched on by TrainingArguments `report_to` and
configured by environment variables they read when training starts
(MLFLOW_TRACKING_URI, MLFLOW_EXPERIMENT_NAME, MLFLOW_TAGS,
TENSORBOARD_LOGGING_DIR; the MLflow run is named after TrainingArguments
`run_name`). `configure_tracking` decides both from the run spec as a pure
function, so the runner only applies them before it builds the Trainer.

Two things the callbacks leave undone are done here:

- `MLflowCallback` ends its run when training ends, and `trainer.evaluate()`
  afterwards would then log into a new, unnamed run. `mlflow_run` holds one
  run open around training, evaluation and saving (the callback logs into an
  active run and leaves it open), and marks it FAILED if training raises.
- HF_MLFLOW_LOG_ARTIFACTS only logs checkpoints, as pyfunc models on every
  save, never the final model; it stays off and `log_final_model` copies the
  saved model folder into the run once.

Both packages are optional (`pip install 'flextrain[tracking]'`) and imported
only when a run asks for them.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from flextrain.jobs.spec import RunSpec

if TYPE_CHECKING:
    from mlflow import MlflowClient

# The import names each tracker needs; TensorBoardCallback writes with
# torch.utils.tensorboard (which needs `tensorboard`) and falls back to tensorboardX.
TRACKER_PACKAGES: dict[str, tuple[str, ...]] = {
    "mlflow": ("mlflow",),
    "tensorboard": ("tensorboard", "tensorboardX"),
}
EXPERIMENT_NAME = "flextrain"
MLFLOW_DB_FILE = "mlflow.db"
# Artifacts of the default store, beside its database (the client-side default is ./mlruns
# under the worker's working directory, which is wherever the service was started).
MLFLOW_ARTIFACTS_DIR = "mlartifacts"
TENSORBOARD_DIR = "tensorboard"
MODEL_ARTIFACT_PATH = "model"


def missing_tracking_packages(names: Iterable[str]) -> list[str]:
    """The trackers among `names` whose package is not installed, in order, once each.

    Looks for the package with `importlib.util.find_spec`, which imports nothing.
    """
    return [
        name
        for name in dict.fromkeys(names)
        if not any(importlib.util.find_spec(pkg) for pkg in TRACKER_PACKAGES.get(name, (name,)))
    ]


def default_tracking_uri(folder: Path) -> str:
    """The local MLflow store in `folder`: a SQLite database, no server needed.

    Not the `file://.../mlruns` store: since MLflow 3.7 SQLite is the default
    backend, the file store is in maintenance mode, and MLflow 3.10+ refuses to
    open it unless MLFLOW_ALLOW_FILE_STORE=true is set. The SQLite store needs
    SQLAlchemy and Alembic, which mlflow-skinny does not install but flextrain
    already depends on; it creates its tables on first use (a second or two).
    """
    return f"sqlite:///{(folder / MLFLOW_DB_FILE).resolve()}"


def run_tags(spec: RunSpec) -> dict[str, str]:
    """What ties an MLflow run to its flextrain job, searchable as `tags.flextrain.*`."""
    cfg = spec.config
    tags = {
        "flextrain.job_id": spec.job_id,
        "flextrain.training_type": cfg.training_type.value,
        "flextrain.model_id": cfg.model_id,
        "flextrain.dataset_id": cfg.dataset_id,
        "flextrain.objective": spec.objective,
    }
    if spec.data.version:
        tags["flextrain.dataset_version"] = spec.data.version
    return tags


def configure_tracking(
    spec: RunSpec, home: Path | None, environ: Mapping[str, str] | None = None
) -> tuple[list[str], dict[str, str]]:
    """`report_to` for TrainingArguments and the environment to set before the Trainer is built.

    MLflow is used when the config asks for it, or when MLFLOW_TRACKING_URI is
    set (a shared server the user points every run at) and mlflow is installed.
    The store is that URI, else a SQLite file in the flextrain `home` (the
    job's output folder when `home` is None). A MLFLOW_EXPERIMENT_NAME already
    set is kept; otherwise runs go to the "flextrain" experiment. TensorBoard
    event files go to `<output_dir>/tensorboard`. `environ` defaults to
    os.environ; an empty `report_to` means no tracking (pass "none").
    """
    environ = os.environ if environ is None else environ
    requested: set[str] = set(spec.config.tracking)
    user_uri = environ.get("MLFLOW_TRACKING_URI")
    if user_uri and not missing_tracking_packages(["mlflow"]):
        requested.add("mlflow")
    report_to = [name for name in TRACKER_PACKAGES if name in requested]

    env: dict[str, str] = {}
    if "mlflow" in report_to:
        store_folder = home if home is not None else Path(spec.output_dir)
        env["MLFLOW_TRACKING_URI"] = user_uri or default_tracking_uri(store_folder)
        env["MLFLOW_EXPERIMENT_NAME"] = environ.get("MLFLOW_EXPERIMENT_NAME") or EXPERIMENT_NAME
        env["MLFLOW_TAGS"] = json.dumps(run_tags(spec), sort_keys=True)
    if "tensorboard" in report_to:
        env["TENSORBOARD_LOGGING_DIR"] = str(Path(spec.output_dir) / TENSORBOARD_DIR)
    return report_to, env


@contextmanager
def mlflow_run(
    report_to: Sequence[str], env: Mapping[str, str], *, run_name: str
) -> Iterator[str | None]:
    """Hold one MLflow run open for the block; yields its id (None without MLflow).

    Call it with configure_tracking's `env` already in os.environ: the fluent
    API opens the run in the store MLFLOW_TRACKING_URI names, as the callback
    expects. Pass the same `run_name` as TrainingArguments. The run ends
    FINISHED, or FAILED when the block raises.
    """
    if "mlflow" not in report_to:
        yield None
        return
    import mlflow

    uri = env["MLFLOW_TRACKING_URI"]
    if os.environ.get("MLFLOW_TRACKING_URI") != uri:
        raise RuntimeError("Set configure_tracking's environment before opening the MLflow run.")
    experiment_id = _experiment_id(mlflow.MlflowClient(uri), env["MLFLOW_EXPERIMENT_NAME"], uri)
    tags = json.loads(env.get("MLFLOW_TAGS", "{}"))
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags) as run:
        yield run.info.run_id


def log_final_model(run_id: str | None, model_dir: Path) -> None:
    """Copy the saved model folder into run `run_id` as the artifact `model/`.

    Call it inside `mlflow_run` once the model is saved; a None run id (no
    MLflow) does nothing.
    """
    if run_id is None:
        return
    import mlflow

    mlflow.MlflowClient().log_artifacts(run_id, str(model_dir), artifact_path=MODEL_ARTIFACT_PATH)


def _experiment_id(client: MlflowClient, name: str, uri: str) -> str:
    """The id of experiment `name`, created on first use (artifacts beside a SQLite store)."""
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    try:
        return str(client.create_experiment(name, artifact_location=_artifact_location(uri)))
    except MlflowException:
        # Another worker created it in the meantime.
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return str(found.experiment_id)


def _artifact_location(uri: str) -> str | None:
    """`mlartifacts/` beside a local SQLite database; None lets the store decide."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return None
    return (Path(uri[len(prefix) :]).resolve().parent / MLFLOW_ARTIFACTS_DIR).as_uri()
