"""The ingest baseline: a bare FastAPI endpoint with ingest's request model and a pre-built 202."""
