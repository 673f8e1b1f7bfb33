"""Named API tokens: a rep's own (scoped to their leads and availability) and staff ones (ops-write, ops-read).

The secret is shown once, when issued; only its sha256 is stored. Issuing and revoking are audited.
"""

from __future__ import annotations

import secrets
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from routing.access.audit import record
from routing.access.principal import STAFF_ROLES, Principal, token_hash
from routing.store import RoutingRepository
from routing.store.access import AccessRepository
from routing.store.tables import AccessTokenRow

TOKEN_PREFIX = "hnd_"  # noqa: S105  # a marker, not a secret


def token_out(row: AccessTokenRow) -> dict[str, Any]:
    """A token as listed: never its secret (only the hash is kept anyway)."""
    return {
        "id": row.id,
        "name": row.name,
        "role": row.role,
        "rep_id": row.rep_id,
        "created_by": row.created_by,
        "created_at": row.created_at.isoformat(),
        "revoked_at": row.revoked_at.isoformat() if row.revoked_at else None,
    }


async def issue(
    session: AsyncSession, now: datetime, by: Principal, *, role: str, name: str, rep_id: str | None = None
) -> dict[str, Any]:
    """A new token; raises LookupError for an unknown rep and ValueError for a role a named token cannot have."""
    if rep_id is not None:
        if await RoutingRepository(session).rep(rep_id) is None:
            raise LookupError(f"no rep {rep_id!r}")
        role = "rep"
    elif role not in STAFF_ROLES:
        raise ValueError(f"a staff token's role is one of {list(STAFF_ROLES)}")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = AccessTokenRow(
        id=str(uuid.uuid4()),
        token_hash=token_hash(secret),
        role=role,
        rep_id=rep_id,
        name=name,
        created_by=by.name,
        created_at=now,
        revoked_at=None,
    )
    AccessRepository(session).add_token(row)
    record(session, now, by, "token.issue", rep_id or name, token_id=row.id, token_role=role)
    return {**token_out(row), "token": secret}


async def listed(session: AsyncSession, rep_id: str | None) -> list[dict[str, Any]]:
    """A rep's tokens, or (rep_id None) the staff tokens; without secrets."""
    rows = await AccessRepository(session).tokens(rep_id=rep_id, staff=rep_id is None)
    return [token_out(row) for row in rows]


async def revoke(session: AsyncSession, now: datetime, by: Principal, token_id: str, rep_id: str | None) -> None:
    """Revoke one token (raises LookupError when there is no such token for this rep, or staff token)."""
    row = await AccessRepository(session).revoke_token(token_id, rep_id, now)
    if row is None:
        raise LookupError("no such token")
    record(session, now, by, "token.revoke", rep_id or row.name, token_id=token_id)
