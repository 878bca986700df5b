"""`flextrain models ...`: find, pull, register, merge and export models.

The group is assembled here; each command lives beside the service it calls
(hub search and downloads, the local registry, what comes after training), so
that one import of this module stays cheap for `flextrain --help`.
"""

from __future__ import annotations

import typer

models_app = typer.Typer(
    help="Find and pull models, register local folders, merge and export trained ones.",
    no_args_is_help=True,
)

# Commands are registered below, one block per module:
# -- hub (search, pull) --
from flextrain.cli import models_hub  # noqa: E402

models_app.command("search")(models_hub.search)
models_app.command("pull")(models_hub.pull)
# -- registry (add, list, show, remove) --
from flextrain.cli.models_registry import add_registry_commands  # noqa: E402

add_registry_commands(models_app)

# -- after training (merge, export) --
from flextrain.cli import models_after  # noqa: E402

models_app.command("merge")(models_after.merge)
models_app.command("export")(models_after.export)
models_app.command("verify")(models_after.verify)
