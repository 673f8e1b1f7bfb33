"""Handoff routing service."""
