"""What every routing use case reads: settings, the clock, the SLA defaults, and the roster and rules cached by
version (one `RoutingContext` per process; the `Router` facade is one)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import cached_property
from typing import cast

from sqlalchemy.ext.asyncio import AsyncSession

from routing.domain import (
    DEFAULT_RULES_YAML,
    EscalationPolicy,
    Rep,
    RoutingRules,
    SlaPolicy,
    Team,
    default_sla_policies,
    load_rules,
    parse_reps,
)
from routing.domain.accounts import Account
from routing.domain.engine import RosterIndex
from routing.domain.sla import default_ladder
from routing.settings import RoutingSettings
from routing.store import AccountRow, RoutingRepository
from routing.store.desk import DeskRepository

COMPILED_RULES = 16  # rule texts kept compiled: the active ones and recent simulate/backtest candidates
ROSTER_KEY = "routing_roster"  # session.info key: the roster this transaction reads
ACCOUNTS_KEY = "routing_accounts"  # session.info key: every account by match key, or None (too many to hold)
# Up to this many account rows are held in memory per roster version (every account write bumps it), so a poll's
# account look-up asks nothing of the store; a larger table is queried per batch, for the batch's leads' keys.
ACCOUNTS_IN_MEMORY = 5_000

AccountIndex = dict[str, tuple[Account, ...]]  # match key (a domain, or "name:<company key>") -> its accounts


@dataclass(frozen=True)
class Roster:
    version: int
    teams: list[Team]
    reps: list[Rep]

    def rep(self, rep_id: str | None) -> Rep | None:
        return self._reps_by_id.get(rep_id) if rep_id else None

    def team(self, team_id: str | None) -> Team | None:
        return self._teams_by_id.get(team_id) if team_id else None

    @cached_property
    def index(self) -> RosterIndex:
        """Teams, reps and each team's members for the engine, built once per roster version."""
        return RosterIndex.of(self.teams, self.reps)

    # Indexed once per roster version (a batch asks for a decision's rep and team several times per lead).
    @cached_property
    def _reps_by_id(self) -> dict[str, Rep]:
        found: dict[str, Rep] = {}
        for rep in self.reps:
            found.setdefault(rep.id, rep)  # the first of an id, as a scan would find
        return found

    @cached_property
    def _teams_by_id(self) -> dict[str, Team]:
        found: dict[str, Team] = {}
        for team in self.teams:
            found.setdefault(team.id, team)
        return found


def env_sla_policies(settings: RoutingSettings) -> dict[str, SlaPolicy]:
    """The environment's SLA policies by grade (and queue): the defaults under teams' and rules' `sla:` blocks."""
    policies = default_sla_policies()
    for grade, minutes in settings.sla_minutes.items():
        key = "queue" if grade.lower() == "queue" else grade.upper()
        base = policies.get(key) or policies["queue"]
        policies[key] = SlaPolicy(base.grade, minutes, settings.sla_business_hours, tuple(settings.sla_warn_fractions))
    for grade, policy in list(policies.items()):
        policies[grade] = SlaPolicy(
            policy.grade,
            policy.minutes,
            settings.sla_business_hours and policy.business_hours,
            tuple(settings.sla_warn_fractions),
        )
    return policies


def forget_roster_reads(session: AsyncSession) -> None:
    """This transaction changed the roster, rules or accounts (and bumped the version): read them again."""
    session.info.pop(ROSTER_KEY, None)
    session.info.pop(ACCOUNTS_KEY, None)


def _index(rows: Iterable[AccountRow]) -> AccountIndex:
    """Rows by the keys the store's candidate query matches: the domain, and the company key (when there is one)."""
    found: dict[str, list[Account]] = {}
    for row in rows:
        account = row.to_account()
        found.setdefault(row.domain, []).append(account)
        if row.name_key is not None:
            found.setdefault(f"name:{row.name_key}", []).append(account)
    return {key: tuple(each) for key, each in found.items()}


class RoutingContext:
    """One per process: caches the parsed roster and rules by version; every write goes through a session."""

    def __init__(self, settings: RoutingSettings, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.settings = settings
        self.clock = clock
        self._roster: Roster | None = None
        self._rules: OrderedDict[str, RoutingRules] = OrderedDict()
        self._active: tuple[int, RoutingRules] | None = None
        self._accounts: tuple[int, AccountIndex | None] | None = None
        self.sla_policies = env_sla_policies(settings)
        self.escalation = EscalationPolicy(settings.escalation_max_reassignments, settings.escalation_then)
        # The environment's ladder: the default under teams' and rules' `sla:` blocks.
        self.ladder = default_ladder(self.escalation)
        # The timer loop's wake-up: called with the due time of every timer written (it sleeps until the next).
        self.on_timer_written: Callable[[datetime], None] = lambda _due: None

    async def roster(self, session: AsyncSession) -> Roster:
        """The parsed roster at the stored version, read once per transaction and parsed once per version."""
        cached = session.info.get(ROSTER_KEY)
        if cached is not None:
            return cached
        repo = RoutingRepository(session)
        version = await repo.roster_version()
        if self._roster is None or self._roster.version != version:
            teams = [row.data for row in await repo.teams()]
            reps = [row.data for row in await repo.reps()]
            parsed_teams, parsed_reps = parse_reps({"teams": teams, "reps": reps})
            # Calendar feeds' away windows join their reps (a change to them bumps the version, as roster edits do).
            away = await DeskRepository(session).away_windows()
            parsed_reps = [replace(rep, away=away[rep.id]) if rep.id in away else rep for rep in parsed_reps]
            self._roster = Roster(version, parsed_teams, parsed_reps)
        session.info[ROSTER_KEY] = self._roster
        return self._roster

    def held(self, session: AsyncSession) -> tuple[Roster, RoutingRules, AccountIndex | None] | None:
        """The roster, rules and accounts of the version last read, when all three are held and this transaction
        has read none of them yet (else None): a routing batch on SQLite decides on them before the version is
        read, reads it with its state (one statement) and confirms it (`confirm`), or reads them again."""
        roster, active, accounts = self._roster, self._active, self._accounts
        if roster is None or active is None or accounts is None or ROSTER_KEY in session.info:
            return None
        if active[0] != roster.version or accounts[0] != roster.version:
            return None
        return roster, active[1], accounts[1]

    def confirm(self, session: AsyncSession, version: int) -> bool:
        """Whether the version this transaction read is the one `held` answered for; if so, the transaction's
        reads of the roster and accounts are those (as `roster` and `account_index` would note them)."""
        roster, accounts = self._roster, self._accounts
        if roster is None or roster.version != version or accounts is None or accounts[0] != version:
            return False
        session.info[ROSTER_KEY] = roster
        session.info[ACCOUNTS_KEY] = accounts[1]
        return True

    def forget_roster(self, session: AsyncSession) -> None:
        """This transaction changed the roster or the rules: the next read sees the new version."""
        forget_roster_reads(session)

    async def account_index(self, session: AsyncSession) -> AccountIndex | None:
        """Every account by match key, read once per roster version (None when there are more than
        ACCOUNTS_IN_MEMORY: the caller queries the keys it needs); once per transaction, as the roster."""
        if ACCOUNTS_KEY in session.info:
            return cast("AccountIndex | None", session.info[ACCOUNTS_KEY])
        version = (await self.roster(session)).version
        if self._accounts is None or self._accounts[0] != version:
            rows = await RoutingRepository(session).accounts_if_few(ACCOUNTS_IN_MEMORY)
            self._accounts = (version, None if rows is None else _index(rows))
        session.info[ACCOUNTS_KEY] = self._accounts[1]
        return self._accounts[1]

    def parse_rules(self, text: str) -> RoutingRules:
        """Validate and compile rules text (raises RulesError); the last few are kept compiled, by text."""
        rules = self._rules.get(text)
        if rules is None:
            rules = load_rules(text)
            self._rules[text] = rules
            # simulate and backtest may try a new candidate per request: keep only the most recent ones.
            while len(self._rules) > COMPILED_RULES:
                self._rules.popitem(last=False)
        self._rules.move_to_end(text)
        return rules

    async def rules(self, session: AsyncSession) -> RoutingRules:
        """The active rules; activating rules bumps the roster version, so that version keys this cache too."""
        version = (await self.roster(session)).version
        if self._active is not None and self._active[0] == version:
            return self._active[1]
        row = await RoutingRepository(session).active_ruleset()
        rules = self.parse_rules(row.source_text if row else DEFAULT_RULES_YAML)
        self._active = (version, rules)
        return rules
