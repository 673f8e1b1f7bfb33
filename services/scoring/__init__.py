"""Handoff scoring service."""
