"""Who is calling: a Principal from the bearer token, and `require(*roles)` for routes.

Roles: admin (the admin token), ops-write (rules and roster), ops-read (reads; the settings' ops token is one),
rep (a rep's own leads and availability). Named tokens (a rep's, or staff) are kept as sha256 in access_tokens.
`require` authenticates before FastAPI reads the body (HandoffRoute runs it first), so an anonymous caller with a
malformed body gets 401, not 400.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Literal, cast, get_args

from fastapi import Depends, Request

from common.web import bearer_token, has_ops_access, ops_credential, problem, tokens_equal
from routing.store import RoutingRepository
from routing.store.access import AccessRepository

Role = Literal["admin", "ops-write", "ops-read", "rep"]
ROLES: tuple[Role, ...] = get_args(Role)
STAFF_ROLES: tuple[Role, ...] = ("ops-write", "ops-read")
_CHALLENGE = {"WWW-Authenticate": "Bearer"}
_STATE_KEY = "routing_principal"


@dataclass(frozen=True)
class Principal:
    role: Role
    rep_id: str | None
    name: str  # who, for the audit log: "admin", "ops", "token:<name>", "rep:<id>", "link:<rep id>"

    def may_act_for(self, rep_id: str | None) -> bool:
        """A rep acts only as themself; every other role that may act may name anyone."""
        return self.role != "rep" or (rep_id is not None and rep_id == self.rep_id)


def token_hash(token: str) -> str:
    """What is stored of a token: its sha256 (tokens carry 256 random bits, so no salt or stretching is needed)."""
    return hashlib.sha256(token.encode()).hexdigest()


async def current_principal(request: Request) -> Principal:
    """The caller of this request (resolved once per request), or 401 when no valid credential is shown."""
    state = request.scope.setdefault("state", {})
    cached = state.get(_STATE_KEY)
    if cached is not None:
        return cast(Principal, cached)
    principal = await _resolve(request)
    if principal is None:
        raise problem(401, "unauthorized", "a valid bearer token is required", _CHALLENGE)
    state[_STATE_KEY] = principal
    return principal


async def _resolve(request: Request) -> Principal | None:
    token = bearer_token(request)
    if token is None:
        return None
    settings = request.app.state.settings
    ops = getattr(settings, "ops_token", None)
    # Both compared every time (no early exit), in constant time.
    is_admin = tokens_equal(token, settings.admin_token.get_secret_value())
    is_ops = ops is not None and tokens_equal(token, ops.get_secret_value())
    if is_admin:
        return Principal("admin", None, "admin")
    if is_ops:
        return Principal("ops-read", None, "ops")
    async with request.app.state.runtime.db.read() as session:
        row = await AccessRepository(session).live_token(token_hash(token))
        rep = await RoutingRepository(session).rep(row.rep_id) if row is not None and row.rep_id else None
    if row is None or row.role not in ROLES:
        return None
    role = cast(Role, row.role)
    if role == "rep":
        # A rep who left (or was removed from the roster) holds no credential any more.
        if rep is None or rep.data.get("status") == "left":
            return None
        return Principal("rep", row.rep_id, f"rep:{row.rep_id}")
    return Principal(role, None, f"token:{row.name}")


def allowed_roles(*roles: Role) -> frozenset[Role]:
    """The roles a route admits: admin always, and ops-write wherever ops-read may."""
    allowed: set[Role] = {"admin", *roles}
    if "ops-read" in allowed:
        allowed.add("ops-write")
    return frozenset(allowed)


def require(*roles: Role) -> Callable[[Request], Awaitable[Principal]]:
    """A FastAPI dependency returning the Principal: 401 without a valid token, 403 when its role is not allowed."""
    allowed = allowed_roles(*roles)
    needed = ", ".join(sorted(allowed))

    async def dependency(request: Request) -> Principal:
        principal = await current_principal(request)
        if principal.role not in allowed:
            reason = f"the {principal.role} role may not do this (needs one of: {needed})"
            raise problem(403, "forbidden", reason)
        return principal

    dependency.authenticates_before_body = dependency  # type: ignore[attr-defined]  # run by common.web.HandoffRoute
    return dependency


Caller = Annotated[Principal, Depends(current_principal)]


async def ops_view(request: Request) -> None:
    """The read-only ops views (/v1/sla/*, the board, the stream): the admin or ops token, the dashboard's cookie,
    or any named token with a role that reads (ops-read, ops-write; a rep token gets 403)."""
    if has_ops_access(request):
        return
    await _ops_reader(request)


_ops_reader = require("ops-read")
ops_view.authenticates_before_body = ops_view  # type: ignore[attr-defined]  # run by common.web.HandoffRoute

OpsView = Annotated[None, Depends(ops_view)]


def credential_label(request: Request) -> str:
    """Which credential an ops request holds ("admin", "ops", or a named token's "token:<name>"): what its limits
    count by."""
    label = ops_credential(request)
    if label is not None:
        return label
    principal = request.scope.get("state", {}).get(_STATE_KEY)
    return principal.name if isinstance(principal, Principal) else "unknown"
