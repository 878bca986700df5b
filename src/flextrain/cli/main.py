"""`flextrain` commands. Thin: parse, call the service, print.

Every known error (bad config, unknown model or dataset, wrong job state) is
printed as a message naming the problem and the fix, with exit code 2 for bad
input and 1 for a failed job; no traceback reaches the user.

The service, the store, the data layer and the estimators are imported when a
command runs: `flextrain --help` (and Typer's shell completion) builds every
command but runs none; tests/test_startup.py checks what it loads. Only the
config enums are needed up front (option types, type aliases); importing them
runs `flextrain.config`'s `__init__`, which also loads the pydantic schemas,
the larger part of what `--help` still imports.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from flextrain.cli.admin import audit, users_app
from flextrain.cli.check import check, hardware
from flextrain.cli.common import (
    end_without_teardown,
)
from flextrain.cli.datasets import datasets_app
from flextrain.cli.jobs import jobs_app
from flextrain.cli.models import models_app
from flextrain.cli.models_after import evaluate, try_model
from flextrain.cli.queue import queue, scheduler
from flextrain.cli.train import build_config, demo, parse_training_type, train
from flextrain.cli.worker import worker_app

if TYPE_CHECKING:
    pass


class _ProcessApp(typer.Typer):
    """The `flextrain` command. Run as a process's entry point (console script, `python
    -m flextrain`), it ends that process without unloading the training libraries
    (`end_without_teardown`); tests invoke its click command and never get here."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except SystemExit as exc:
            end_without_teardown(exc)
            raise


app = _ProcessApp(
    name="flextrain",
    help="Check, estimate and really train Hugging Face models on your own hardware.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(jobs_app, name="jobs")
app.add_typer(datasets_app, name="datasets")
app.add_typer(users_app, name="users")
app.add_typer(worker_app, name="worker")
app.add_typer(models_app, name="models")
app.command()(hardware)
app.command()(train)
app.command()(demo)
app.command()(check)
app.command("audit")(audit)
app.command("try")(try_model)
app.command("evaluate")(evaluate)
app.command()(queue)
app.command()(scheduler)


def main() -> None:  # pragma: no cover - console-script shim
    app()


__all__ = ["app", "build_config", "main", "parse_training_type"]


if __name__ == "__main__":  # python -m flextrain.cli.main
    main()
