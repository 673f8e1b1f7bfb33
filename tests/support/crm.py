"""What the CRM end-to-end tests check the same way for every CRM: a lead's routing record, and that an activity
logged in the CRM stopped the clock and shows as touched on the ops views."""

from __future__ import annotations

from typing import Any

import httpx

from tests.support.stack import ADMIN, Stack, routed, wait_until


def routing_record(client: httpx.Client, stack: Stack, lead_id: str) -> dict[str, Any]:
    return routed(client, stack["routing"], [lead_id]).get(lead_id, {})


def wait_touched_on_ops(client: httpx.Client, stack: Stack, lead_id: str, what: str) -> dict[str, Any]:
    """Waits until the lead is touched; then the SLA summary counts it and the board no longer lists it as open,
    with no delivery failing. Returns the touched record."""
    touched: dict[str, Any] = wait_until(
        lambda: (r := routing_record(client, stack, lead_id)).get("status") == "touched" and r,
        timeout=15,
        interval=0.2,
        what=what,
    )
    assert touched["time_to_first_touch"]["seconds"] is not None
    summary = client.get(f"{stack['routing'].url}/v1/sla/summary", headers=ADMIN)
    assert summary.status_code == 200, summary.text
    assert summary.json()["overall"]["touched"] == 1
    board = client.get(f"{stack['routing'].url}/v1/ops/board", headers=ADMIN).json()
    assert lead_id not in [c["lead_id"] for c in board["open"]]
    assert not board["webhook_failures"]
    return touched
