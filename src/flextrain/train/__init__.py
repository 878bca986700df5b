"""The training worker: the only package that imports torch at module level."""
