"""Where outbound HTTP may go: the one address policy for webhooks (routing) and platform API calls (ingest).

A URL an admin types (a webhook endpoint, a source's `graph_base_url`) must not reach the services' own network:
private, loopback, link-local, multicast, reserved and cloud-metadata addresses are refused unless allow-listed,
and production accepts only https. URLs are checked when stored and again on every new connection: the check runs
inside the HTTP client's connect step on the very addresses it connects to, so a DNS answer that changes after
the URL was stored (rebinding) cannot slip through.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_URL_LENGTH = 2048
DNS_TIMEOUT_S = 5.0

# Cloud instance-metadata services: refused even when private ranges are allowed, unless a CIDR names them.
METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean
        "fd00:ec2::254",  # AWS over IPv6
        "169.254.170.2",  # AWS ECS task metadata
        "100.100.100.200",  # Alibaba Cloud
        "168.63.129.16",  # Azure wire server (a public address)
    )
)
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class UnsafeUrl(ValueError):
    """A URL that must not be called (scheme, syntax or the addresses it resolves to)."""


@dataclass(frozen=True)
class AddressPolicy:
    """Which otherwise refused addresses are allowed (loopback, listed networks and host names); https only?"""

    allow_loopback: bool = False
    allowed_networks: tuple[IPNetwork, ...] = ()
    allowed_hosts: frozenset[str] = frozenset()
    require_https: bool = False

    @classmethod
    def from_allow_list(
        cls, *, allow_loopback: bool, allow_private_hosts: Iterable[str], require_https: bool = False
    ) -> AddressPolicy:
        """A policy from settings: each allow-list entry is a CIDR or else a host name."""
        networks: list[IPNetwork] = []
        hosts: set[str] = set()
        for entry in allow_private_hosts:
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                hosts.add(entry.lower().rstrip("."))
        return cls(allow_loopback, tuple(networks), frozenset(hosts), require_https)


def check_allow_list(setting: str, entries: Iterable[str]) -> None:
    """Raise ValueError naming the setting when an entry that looks like an address is not a valid CIDR."""
    for entry in entries:
        if "/" in entry or entry.replace(".", "").isdigit() or ":" in entry:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError as exc:
                raise ValueError(f"{setting}: {entry!r} is not a CIDR") from exc


def address_refusal(address: str | IPAddress, policy: AddressPolicy, *, host: str = "") -> str | None:
    """Why this address must not be called (e.g. "loopback"), or None when it may."""
    ip = ipaddress.ip_address(address.split("%", 1)[0] if isinstance(address, str) else address)
    if isinstance(ip, ipaddress.IPv6Address):
        # IPv6 forms that carry an IPv4 address are judged by it: ::ffff:127.0.0.1 is 127.0.0.1, and NAT64 or
        # 6to4 gateways would forward 64:ff9b::a00:1 or 2002:a00:1:: to 10.0.0.1.
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif ip in _NAT64:
            ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        elif ip.sixtofour is not None:
            ip = ip.sixtofour
    if any(ip in net for net in policy.allowed_networks):
        return None
    if ip in METADATA_ADDRESSES:
        return "metadata"
    if ip.is_unspecified or (isinstance(ip, ipaddress.IPv4Address) and ip in _THIS_NETWORK):
        return "unspecified"  # 0.0.0.0 reaches the local host on Linux
    if ip.is_loopback:
        return None if policy.allow_loopback else "loopback"
    if host and host.lower().rstrip(".") in policy.allowed_hosts:
        return None
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if ip.is_reserved:
        return "reserved"
    if ip.is_private:
        return "private"
    if not ip.is_global:
        return "non-public"
    return None


@dataclass(frozen=True)
class Destination:
    """A syntactically acceptable URL, with the host (IDNA ASCII) and port it connects to."""

    url: str
    host: str
    port: int


def parse_url(url: str, *, require_https: bool = False) -> Destination:
    """Only absolute http(s) URLs (https when required) with a host and no credentials; raises UnsafeUrl."""
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeUrl(f"the URL is longer than {MAX_URL_LENGTH} characters")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError) as exc:
        raise UnsafeUrl(f"not a valid URL: {exc}") from exc
    if parsed.scheme not in ("http", "https"):
        raise UnsafeUrl("only http and https URLs are accepted")
    if require_https and parsed.scheme != "https":
        raise UnsafeUrl("only https URLs are accepted in production")
    host = parsed.raw_host.decode("ascii").lower()
    if not host:
        raise UnsafeUrl("the URL has no host")
    if parsed.userinfo:
        raise UnsafeUrl("credentials in the URL are not supported; put a token in the path or query instead")
    return Destination(url=str(parsed), host=host, port=parsed.port or (443 if parsed.scheme == "https" else 80))


def refuse_addresses(host: str, addresses: Iterable[str], policy: AddressPolicy) -> None:
    """Raise UnsafeUrl unless every address the host resolves to is allowed (a mixed answer is refused)."""
    addresses = list(addresses)
    if not addresses:
        raise UnsafeUrl(f"{host} does not resolve to any address")
    for address in addresses:
        reason = address_refusal(address, policy, host=host)
        if reason:
            raise UnsafeUrl(f"{host} resolves to a {reason} address ({address})")


# -- resolving and connecting ------------------------------------------------------------------------------

Resolver = Callable[[str, int], Awaitable[list[str]]]


async def system_resolver(host: str, port: int) -> list[str]:
    """The host's addresses from the system resolver."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def _addresses(resolver: Resolver, host: str, port: int) -> list[str]:
    try:
        return [str(ipaddress.ip_address(host))]  # an IP literal is its own answer
    except ValueError:
        return await resolver(host, port)


async def vet_url(url: str, policy: AddressPolicy, resolver: Resolver = system_resolver) -> Destination:
    """Parse the URL and refuse it unless every address its host resolves to is allowed now."""
    destination = parse_url(url, require_https=policy.require_https)
    try:
        addresses = await asyncio.wait_for(_addresses(resolver, destination.host, destination.port), DNS_TIMEOUT_S)
    except (OSError, TimeoutError) as exc:
        raise UnsafeUrl(f"{destination.host} does not resolve") from exc
    refuse_addresses(destination.host, addresses, policy)
    return destination


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolves, checks and connects in one step, so the address checked is the address connected to."""

    def __init__(self, policy: AddressPolicy, resolver: Resolver) -> None:
        self._policy = policy
        self._resolver = resolver
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            addresses = await _addresses(self._resolver, host, port)
        except OSError as exc:
            raise httpcore.ConnectError(f"{host} does not resolve: {exc}") from exc
        refuse_addresses(host, addresses, self._policy)
        error: Exception = httpcore.ConnectError(f"{host}: no address to connect to")
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        raise error

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise UnsafeUrl("outbound calls never go to a Unix socket")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _HttpsOnlyTransport(httpx.AsyncBaseTransport):
    """Refuses a plain-http request before it is sent (its URL may carry a token or its body a lead)."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.scheme != "https":
            raise UnsafeUrl("only https URLs are accepted in production")
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


def guarded_transport(
    policy: AddressPolicy, resolver: Resolver = system_resolver, limits: httpx.Limits | None = None
) -> httpx.AsyncBaseTransport:
    """An httpx transport whose every new connection is vetted against the policy; no proxies from the environment."""
    limits = limits or httpx.Limits()
    transport = httpx.AsyncHTTPTransport(trust_env=False, limits=limits)
    # httpx's transport takes no network backend, so its pool (the private `_pool`; httpcore's `network_backend`
    # is public) is replaced by one whose every new connection is vetted; the rebinding tests fail if this stops
    # working. An environment proxy would connect on our behalf and skip the check, hence trust_env=False.
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=httpx.create_ssl_context(trust_env=False),
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=_GuardedBackend(policy, resolver),
    )
    return _HttpsOnlyTransport(transport) if policy.require_https else transport
