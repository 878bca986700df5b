"""Compatibility namespace for code written against the AI Karen engine's API."""
