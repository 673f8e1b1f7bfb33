"""The one HTTP client a sender shares (aiohttp: about a tenth of httpx's CPU per request here), its egress guard,
one signed attempt and the capped read of what a receiver answers.

The guard lives where connections are made: a resolver given to the connector checks every address a host name
resolves to on every new connection (no DNS cache, so a rebound name is judged again), and an IP-literal URL,
which never reaches a resolver, is checked before the request. Redirects are never followed and no proxy is taken
from the environment (a proxy would connect on our behalf and skip the check).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import Callable
from datetime import datetime

import aiohttp
import structlog
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from common.egress import (
    DNS_TIMEOUT_S,
    AddressPolicy,
    Resolver,
    UnsafeUrl,
    address_refusal,
    refuse_addresses,
    system_resolver,
)
from routing.settings import RoutingSettings
from routing.webhooks.claims import Claim
from routing.webhooks.outcome import AttemptOutcome
from routing.webhooks.retry import parse_retry_after
from routing.webhooks.signing import signature_header

log = structlog.get_logger(__name__)


class GuardedResolver(AbstractResolver):
    """Resolves through `resolver` and refuses the name unless every address is allowed by the policy."""

    def __init__(self, policy: AddressPolicy, resolver: Resolver = system_resolver) -> None:
        self._policy = policy
        self._resolver = resolver

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        addresses = await asyncio.wait_for(self._resolver(host, port), DNS_TIMEOUT_S)
        refuse_addresses(host, addresses, self._policy)  # UnsafeUrl passes through aiohttp untouched
        return [
            {
                "hostname": host,
                "host": address,
                "port": port,
                "family": socket.AF_INET6 if ":" in address else socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
            for address in addresses
        ]

    async def close(self) -> None:
        return None


def checked_url(url: str, policy: AddressPolicy) -> URL:
    """The stored (normalized) URL, parsed as sent and checked (a refusal raises `UnsafeUrl`)."""
    parsed = URL(url, encoded=True)
    check_destination(parsed, policy)
    return parsed


def check_destination(url: URL, policy: AddressPolicy) -> None:
    """Refuse before sending: plain http when https is required, an IP literal the policy does not allow."""
    if policy.require_https and url.scheme != "https":
        raise UnsafeUrl("only https URLs are accepted in production")
    host = url.raw_host or ""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return  # a name: the resolver judges what it resolves to
    reason = address_refusal(address, policy)
    if reason:
        raise UnsafeUrl(f"{host} is a {reason} address")


def new_http_session(
    settings: RoutingSettings, policy: AddressPolicy, resolver: Resolver = system_resolver
) -> aiohttp.ClientSession:
    """The one session a sender shares across deliveries; built inside the running loop."""
    connector = aiohttp.TCPConnector(
        resolver=GuardedResolver(policy, resolver),
        use_dns_cache=False,  # every new connection resolves and is judged again (rebinding)
        limit=settings.webhook_concurrency * 2,
        limit_per_host=settings.webhook_endpoint_concurrency,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=settings.webhook_timeout_s),
        trust_env=False,
        auto_decompress=False,
        headers={"user-agent": settings.webhook_user_agent},
    )


async def read_capped(response: aiohttp.ClientResponse, cap: int) -> str | None:
    """At most `cap` bytes of the answer, as text (None when nothing is kept): a receiver cannot fill the log."""
    if cap <= 0:
        return None
    content = response.content
    received = await content.read(cap)  # a small answer is in whole already: one read, no empty read after it
    while len(received) < cap and not content.at_eof():
        chunk = await content.read(cap - len(received))
        if not chunk:
            break
        received += chunk
    # The rest is never read: releasing an unread response closes its connection instead of reusing it.
    return received.decode("utf-8", "replace")


class SignedPoster:
    """One signed POST per call, on the sender's session, with what is the same for every attempt set up once.

    aiohttp's total timeout (the session's) covers connecting, sending and the capped read of the answer, so no
    second timer is wrapped around it. Parsed and checked URLs are kept by URL; a refusal is never kept (judged
    again next time) and every new connection is judged again by the resolver (rebinding).
    """

    def __init__(
        self,
        client: aiohttp.ClientSession,
        policy: AddressPolicy,
        *,
        timeout_s: float,
        cap: int,
        wall_clock: Callable[[], datetime],
    ) -> None:
        self.client = client
        self._policy = policy
        self._timeout_s = timeout_s
        self._cap = cap
        self._wall_clock = wall_clock
        self._urls: dict[str, URL] = {}

    def _url(self, url: str) -> URL:
        parsed = self._urls.get(url)
        if parsed is None:
            parsed = checked_url(url, self._policy)  # an IP literal never reaches the resolver
            if len(self._urls) >= 4096:
                self._urls.clear()
            self._urls[url] = parsed
        return parsed

    async def post(self, claim: Claim) -> AttemptOutcome:
        """One signed POST; only a 2xx within the timeout is a success, redirects are not followed."""
        body = claim.payload.encode()
        signed_at = int(self._wall_clock().timestamp())
        headers = {
            "content-type": "application/json",
            "accept-encoding": "identity",  # the body read is capped on the wire; no compressed surprises
            "webhook-id": claim.message_id,
            "webhook-timestamp": str(signed_at),
            "webhook-signature": signature_header(claim.secrets, claim.message_id, signed_at, body),
        }
        started = time.perf_counter()
        status: int | None = None
        error: str | None
        retry_after: float | None = None
        response_body: str | None = None
        try:
            async with self.client.post(
                self._url(claim.url), data=body, headers=headers, allow_redirects=False
            ) as response:
                status = response.status
                retry_at = response.headers.get("retry-after")
                if retry_at is not None:
                    retry_after = parse_retry_after(retry_at, self._wall_clock())
                response_body = await read_capped(response, self._cap)
        except TimeoutError:  # aiohttp's own timeouts are TimeoutErrors too
            result, error = "timeout", f"no complete answer within {self._timeout_s:g} s"
        except UnsafeUrl as exc:
            result, error = "refused", str(exc)
        except aiohttp.ClientError as exc:
            result, error = "network_error", f"{type(exc).__name__}: {exc}"[:500]
        except Exception as exc:
            log.exception("webhook_attempt_error", delivery_id=claim.delivery_id)
            result, error = "error", f"{type(exc).__name__}: {exc}"[:500]
        else:
            ok = status is not None and 200 <= status < 300
            result = "success" if ok else "http_error"
            error = None if ok else f"HTTP {status}"
        latency_s = time.perf_counter() - started
        return AttemptOutcome(result, status, latency_s, signed_at, error, response_body, retry_after)
