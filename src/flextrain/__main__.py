"""`python -m flextrain`: the same as the `flextrain` command (handy where the venv's
scripts are not on PATH, e.g. a node joining a job)."""

from flextrain.entry import main

main()
