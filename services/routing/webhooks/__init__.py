"""Webhooks to sales tools, after the Standard Webhooks specification: endpoints, signed deliveries, retries, replay.

The path of a message: `enqueue_deliveries` writes one `webhook_deliveries` row per subscribed endpoint in the
transaction that writes the event (so a committed event always has its deliveries, and a rolled-back one never
does). `WebhookSender` claims due rows with a lease, POSTs them and records each attempt (`sender`). Destinations
are checked against private, loopback, link-local, multicast, reserved and cloud-metadata addresses (and must be
https in production) when registered and again on every new connection (`common.egress`, read by `address`).

The rooms: `api` (routes), `service` (use cases), `sender` and its `transport`, `store` (every query on the webhook
tables), `address` (the egress policy from settings), and the pure `signing`, `retry` and `formats` (the body for a
standard, slack or teams endpoint). The names other routing modules use are importable from the package.
"""

from routing.webhooks.address import webhook_address_policy
from routing.webhooks.sender import WebhookSender
from routing.webhooks.service import (
    enqueue_deliveries,
    normalize_event_types,
    purge_settled_deliveries,
    redact_deliveries,
    redact_resubmission_deliveries,
)
from routing.webhooks.signing import webhook_body

__all__ = [
    "WebhookSender",
    "enqueue_deliveries",
    "normalize_event_types",
    "purge_settled_deliveries",
    "redact_deliveries",
    "redact_resubmission_deliveries",
    "webhook_address_policy",
    "webhook_body",
]
