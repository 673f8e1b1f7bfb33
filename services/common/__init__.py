"""Shared plumbing: event envelope, outbox relay, consumer loop, database and logging setup."""
