"""Dataset registry and readers."""
