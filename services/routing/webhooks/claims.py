"""A claimed delivery: what the sender needs to send it outside any transaction, built from its row and endpoint.

Claims come two ways: leased from the table by a claim query, or handed off in memory right after the commit
that wrote them already leased (`store.take_handoffs`). Either way the lease token is the proof of ownership
the attempt's record checks.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple, Protocol

import structlog

from common.crypto import SecretKeyError
from routing.access.links import action_links
from routing.store import WebhookEndpoint
from routing.webhooks.formats import STANDARD, render
from routing.webhooks.send_store import ClaimRow, EndpointRow
from routing.webhooks.store import HandedOff

log = structlog.get_logger(__name__)

# A hand-off taken within this long of its writing transaction's read of the endpoints is sent with what that read
# found: on SQLite that read held the write lock, so nothing committed between it and the commit, and the read after
# the commit it spares would find the same unless a change committed in these few milliseconds. Later, or on
# PostgreSQL (other processes commit during the writer's transaction), the endpoints are read again.
ENDPOINTS_FRESH_S = 0.05


class Claim(NamedTuple):
    """A delivery this sender holds the lease on, with what it needs to send it outside any transaction (a named
    tuple: built for every delivery, it costs about a quarter of a frozen dataclass's field-by-field set-up)."""

    delivery_id: str
    endpoint_id: str
    message_id: str
    url: str
    payload: str  # the body to send, in the endpoint's format (signed as sent)
    secrets: tuple[str, ...]
    lease_token: str
    lease_until: datetime | None = None
    format: str = STANDARD  # a connector's name (routing.connectors) sends through its API, not a POST


class Revealer(Protocol):
    def reveal(self, stored: str) -> str: ...


class RevealedSecrets:
    """The box's `reveal`, remembered by stored value for the sender's life: an endpoint's secret is decrypted once,
    not once per hand-off batch (Fernet's HMAC check and AES, ~50 us: at e2e batches of 10-40 deliveries a
    noticeable share). A value that cannot be decrypted is never remembered (it raises every time)."""

    def __init__(self, box: Revealer) -> None:
        self._box = box
        self._clear: dict[str, str] = {}

    def reveal(self, stored: str) -> str:
        clear = self._clear.get(stored)
        if clear is None:
            clear = self._box.reveal(stored)
            if len(self._clear) >= 4096:
                self._clear.clear()
            self._clear[stored] = clear
        return clear


class ClaimBuilder:
    """Builds claims for one batch, decrypting each endpoint's signing secrets once."""

    def __init__(self, box: Revealer, now: datetime, links_base_url: str, link_keys: Sequence[bytes] = ()) -> None:
        self._box = box
        self._now = now
        self._links_base_url = links_base_url
        self._link_keys = link_keys
        self._secrets: dict[str, tuple[str, ...] | None] = {}

    def _action_links(self, lead_id: str, rep_id: str) -> list[tuple[str, str]]:
        return action_links(self._link_keys, self._links_base_url, lead_id, rep_id, self._now)

    def secrets(self, endpoint: ClaimRow | EndpointRow) -> tuple[str, ...] | None:
        """The endpoint's secrets in force, or None when they cannot be read (never sent unsigned)."""
        if endpoint.endpoint_id not in self._secrets:
            try:
                self._secrets[endpoint.endpoint_id] = signing_secrets(endpoint, self._now, self._box)
            except SecretKeyError as exc:
                log.error("webhook_secret_unreadable", endpoint_id=endpoint.endpoint_id, error=str(exc))
                self._secrets[endpoint.endpoint_id] = None
        return self._secrets[endpoint.endpoint_id]

    def claim(self, row: ClaimRow, token: str, lease_until: datetime | None) -> Claim | None:
        """The claim, or None when the endpoint's secrets cannot be read (the delivery waits for the key)."""
        return self._build(row.id, row.message_id, row.payload, row, token, lease_until)

    def handed(self, row: HandedOff, endpoint: EndpointRow) -> Claim | None:
        """The claim of a delivery handed off in memory (its body as written) and its endpoint (read once per
        batch); None as `claim`."""
        return self._build(row.id, row.message_id, row.payload, endpoint, row.lease_token, row.lease_until)

    def _build(
        self,
        delivery_id: str,
        message_id: str,
        payload: str,
        endpoint: ClaimRow | EndpointRow,
        token: str,
        lease_until: datetime | None,
    ) -> Claim | None:
        secrets = self.secrets(endpoint)
        if secrets is None:
            return None
        fmt = endpoint.format
        if fmt != STANDARD:  # a chat message or a connector's body; the standard body is sent as stored
            payload = render(
                fmt,
                payload,
                links_base_url=self._links_base_url,
                action_links=self._action_links if self._link_keys and self._links_base_url else None,
            )
        endpoint_id, url = endpoint.endpoint_id, endpoint.url
        return Claim(delivery_id, endpoint_id, message_id, url, payload, secrets, token, lease_until, fmt)


def as_written(batch: Sequence[HandedOff], changed_at: float) -> dict[str, EndpointRow] | None:
    """The batch's endpoints as their writing transactions read them, when every read is younger than
    `ENDPOINTS_FRESH_S` and than `changed_at` (this process's last commit that changed an endpoint, monotonic);
    None: they are to be read again."""
    since = max(time.monotonic() - ENDPOINTS_FRESH_S, changed_at)
    endpoints: dict[str, EndpointRow] = {}
    for row in batch:
        if row.endpoint is None or row.read_at <= since:
            return None
        endpoints[row.endpoint_id] = row.endpoint
    return endpoints


def signing_secrets(
    endpoint: ClaimRow | EndpointRow | WebhookEndpoint, now: datetime, box: Revealer
) -> tuple[str, ...]:
    """The secrets in force, decrypted: the current one, and the previous one during a rotation's overlap."""
    until = endpoint.previous_secret_until
    if endpoint.previous_secret and until is not None and until > now:
        return (box.reveal(endpoint.secret), box.reveal(endpoint.previous_secret))
    return (box.reveal(endpoint.secret),)
