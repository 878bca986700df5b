"""REST API (FastAPI): `create_app()` builds it; `flextrain serve` runs it."""
