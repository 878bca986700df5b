"""The `flextrain` command line (Typer + rich)."""
