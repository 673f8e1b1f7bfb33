"""Helpers shared by the test suites: real processes (stack) and the event contracts (contracts)."""
