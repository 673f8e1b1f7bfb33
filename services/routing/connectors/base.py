"""What a connector is: a delivery target that is an API, not a webhook receiver (HubSpot, Salesforce, email).

A webhook endpoint whose `format` names a connector keeps the whole delivery machinery (rows written with the
event, leases, retries with Retry-After, replay, failures on /ops); only the attempt differs: the sender hands the
claim to the connector's `deliver` instead of POSTing it. The claim's payload is the stored Standard Webhooks body
(`{"type", "timestamp", "data"}`), never rendered for chat.

Connectors are named here as "module:attribute" and imported on first use, so the webhooks package (which the
sender lives in) and the connector modules (which use its transport types) never import each other at load time.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from common.egress import Resolver, system_resolver

if TYPE_CHECKING:
    from common.db import Database
    from routing.settings import RoutingSettings
    from routing.webhooks.claims import Claim
    from routing.webhooks.outcome import AttemptOutcome


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Connector(Protocol):
    """Sends one claimed delivery to an API; never raises for the API's own failures (they are outcomes)."""

    async def deliver(self, claim: Claim) -> AttemptOutcome: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class ConnectorDeps:
    """What a connector is built with: the sender's database, settings, clock and resolver (tests inject them)."""

    db: Database
    settings: RoutingSettings
    clock: Callable[[], datetime] = _utcnow
    resolver: Resolver = system_resolver


ConnectorFactory = Callable[[ConnectorDeps], Connector]


class ConnectorRegistry:
    """Endpoint formats that name a connector, each with the factory that builds it ("module:attribute")."""

    def __init__(self, factories: Mapping[str, str]) -> None:
        self._factories = dict(factories)

    def __contains__(self, fmt: object) -> bool:
        return fmt in self._factories

    @property
    def formats(self) -> tuple[str, ...]:
        return tuple(self._factories)

    def register(self, fmt: str, factory: str) -> None:
        """Name a connector for `fmt` (tests and plug-ins; the shipped ones are listed in the package)."""
        self._factories[fmt] = factory

    def build(self, fmt: str, deps: ConnectorDeps) -> Connector:
        """The connector for `fmt`, built once per sender; KeyError for a format that is not a connector."""
        module_name, _, attribute = self._factories[fmt].partition(":")
        factory: Any = getattr(importlib.import_module(module_name), attribute)
        connector: Connector = factory(deps)
        return connector


def connector_outcome(
    result: str,
    *,
    status_code: int | None = None,
    latency_s: float = 0.0,
    error: str | None = None,
    response_body: str | None = None,
    retry_after_s: float | None = None,
    signed_at: int = 0,
) -> AttemptOutcome:
    """An attempt's outcome as the sender records it (result: success | http_error | timeout | network_error |
    refused | error); a connector's errors never carry a token or a person's data."""
    from routing.webhooks.outcome import AttemptOutcome

    return AttemptOutcome(
        result=result,
        status_code=status_code,
        latency_s=latency_s,
        signed_at=signed_at,
        error=error[:500] if error else None,
        response_body=response_body,
        retry_after_s=retry_after_s,
    )


class ConnectorPool:
    """The connectors one sender uses, each built on its first claim and closed with the sender."""

    def __init__(self, registry: ConnectorRegistry, deps: ConnectorDeps) -> None:
        self._registry = registry
        self._deps = deps
        self._built: dict[str, Connector] = {}

    def handles(self, fmt: str) -> bool:
        return fmt in self._registry

    async def deliver(self, claim: Claim) -> AttemptOutcome:
        connector = self._built.get(claim.format)
        if connector is None:
            connector = self._built[claim.format] = self._registry.build(claim.format, self._deps)
        return await connector.deliver(claim)

    async def close(self) -> None:
        built, self._built = self._built, {}
        for connector in built.values():
            await connector.close()
