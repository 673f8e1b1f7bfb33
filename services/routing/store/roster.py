"""The roster's questions: teams, reps, accounts, rules, rotation, loads and the routing lock."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select, update

from routing.domain.accounts import company_key
from routing.store._base import Repository
from routing.store.tables import (
    ROSTER_VERSION,
    ROUTING_LOCK,
    AccountRow,
    RepLoadRow,
    RepRow,
    RotationRow,
    RulesetRow,
    Setting,
    TeamRow,
)


class RosterRepository(Repository):
    async def lock_routing(self) -> None:
        """Serialize routing decisions across processes on PostgreSQL (rotation has no lost updates)."""
        if self._on_postgres():
            await self.session.execute(select(Setting).where(Setting.key == ROUTING_LOCK).with_for_update())

    async def roster_version(self) -> int:
        row = await self.session.get(Setting, ROSTER_VERSION)
        return row.value if row else 0

    async def bump_roster_version(self) -> None:
        row = await self.session.get(Setting, ROSTER_VERSION)
        if row is None:
            self.session.add(Setting(key=ROSTER_VERSION, value=1))
        else:
            row.value += 1

    async def teams(self) -> list[TeamRow]:
        return list((await self.session.execute(select(TeamRow).order_by(TeamRow.id))).scalars())

    async def reps(self) -> list[RepRow]:
        return list((await self.session.execute(select(RepRow).order_by(RepRow.id))).scalars())

    async def rep(self, rep_id: str) -> RepRow | None:
        return await self.session.get(RepRow, rep_id)

    async def save_team(self, raw: Mapping[str, Any], now: datetime) -> None:
        row = await self.session.get(TeamRow, raw["id"])
        if row is None:
            self.session.add(TeamRow(id=raw["id"], data=dict(raw), updated_at=now))
        else:
            row.data, row.updated_at = dict(raw), now

    async def save_rep(self, raw: Mapping[str, Any], now: datetime) -> None:
        row = await self.session.get(RepRow, raw["id"])
        if row is None:
            self.session.add(RepRow(id=raw["id"], data=dict(raw), updated_at=now))
        else:
            row.data, row.updated_at = dict(raw), now

    async def accounts(self) -> list[AccountRow]:
        return list((await self.session.execute(select(AccountRow).order_by(AccountRow.domain))).scalars())

    async def account(self, domain: str) -> AccountRow | None:
        return await self.session.get(AccountRow, domain)

    async def delete_account(self, domain: str) -> bool:
        """Forget one domain's owner; False when there was none."""
        row = await self.session.get(AccountRow, domain)
        if row is None:
            return False
        await self.session.delete(row)
        return True

    async def account_candidates(self, domains: Sequence[str], name_keys: Sequence[str]) -> list[AccountRow]:
        """The account rows a lead could match: its domains and their parents, or its company name."""
        if not domains and not name_keys:
            return []
        condition = or_(AccountRow.domain.in_(list(domains)), AccountRow.name_key.in_(list(name_keys)))
        return list((await self.session.execute(select(AccountRow).where(condition))).scalars())

    async def save_account(self, account_id: str, owner: str, name: str | None, domains: Sequence[str]) -> None:
        """Upsert one account: each of its domains a row, and every row of the account with the same owner and name."""
        key = company_key(name)
        for domain in domains:
            row = await self.session.get(AccountRow, domain.lower())
            if row is None:
                row = AccountRow(domain=domain.lower())
                self.session.add(row)
            row.account_id, row.owner_rep_id, row.name, row.name_key = account_id, owner, name, key
        await self.session.execute(
            update(AccountRow)
            .where(AccountRow.account_id == account_id)
            .values(owner_rep_id=owner, name=name, name_key=key)
        )

    async def active_ruleset(self) -> RulesetRow | None:
        return (
            await self.session.execute(select(RulesetRow).where(RulesetRow.active.is_(True)).limit(1))
        ).scalar_one_or_none()

    async def activate_ruleset(self, version: str, text: str, now: datetime) -> None:
        """Make this version the only active ruleset, storing its text the first time it is seen."""
        existing = await self.session.get(RulesetRow, version)
        await self.session.execute(update(RulesetRow).values(active=False))
        if existing is None:
            self.session.add(RulesetRow(version=version, source_text=text, active=True, created_at=now))
        else:
            existing.active = True

    async def rotation(self) -> dict[str, dict[str, int]]:
        state: dict[str, dict[str, int]] = {}
        for row in (await self.session.execute(select(RotationRow))).scalars():
            state.setdefault(row.team_id, {})[row.rep_id] = row.current
        return state

    async def rotation_rows(self) -> list[RotationRow]:
        return list((await self.session.execute(select(RotationRow))).scalars())

    async def save_rotation(self, rows: list[RotationRow], rotation: Mapping[str, Mapping[str, int]]) -> None:
        """Store each rotated team's new state whole: a rep the rotation dropped (left, away) loses their row,
        so they come back at the neutral position instead of with an old, stale turn. `rows` is the
        transaction's cached list and is kept current."""
        existing = {(row.team_id, row.rep_id): row for row in rows}
        for team_id, state in rotation.items():
            for rep_id, current in state.items():
                row = existing.get((team_id, rep_id))
                if row is None:
                    row = RotationRow(team_id=team_id, rep_id=rep_id, current=current)
                    self.session.add(row)
                    rows.append(row)
                elif row.current != current:
                    row.current = current
            for (row_team, rep_id), row in existing.items():
                if row_team == team_id and rep_id not in state:
                    rows.remove(row)
                    if row in self.session.new:
                        self.session.expunge(row)  # added earlier in this transaction and never written
                    else:
                        await self.session.delete(row)

    async def loads(self) -> dict[str, RepLoadRow]:
        return {row.rep_id: row for row in (await self.session.execute(select(RepLoadRow))).scalars()}
