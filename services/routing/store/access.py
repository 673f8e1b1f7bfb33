"""Who may call, and what they changed: access tokens, used link nonces and the audit log (SQL only here)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from routing.store._base import Repository
from routing.store.tables import AccessTokenRow, AuditRow, UsedLinkNonce


class AccessRepository(Repository):
    """Tokens by their hash, single-use nonces, and the audit trail."""

    async def live_token(self, token_hash: str) -> AccessTokenRow | None:
        """The unrevoked token with this sha256, if any."""
        query = select(AccessTokenRow).where(
            AccessTokenRow.token_hash == token_hash, AccessTokenRow.revoked_at.is_(None)
        )
        return (await self.session.scalars(query)).first()

    def add_token(self, row: AccessTokenRow) -> None:
        self.session.add(row)

    async def tokens(self, rep_id: str | None = None, staff: bool = False) -> Sequence[AccessTokenRow]:
        """A rep's tokens, or the staff tokens (no rep), oldest first; revoked ones included."""
        query = select(AccessTokenRow).order_by(AccessTokenRow.created_at, AccessTokenRow.id)
        if staff:
            query = query.where(AccessTokenRow.rep_id.is_(None))
        elif rep_id is not None:
            query = query.where(AccessTokenRow.rep_id == rep_id)
        return (await self.session.scalars(query)).all()

    async def revoke_token(self, token_id: str, rep_id: str | None, at: datetime) -> AccessTokenRow | None:
        """Revoke one token (a rep's when rep_id is given, else a staff one); None when there is no such token."""
        row = await self.session.get(AccessTokenRow, token_id)
        if row is None or row.rep_id != rep_id:
            return None
        if row.revoked_at is None:
            await self.session.execute(
                update(AccessTokenRow).where(AccessTokenRow.id == token_id).values(revoked_at=at)
            )
            row.revoked_at = at
        return row

    async def use_nonce(
        self, nonce: str, lead_id: str, action: str, rep_id: str, at: datetime, expires: datetime
    ) -> bool:
        """Record a link's nonce; False when it was already used (the insert found it, in this transaction)."""
        values: dict[str, Any] = {
            "nonce": nonce,
            "lead_id": lead_id,
            "action": action,
            "rep_id": rep_id,
            "used_at": at,
            "expires_at": expires,
        }
        insert = pg_insert if self._on_postgres() else sqlite_insert
        statement = insert(UsedLinkNonce).values(**values).on_conflict_do_nothing().returning(UsedLinkNonce.nonce)
        return (await self.session.execute(statement)).first() is not None

    async def purge_nonces(self, before: datetime, limit: int) -> int:
        """Forget up to `limit` nonces of links that expired before `before` (an expired link is refused anyway)."""
        oldest = select(UsedLinkNonce.nonce).where(UsedLinkNonce.expires_at < before).limit(limit)
        result = await self.session.execute(
            delete(UsedLinkNonce)
            .where(UsedLinkNonce.nonce.in_(oldest.scalar_subquery()))
            .execution_options(synchronize_session=False)
        )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    async def nonce_used(self, nonce: str) -> bool:
        return await self.session.get(UsedLinkNonce, nonce) is not None

    def record(self, at: datetime, actor: str, action: str, subject: str | None, detail: dict[str, Any]) -> None:
        """One audit entry, in the caller's transaction (written with the change it describes)."""
        self.session.add(AuditRow(at=at, actor=actor, action=action, subject=subject, detail=detail))

    async def audit_page(self, before_id: int | None, limit: int) -> Sequence[AuditRow]:
        """Entries newest first, those older than `before_id` when given."""
        query = select(AuditRow).order_by(AuditRow.id.desc()).limit(limit)
        if before_id is not None:
            query = query.where(AuditRow.id < before_id)
        return (await self.session.scalars(query)).all()
