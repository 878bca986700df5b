"""The `flextrain` command: every CLI command, and `serve`, which runs the REST API.

Composed here, above both front ends, so that the CLI never imports the API nor the
API the CLI (the layering contracts in pyproject.toml hold them apart).
"""

from __future__ import annotations

from flextrain.api.serve import serve
from flextrain.cli.main import app

app.command()(serve)

if __name__ == "__main__":  # python -m flextrain.main
    app(prog_name="flextrain")
