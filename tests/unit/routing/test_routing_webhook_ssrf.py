"""Where webhooks may go: no private, loopback, link-local, multicast, reserved or metadata addresses."""

from __future__ import annotations

import ipaddress

import pytest
from pydantic import SecretStr

from common.egress import AddressPolicy, Resolver, UnsafeUrl, address_refusal, vet_url
from routing.settings import RoutingSettings
from routing.webhooks.address import parse_endpoint_url, webhook_address_policy
from routing.webhooks.transport import GuardedResolver, checked_url, new_http_session

pytestmark = pytest.mark.unit

STRICT = AddressPolicy()


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.9.9.9", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.10", "private"),
        ("::ffff:192.168.1.10", "private"),
        ("fc00::1", "private"),
        ("169.254.10.10", "link-local"),
        ("fe80::1", "link-local"),
        ("169.254.169.254", "metadata"),
        ("fd00:ec2::254", "metadata"),
        ("168.63.129.16", "metadata"),
        ("224.0.0.251", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("100.64.0.1", "non-public"),
        ("64:ff9b::a00:1", "private"),
        ("64:ff9b::7f00:1", "loopback"),
        ("2002:a9fe:a9fe::1", "metadata"),
    ],
)
def test_refused_addresses_say_why(address: str, reason: str) -> None:
    assert address_refusal(address, STRICT) == reason


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert address_refusal(address, STRICT) is None


def test_allow_list_opens_exactly_what_it_names() -> None:
    policy = AddressPolicy(
        allow_loopback=True,
        allowed_networks=(ipaddress.ip_network("10.20.0.0/16"),),
        allowed_hosts=frozenset({"crm.internal"}),
    )
    assert address_refusal("127.0.0.1", policy) is None
    assert address_refusal("::1", policy) is None
    assert address_refusal("0.0.0.0", policy) == "unspecified"  # not loopback by name, but reaches it
    assert address_refusal("10.20.5.5", policy) is None
    assert address_refusal("10.21.5.5", policy) == "private"
    assert address_refusal("192.168.0.9", policy, host="crm.internal") is None
    assert address_refusal("192.168.0.9", policy, host="other.internal") == "private"
    assert address_refusal("169.254.169.254", policy, host="crm.internal") == "metadata"


def test_settings_allow_loopback_in_development_only_unless_told() -> None:
    assert webhook_address_policy(RoutingSettings(env="development")).allow_loopback
    assert not webhook_address_policy(RoutingSettings(env="production", admin_token=SecretStr("x" * 32))).allow_loopback
    assert webhook_address_policy(RoutingSettings(env="test", webhook_allow_loopback=True)).allow_loopback
    assert not webhook_address_policy(RoutingSettings(env="development", webhook_allow_loopback=False)).allow_loopback
    policy = webhook_address_policy(
        RoutingSettings(env="test", webhook_allow_private_hosts=("10.0.0.0/8", "CRM.internal."))
    )
    assert address_refusal("10.9.9.9", policy) is None
    assert address_refusal("192.168.1.1", policy, host="crm.internal") is None


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://crm.example.com/hook", "only http and https"),
        ("file:///etc/passwd", "only http and https"),
        ("gopher://127.0.0.1:6379/_INFO", "only http and https"),
        ("https:///nohost", "no host"),
        ("https://user:pass@crm.example.com/hook", "credentials"),
        ("https://crm.example.com/" + "a" * 2100, "longer than"),
        ("not a url", "only http and https"),
    ],
)
def test_only_plain_http_urls_are_accepted(url: str, message: str) -> None:
    with pytest.raises(UnsafeUrl, match=message):
        parse_endpoint_url(url)


def test_ports_and_idn_hosts_are_understood() -> None:
    assert parse_endpoint_url("https://crm.example.com/hook").port == 443
    assert parse_endpoint_url("http://crm.example.com:8080/hook").port == 8080
    assert parse_endpoint_url("https://bücher.example/hook").host == "xn--bcher-kva.example"


def _resolver(answers: dict[str, list[str]]) -> Resolver:
    async def resolve(host: str, _port: int) -> list[str]:
        if host not in answers:
            raise OSError("Name or service not known")
        return answers[host]

    return resolve


async def test_names_are_judged_by_every_address_they_resolve_to() -> None:
    resolve = _resolver(
        {
            "crm.example.com": ["93.184.216.34"],
            "sneaky.example.com": ["93.184.216.34", "10.0.0.5"],
            "meta.example.com": ["169.254.169.254"],
            "v6.example.com": ["::1"],
        }
    )
    assert (await vet_url("https://crm.example.com/hook", STRICT, resolve)).host == "crm.example.com"
    with pytest.raises(UnsafeUrl, match="private address"):
        await vet_url("https://sneaky.example.com/hook", STRICT, resolve)
    with pytest.raises(UnsafeUrl, match="metadata address"):
        await vet_url("http://meta.example.com/latest/meta-data", STRICT, resolve)
    with pytest.raises(UnsafeUrl, match="loopback address"):
        await vet_url("http://v6.example.com/", STRICT, resolve)
    with pytest.raises(UnsafeUrl, match="does not resolve"):
        await vet_url("https://nowhere.example.com/", STRICT, resolve)
    with pytest.raises(UnsafeUrl, match="metadata address"):
        await vet_url("http://[fd00:ec2::254]/latest", STRICT, resolve)


# -- the sender's aiohttp client: the same policy at connect time ---------------------------------------------


async def test_the_senders_client_refuses_a_name_that_rebinds_to_a_refused_address() -> None:
    answers = {"rebind.example.com": ["93.184.216.34"]}
    resolve = _resolver(answers)
    guard = GuardedResolver(STRICT, resolve)
    assert [r["host"] for r in await guard.resolve("rebind.example.com", 443)] == ["93.184.216.34"]
    answers["rebind.example.com"] = ["93.184.216.34", "127.0.0.1"]  # a mixed answer is refused too
    with pytest.raises(UnsafeUrl, match="loopback address"):
        await guard.resolve("rebind.example.com", 443)

    # Through the session the sender builds: refused before any connection, raised as UnsafeUrl.
    settings = RoutingSettings(env="test", webhook_allow_loopback=False)
    session = new_http_session(settings, webhook_address_policy(settings), resolve)
    try:
        with pytest.raises(UnsafeUrl, match="loopback address"):
            async with session.post("http://rebind.example.com:1/hook", data=b"{}", allow_redirects=False):
                pass
    finally:
        await session.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://127.0.0.1:8080/hook", "loopback"),
        ("http://[::ffff:10.0.0.1]/hook", "private"),
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
    ],
)
def test_ip_literal_urls_never_reach_the_resolver_and_are_checked_before_sending(url: str, message: str) -> None:
    with pytest.raises(UnsafeUrl, match=message):
        checked_url(url, STRICT)
    assert str(checked_url("http://93.184.216.34/hook", STRICT)) == "http://93.184.216.34/hook"
    with pytest.raises(UnsafeUrl, match="only https"):
        checked_url("http://93.184.216.34/hook", AddressPolicy(require_https=True))
