"""What one delivery attempt came to, kept apart from the HTTP client (aiohttp) so that the recorder, the connectors
and the start-up path name it without importing aiohttp, which the sender loads when it first sends."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from routing.webhooks.claims import Claim


@dataclass(frozen=True)
class AttemptOutcome:
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

    def attempt_row(self, claim: Claim, started_at: datetime) -> dict[str, Any]:
        """The attempt's columns for the record (but its number, which the store counts), with its endpoint."""
        return {
            "delivery_id": claim.delivery_id,
            "endpoint_id": claim.endpoint_id,
            "started_at": started_at,
            "signed_at": self.signed_at,
            "result": self.result,
            "status_code": self.status_code,
            "latency_ms": round(self.latency_s * 1000, 3),
            "error": self.error,
            "response_body": self.response_body,
        }
