"""Model resolution (local folder, built-ins, hub), inspection and compatibility."""
