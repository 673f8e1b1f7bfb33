"""Handoff ingest service."""
