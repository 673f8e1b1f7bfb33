"""What one delivery attempt came to, kept apart from the HTTP client (aiohttp) so that the recorder, the connectors
and the start-up path name it without importing aiohttp, which the sender loads when it first sends."""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple


class AttemptOutcome(NamedTuple):
    """One attempt's answer (a named tuple: one is built per attempt, about a quarter of a frozen dataclass's cost)."""

    result: str  # success | http_error | timeout | network_error | refused | error
    status_code: int | None = None
    latency_s: float = 0.0
    signed_at: int = 0
    error: str | None = None
    response_body: str | None = None
    retry_after_s: float | None = None

    @property
    def success(self) -> bool:
        return self.result == "success"

    def success_row(self, delivery_id: str, token: str, now: datetime, started_at: datetime) -> tuple[Any, ...]:
        """A success's columns for the record, in `send_store.SUCCESS_ROW` order (its number the store counts)."""
        return (
            delivery_id,
            token,
            now,
            started_at,
            self.status_code,
            self.signed_at,
            self.result,
            round(self.latency_s * 1000, 3),
            self.error,
            self.response_body,
        )
