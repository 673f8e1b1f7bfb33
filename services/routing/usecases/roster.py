"""Roster: reps, teams and accounts (seeded, edited one at a time, imported), and installing routing rules.

Every change is validated as a whole before anything is stored and takes the routing lock, so it serializes with
routing decisions; changing the roster or the rules bumps the roster version, which every process reads."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import structlog
import yaml
from sqlalchemy.ext.asyncio import AsyncSession

from routing.domain import Action, RosterError, RoutingRules, RulesError, parse_reps
from routing.domain.accounts import AccountSpec
from routing.store import RepLoadRow, RepRow, RoutingRepository
from routing.store.desk import DeskRepository
from routing.usecases.context import Roster, RoutingContext, forget_roster_reads
from routing.usecases.shared import lock, tx

log = structlog.get_logger(__name__)


class RosterEditRefused(RosterError):
    """An edit made the roster invalid; `ids` are the merged roster's team and rep ids by position, so an error's
    path (reps[3].hours) can name what the caller sent (reps[ana].hours, or the edited item's own field)."""

    def __init__(self, errors: list[str], ids: dict[str, list[str]]) -> None:
        super().__init__(errors)
        self.ids = ids

    def errors_for(self, edited: tuple[str, str] | None) -> list[str]:
        """The errors with paths a caller recognises: the edited item's own fields, or kind[id] for the others."""
        return [self._caller_path(error, edited) for error in self.errors]

    def _caller_path(self, error: str, edited: tuple[str, str] | None) -> str:
        path, separator, reason = error.partition(": ")
        if not separator:
            return error
        for kind, kind_ids in self.ids.items():
            for index, item_id in enumerate(kind_ids):
                prefix = f"{kind}[{index}]"
                if path == prefix or path.startswith((prefix + ".", prefix + "[")):
                    if edited == (kind, item_id):
                        return f"{path[len(prefix) :].lstrip('.') or '<body>'}: {reason}"
                    return f"{kind}[{item_id}]{path[len(prefix) :]}: {reason}"
        return error


async def install_rules(rt: RoutingContext, session: AsyncSession, text: str) -> RoutingRules:
    """Validate (RulesError leaves the old rules in force), check against the roster, activate."""
    rules = rt.parse_rules(text)
    await lock(session)
    problems = roster_problems(rules, await rt.roster(session))
    if problems:
        raise RulesError(problems)
    repo = RoutingRepository(session)
    await repo.activate_ruleset(rules.version, text, rt.clock())
    await repo.bump_roster_version()  # every process picks the new rules up
    rt.forget_roster(session)
    await session.flush()
    return rules


async def replace_roster(rt: RoutingContext, session: AsyncSession, data: Mapping[str, Any]) -> Roster:
    """Load teams, reps and accounts from a seed mapping (validated as a whole first)."""
    await lock(session)
    repo = RoutingRepository(session)
    _, reps = parse_reps({"teams": data.get("teams") or [], "reps": data.get("reps") or []})
    known = {rep.id for rep in reps} | {row.id for row in await repo.reps()}
    problems = account_problems(data.get("accounts"), known)
    if problems:
        raise RosterError(problems)
    now = rt.clock()
    for raw in data.get("teams") or []:
        await repo.save_team(raw, now)
    for raw in data.get("reps") or []:
        await repo.save_rep(raw, now)
    for raw in data.get("accounts") or []:
        domains = [d.lower() for d in raw.get("domains") or [raw.get("domain")] if d]
        await repo.save_account(str(raw.get("id") or domains[0]), raw["owner"], raw.get("name"), domains)
    await repo.bump_roster_version()
    rt.forget_roster(session)
    tx(session).accounts.clear()
    await session.flush()
    return await rt.roster(session)


async def edit_roster(
    rt: RoutingContext,
    session: AsyncSession,
    *,
    teams: Mapping[str, dict[str, Any]] | None = None,
    reps: Mapping[str, dict[str, Any]] | None = None,
) -> Roster:
    """Merge changed teams and reps into the stored roster and save it, validated as a whole."""
    repo = RoutingRepository(session)
    await lock(session)  # roster edits serialize with each other and with routing decisions
    merged_teams = {t.id: t.data for t in await repo.teams()}
    merged_reps = {r.id: r.data for r in await repo.reps()}
    merged_teams.update(teams or {})
    merged_reps.update(reps or {})
    try:
        return await replace_roster(
            rt, session, {"teams": list(merged_teams.values()), "reps": list(merged_reps.values())}
        )
    except RosterError as exc:
        raise RosterEditRefused(exc.errors, {"teams": list(merged_teams), "reps": list(merged_reps)}) from exc


async def patch_rep(rt: RoutingContext, session: AsyncSession, rep_id: str, changes: Mapping[str, Any]) -> Roster:
    """Change some of a rep's fields (raises LookupError for an unknown rep)."""
    row = await RoutingRepository(session).rep(rep_id)
    if row is None:
        raise LookupError("no rep with this id")
    return await edit_roster(rt, session, reps={rep_id: {**row.data, **changes, "id": rep_id}})


async def load_roster(rt: RoutingContext, session: AsyncSession, data: Mapping[str, Any]) -> Roster:
    """A whole roster document (teams, reps, accounts) loaded over the stored one."""
    await lock(session)
    return await replace_roster(rt, session, data)


async def reps_with_loads(session: AsyncSession) -> list[dict[str, Any]]:
    repo = RoutingRepository(session)
    loads = await repo.loads()
    return [rep_out(row, loads) for row in await repo.reps()]


async def rep_with_load(session: AsyncSession, rep_id: str) -> dict[str, Any]:
    repo = RoutingRepository(session)
    row = await repo.rep(rep_id)
    if row is None:
        raise LookupError("no rep with this id")
    out = rep_out(row, await repo.loads())
    calendar = await DeskRepository(session).calendar(rep_id) if row.data.get("calendar_url") else None
    if calendar is not None:  # how the feed last read; a failed fetch keeps the last good windows
        when = {"checked_at": calendar.checked_at, "refreshed_at": calendar.refreshed_at}
        out["calendar"] = {"error": calendar.error, "away": calendar.away}
        out["calendar"].update({k: v.isoformat() if v else None for k, v in when.items()})
    return out


def rep_out(row: RepRow, loads: Mapping[str, RepLoadRow]) -> dict[str, Any]:
    load = loads.get(row.id)
    return {
        **row.data,
        "load": {
            "open_leads": load.open_leads if load else 0,
            "assigned_today": load.assigned_today if load else 0,
            "day": load.day if load else None,
        },
    }


async def teams(session: AsyncSession) -> list[dict[str, Any]]:
    return [t.data for t in await RoutingRepository(session).teams()]


async def accounts(session: AsyncSession) -> list[dict[str, Any]]:
    return [
        {"domain": a.domain, "account": a.account_id or a.domain, "owner": a.owner_rep_id, "name": a.name}
        for a in await RoutingRepository(session).accounts()
    ]


async def put_account(session: AsyncSession, domain: str, owner: str, name: str | None, account: str | None) -> str:
    """Set a domain's owner (and account: the given one, the domain's existing one, else the domain itself);
    returns the account id. Raises RosterError for an unknown owner."""
    repo = RoutingRepository(session)
    if await repo.rep(owner) is None:
        raise RosterError([f"owner: unknown rep {owner!r}"])
    existing = await repo.account(domain)
    account_id = account or (existing.account_id if existing and existing.account_id else domain)
    await repo.save_account(account_id, owner, name, [domain])
    await _accounts_changed(session, repo)
    return account_id


async def import_accounts(session: AsyncSession, specs: Sequence[AccountSpec]) -> None:
    """Accounts from a parsed CSV, all or none: raises RosterError naming each unknown owner."""
    repo = RoutingRepository(session)
    known = {rep.id for rep in await repo.reps()}
    unknown = [f"account {spec.id}.owner: unknown rep {spec.owner!r}" for spec in specs if spec.owner not in known]
    if unknown:
        raise RosterError(unknown)
    for spec in specs:
        await repo.save_account(spec.id, spec.owner, spec.name, spec.domains)
    await _accounts_changed(session, repo)


async def delete_account(session: AsyncSession, domain: str) -> None:
    repo = RoutingRepository(session)
    if not await repo.delete_account(domain.lower()):
        raise LookupError("no account with this domain")
    await _accounts_changed(session, repo)


async def _accounts_changed(session: AsyncSession, repo: RoutingRepository) -> None:
    """Processes hold every account in memory per roster version (RoutingContext.account_index): a new version
    makes each read them again, and this transaction forgets what it read."""
    await repo.bump_roster_version()
    forget_roster_reads(session)
    tx(session).accounts.clear()


def roster_problems(rules: RoutingRules, roster: Roster) -> list[str]:
    """Teams and reps the rules name that the roster lacks, each as 'path: problem' like the rules' own errors."""
    teams = {team.id for team in roster.teams}
    reps = {rep.id for rep in roster.reps}
    known = f"(known teams: {', '.join(sorted(teams)) or 'none'})"
    problems: list[str] = []
    if rules.fallback_team not in teams:
        problems.append(f"fallback_team: unknown team {rules.fallback_team!r} {known}")
    # load_rules keeps every rule of a valid document, in order, so the index is the document's own.
    for index, rule in enumerate(rules.rules):
        action: Action | None = rule.action
        where = f"rules[{index}].action"
        while action is not None:
            if action.team and action.team not in teams:
                problems.append(f"{where}.team: unknown team {action.team!r} {known}")
            if action.rep and action.rep not in reps:
                problems.append(f"{where}.rep: unknown rep {action.rep!r}")
            action, where = action.fallback, f"{where}.fallback"
    return problems


def account_problems(accounts: Any, rep_ids: set[str]) -> list[str]:
    """What is wrong with a roster's `accounts` list, each as 'path: problem'."""
    if accounts is None:
        return []
    if not isinstance(accounts, list):
        return ["accounts: expected a list of {name, domains, owner}"]
    problems: list[str] = []
    for index, raw in enumerate(accounts):
        where = f"accounts[{index}]"
        if not isinstance(raw, Mapping):
            problems.append(f"{where}: expected a mapping with domains and owner")
            continue
        owner = raw.get("owner")
        if not isinstance(owner, str) or owner not in rep_ids:
            problems.append(f"{where}.owner: unknown rep {owner!r}")
        domains = raw.get("domains") or [raw.get("domain")]
        if not isinstance(domains, list) or not all(isinstance(d, str) and "." in d for d in domains):
            problems.append(f"{where}.domains: expected a list of company domains like acme.com")
    return problems


async def seed(rt: RoutingContext, session: AsyncSession, roster_text: str | None, rules_text: str | None) -> None:
    """The seed roster and rules, loaded once, when the store has none (a restart keeps what ops changed)."""
    repo = RoutingRepository(session)
    await lock(session)  # two processes starting together on PostgreSQL seed once, not twice
    if roster_text is not None and not await repo.reps():
        loaded = await replace_roster(rt, session, yaml.safe_load(roster_text) or {})
        log.info("roster_seeded", reps=len(loaded.reps), teams=len(loaded.teams))
    if rules_text is not None and await repo.active_ruleset() is None:
        rules = await install_rules(rt, session, rules_text)
        log.info("routing_rules_installed", version=rules.version)
