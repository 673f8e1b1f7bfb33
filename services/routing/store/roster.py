"""The roster's questions: teams, reps, accounts, rules, rotation, loads and the routing lock."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from functools import partial
from typing import Any, cast

from sqlalchemy import Connection, Table, bindparam, case, delete, func, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.sql.expression import ClauseElement

from common import sqlprep
from common.sqlprep import Statement, insert_many
from routing.domain.accounts import company_key
from routing.store._base import Repository
from routing.store.tables import (
    ROSTER_VERSION,
    AccountRow,
    RepLoadRow,
    RepRow,
    RepWorkedCount,
    RotationRow,
    RulesetRow,
    Setting,
    TeamRow,
)

# Advisory-lock namespaces (PostgreSQL's two-int form, a key space of its own): the whole of routing (taken shared
# by decisions, exclusively by roster changes and paths that are not per team yet), and one lock per key (a team,
# a person's thread). Held until the transaction ends; a killed process's locks go with its connection.
ROUTING_LOCK_CLASS = 0x524F  # "RO"
KEY_LOCK_CLASS = 0x5254  # "RT"


# Built once (asked once per routing batch).
_ACCOUNT_CANDIDATES = select(AccountRow).where(
    or_(
        AccountRow.domain.in_(bindparam("domains", expanding=True)),
        AccountRow.name_key.in_(bindparam("names", expanding=True)),
    )
)


def _roster_version() -> ClauseElement:
    return select(Setting.value).where(Setting.key == ROSTER_VERSION)


def read_roster_version(connection: Connection) -> int:
    rows = sqlprep.fetch(connection, "roster_version", _roster_version, literal=True)
    return int(rows[0][0]) if rows else 0


_DecisionState = tuple[dict[str, tuple[int, str, int]], dict[str, dict[str, int]], dict[str, int]]


class RosterRepository(Repository):
    async def lock_routing(self, *, shared: bool = False) -> None:
        """Routing's own lock on PostgreSQL: exclusive excludes every decision in every process (roster and rules
        changes); shared is what a decision takes before its team locks, so only an exclusive holder waits."""
        if self._on_postgres():
            how = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
            await self.session.execute(text(f"SELECT {how}(:cls, 0)"), {"cls": ROUTING_LOCK_CLASS})

    async def lock_keys(self, keys: Sequence[str]) -> None:
        """Exclusive locks on these keys (teams, threads), in one round trip and one global order; a no-op on
        SQLite (one writer)."""
        if keys and self._on_postgres():
            await self.session.execute(
                # Taken in the order of the locks' own ids (the keys' hashes), so two keys that share a hash never
                # make two transactions wait on each other in a cycle.
                text(
                    "SELECT count(pg_advisory_xact_lock(:cls, h)) FROM "
                    "(SELECT DISTINCT hashtext(k) AS h FROM unnest(CAST(:keys AS text[])) AS k ORDER BY h) AS held"
                ),
                {"cls": KEY_LOCK_CLASS, "keys": list(keys)},
            )

    async def roster_version(self) -> int:
        """The stored roster version (asked once per consumer poll): driver SQL in one hop, not an ORM load."""
        return await self._on_connection(read_roster_version)

    async def bump_roster_version(self) -> None:
        """One more roster version: every process reads the roster, rules and accounts again. Flushed at once, so
        that this transaction's next roster_version (driver SQL) reads the new value."""
        row = await self.session.get(Setting, ROSTER_VERSION)
        if row is None:
            self.session.add(Setting(key=ROSTER_VERSION, value=1))
        else:
            row.value += 1
        await self.session.flush()

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

    async def accounts_if_few(self, limit: int) -> list[AccountRow] | None:
        """Every account row when there are at most `limit` of them (kept in memory per roster version), else None."""
        rows = list((await self.session.execute(select(AccountRow).limit(limit + 1))).scalars())
        return rows if len(rows) <= limit else None

    async def account_candidates(self, domains: Sequence[str], name_keys: Sequence[str]) -> list[AccountRow]:
        """The account rows a lead could match: its domains and their parents, or its company name."""
        if not domains and not name_keys:
            return []
        found = await self.session.execute(_ACCOUNT_CANDIDATES, {"domains": list(domains), "names": list(name_keys)})
        return list(found.scalars())

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
        return await self._on_connection(read_rotation)

    async def replace_rotation(self, teams: Mapping[str, Mapping[str, int]]) -> None:
        """Store these teams' rotation states whole: a rep the rotation dropped (left, away) loses their row, so
        they come back at the neutral position instead of with an old, stale turn."""
        if teams:
            await self._on_connection(lambda connection: write_rotation(connection, teams))

    async def load_states(self, rep_ids: Sequence[str] | None = None) -> dict[str, tuple[int, str, int]]:
        """Reps' (open leads, local day, assigned that day), all of them or these."""
        if rep_ids is None:
            return await self._on_connection(read_loads)
        query = select(RepLoadRow.rep_id, RepLoadRow.open_leads, RepLoadRow.day, RepLoadRow.assigned_today)
        rows = await self.session.execute(query.where(RepLoadRow.rep_id.in_(sorted(rep_ids))))
        return {rep_id: (open_leads, day, today) for rep_id, open_leads, day, today in rows}

    async def decision_state(self) -> _DecisionState:
        """What a routing batch decides on, in one call to the connection: every rep's load, every team's rotation,
        and per rep the open leads someone has touched already."""

        def read(connection: Connection) -> _DecisionState:
            return read_loads(connection), read_rotation(connection), read_worked(connection)

        return await self._on_connection(read)

    async def add_loads(self, deltas: Mapping[str, tuple[int, str | None, int]]) -> None:
        """Move reps' loads by (open leads delta, local day or None, leads assigned on that day), one statement for
        all: increments, not values, so two processes deciding for reps of different teams never lose one."""
        if deltas:
            await self._on_connection(lambda connection: write_loads(connection, deltas))

    async def loads(self) -> dict[str, RepLoadRow]:
        return {row.rep_id: row for row in (await self.session.execute(select(RepLoadRow))).scalars()}


# The statements of a routing batch's state, built and compiled once per dialect (common.sqlprep).


def read_rotation(connection: Connection) -> dict[str, dict[str, int]]:
    """Every team's rotation positions (team -> rep -> position)."""
    state: dict[str, dict[str, int]] = {}
    query = partial(select, RotationRow.team_id, RotationRow.rep_id, RotationRow.current)
    for team_id, rep_id, current in sqlprep.fetch(connection, "rotation", query):
        state.setdefault(team_id, {})[rep_id] = current
    return state


def read_loads(connection: Connection) -> dict[str, tuple[int, str, int]]:
    """Every rep's (open leads, local day, assigned that day)."""
    query = partial(select, RepLoadRow.rep_id, RepLoadRow.open_leads, RepLoadRow.day, RepLoadRow.assigned_today)
    rows = sqlprep.fetch(connection, "loads", query)
    return {rep_id: (open_leads, day, today) for rep_id, open_leads, day, today in rows}


def read_worked(connection: Connection) -> dict[str, int]:
    """Per rep, their open leads someone has touched already, from the counter the writes keep (migration 0018):
    a row a rep (SQLite) or a few (PostgreSQL, a row a writing server process), not a count of the leads."""

    def query() -> ClauseElement:
        total = func.sum(RepWorkedCount.worked)
        return select(RepWorkedCount.rep_id, total).group_by(RepWorkedCount.rep_id).having(total != 0)

    rows = sqlprep.fetch(connection, "worked", query)
    return {str(rep_id): int(count) for rep_id, count in rows}


_ROTATION_DELETE = Statement(delete(RotationRow).where(RotationRow.team_id == bindparam("team_id")))


def write_rotation(connection: Connection, teams: Mapping[str, Mapping[str, int]]) -> None:
    """These teams' rotation states replace their rows: a delete per team (one executemany) and one insert."""
    if not teams:
        return
    _ROTATION_DELETE.run(connection, [{"team_id": team} for team in sorted(teams)])
    rows = [
        {"team_id": team_id, "rep_id": rep_id, "current": current}
        for team_id, state in sorted(teams.items())
        for rep_id, current in state.items()
    ]
    if rows:
        insert_many(connection, cast(Table, RotationRow.__table__), rows)


def _rotation_upsert(dialect_name: str) -> ClauseElement:
    stmt = (pg_insert if dialect_name == "postgresql" else sqlite_insert)(RotationRow)
    return stmt.on_conflict_do_update(
        index_elements=[RotationRow.team_id, RotationRow.rep_id], set_={"current": stmt.excluded.current}
    )


def write_positions(
    connection: Connection, teams: Mapping[str, Mapping[str, int]], dropped: Collection[str] = ()
) -> None:
    """These teams' rotation states as a batch moved them: the teams in `dropped` (a rep their stored rows hold is
    gone from the state) replaced whole (write_rotation); the others' rows updated in place or added, one upsert
    for all (a stored row the state no longer names exists only in a dropped team)."""
    whole = {team: state for team, state in teams.items() if team in dropped}
    write_rotation(connection, whole)
    rows = [
        {"team_id": team_id, "rep_id": rep_id, "current": current}
        for team_id, state in sorted(teams.items())
        if team_id not in whole
        for rep_id, current in state.items()
    ]
    if rows:
        name = connection.dialect.name
        sqlprep.run(connection, ("rotation_upsert", name), partial(_rotation_upsert, name), rows)


def write_loads(connection: Connection, deltas: Mapping[str, tuple[int, str | None, int]]) -> None:
    """Reps' loads moved by these deltas, one executemany of one upsert (see RosterRepository.add_loads)."""
    if not deltas:
        return
    on_postgres = connection.dialect.name == "postgresql"

    def upsert() -> ClauseElement:
        stmt = (pg_insert if on_postgres else sqlite_insert)(RepLoadRow)
        new = stmt.excluded
        return stmt.on_conflict_do_update(
            index_elements=[RepLoadRow.rep_id],
            set_={
                # Greatest of 0 and the sum, written as a CASE so SQLite and PostgreSQL read it the same way.
                "open_leads": case(
                    (RepLoadRow.open_leads + new.open_leads < 0, 0), else_=RepLoadRow.open_leads + new.open_leads
                ),
                "assigned_today": case(
                    (new.day == "", RepLoadRow.assigned_today),
                    (RepLoadRow.day == new.day, RepLoadRow.assigned_today + new.assigned_today),
                    else_=new.assigned_today,
                ),
                "day": case((new.day == "", RepLoadRow.day), else_=new.day),
            },
        )

    rows = [
        {"rep_id": rep_id, "open_leads": delta, "day": day or "", "assigned_today": n}
        for rep_id, (delta, day, n) in sorted(deltas.items())
    ]
    sqlprep.run(connection, "add_loads", upsert, rows)
    if any(delta < 0 for delta, _, _ in deltas.values()):
        # A release for a rep with no row yet inserted the negative delta itself: a load is never below 0.
        connection.execute(update(RepLoadRow).where(RepLoadRow.open_leads < 0).values(open_leads=0))
