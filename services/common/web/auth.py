"""Who is calling: the admin and ops tokens (bearer or the ops cookie), and the client's address behind proxies."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import time
from collections.abc import Callable, Sequence
from typing import Annotated, Any

from fastapi import Depends, Request

from common.web.errors import problem

_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return None
    return token.strip()


def tokens_equal(given: str | None, expected: str) -> bool:
    """Constant-time comparison, so response timing reveals nothing about the secret."""
    if given is None:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def require_admin_token(request: Request) -> None:
    """Dependency form used by routers: the token lives on app.state.settings."""
    settings = request.app.state.settings
    if not tokens_equal(bearer_token(request), settings.admin_token.get_secret_value()):
        raise problem(401, "unauthorized", "a valid admin bearer token is required", _CHALLENGE)


Admin = Annotated[None, Depends(require_admin_token)]

OPS_COOKIE = "handoff_ops"
OPS_COOKIE_MAX_AGE_S = 12 * 3600


def ops_tokens(settings: Any) -> list[str]:
    """Tokens that may read ops data: the admin token always, and the read-only ops token when set."""
    tokens = [settings.admin_token.get_secret_value()]
    ops = getattr(settings, "ops_token", None)
    if ops is not None:
        tokens.append(ops.get_secret_value())
    return tokens


def is_ops_token(settings: Any, given: str | None) -> bool:
    """Every candidate is compared (no early exit), so timing tells nothing about which one matched."""
    matches = [tokens_equal(given, token) for token in ops_tokens(settings)]
    return any(matches)


def ops_credential(request: Request) -> str | None:
    """Which token an ops request holds, "admin" or "ops" (bearer or cookie): the unit its limits count by."""
    settings = request.app.state.settings
    labels = ["admin", "ops"]
    bearer = bearer_token(request)
    if bearer is not None:
        matches = [tokens_equal(bearer, token) for token in ops_tokens(settings)]
    else:
        cookie = request.cookies.get(OPS_COOKIE) or ""
        expires_text, _, mac = cookie.partition(".")
        if not expires_text.isdigit() or int(expires_text) < time.time():
            return None
        matches = [tokens_equal(mac, _ops_cookie_mac(token, int(expires_text))) for token in ops_tokens(settings)]
    return next((label for label, matched in zip(labels, matches, strict=False) if matched), None)


def _ops_cookie_mac(token: str, expires: int) -> str:
    return hmac.new(token.encode(), f"handoff-ops-session:{expires}".encode(), hashlib.sha256).hexdigest()


def issue_ops_cookie(token: str, now: float | None = None) -> str:
    """A cookie value that proves the token was shown, without holding it; it expires on its own."""
    expires = int((time.time() if now is None else now) + OPS_COOKIE_MAX_AGE_S)
    return f"{expires}.{_ops_cookie_mac(token, expires)}"


def _ops_cookie_valid(settings: Any, value: str, now: float) -> bool:
    expires_text, _, mac = value.partition(".")
    if not expires_text.isdigit() or not mac or int(expires_text) < now:
        return False
    expires = int(expires_text)
    matches = [tokens_equal(mac, _ops_cookie_mac(token, expires)) for token in ops_tokens(settings)]
    return any(matches)


def has_ops_access(request: Request) -> bool:
    """A bearer admin or ops token, or (browsers on /ops) the session cookie that /ops?token= set."""
    settings = request.app.state.settings
    bearer = bearer_token(request)
    if bearer is not None:
        return is_ops_token(settings, bearer)
    cookie = request.cookies.get(OPS_COOKIE)
    return cookie is not None and _ops_cookie_valid(settings, cookie, time.time())


def require_ops_access(request: Request) -> None:
    """Dependency for read-only ops routes; the cookie is accepted here only, never on routes that change state."""
    if not has_ops_access(request):
        raise problem(401, "unauthorized", "a valid admin or ops bearer token is required", _CHALLENGE)


Ops = Annotated[None, Depends(require_ops_access)]

# Dependencies that only look at headers and cookies, so they can run before the body is read.
AUTHENTICATION_DEPENDENCIES: frozenset[Callable[[Request], None]] = frozenset({require_admin_token, require_ops_access})


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def client_address(request: Request, trusted_proxies: Sequence[Network] = ()) -> str:
    """The caller's address: the socket peer, unless that peer is a trusted proxy and says who it forwards for.

    X-Forwarded-For is read right to left (each proxy appends the peer it saw), skipping our own proxies; the first
    hop that is not one of them is the client. Anything further left was written by the client and proves nothing,
    so a forged header from an untrusted peer changes nothing.
    """
    peer = request.client.host if request.client else "unknown"
    if not trusted_proxies or not _is_trusted(peer, trusted_proxies):
        return peer
    hops = [hop.strip() for value in request.headers.getlist("x-forwarded-for") for hop in value.split(",")]
    address = peer
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            break  # garbage a proxy passed on: the last hop we could vouch for stands
        address = hop
        if not _is_trusted(hop, trusted_proxies):
            break
    return address


def _is_trusted(address: str, trusted_proxies: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted_proxies)
