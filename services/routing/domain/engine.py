"""route(): one lead view in, one Decision out. Pure; the caller persists Decision.rotation."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from routing.domain.accounts import AccountBook, AccountMatch
from routing.domain.eligibility import Candidate, check_rep, lead_facts, lead_language
from routing.domain.hours import next_working_time
from routing.domain.reps import Rep, RepLoad, Team
from routing.domain.rotation import rotate
from routing.domain.rules import Action, RoutingRules, Rule, RuleOptions, lookup

OUTCOMES = ("assigned", "nurture", "queued", "held")
_IDLE = RepLoad()  # a rep with no load row: one shared value instead of one built per check (RepLoad is frozen)


@dataclass(frozen=True)
class Decision:
    """Where a lead goes, why, and the rotation state to save with it."""

    outcome: str
    rep_id: str | None
    team_id: str | None
    rule_id: str | None
    ruleset_version: str
    method: str | None
    candidates: list[Candidate]
    reason: str
    hold_until: datetime | None = None
    rotation: dict[str, dict[str, int]] = field(default_factory=dict)
    account: AccountMatch | None = None  # the lead's account and how it was matched, whatever the rule did

    @cached_property
    def candidate_dicts(self) -> tuple[dict[str, Any], ...]:
        """Every candidate's JSON-ready form, built once: the decision, its timeline entry and its event each list
        them (read-only: copy before changing one)."""
        return tuple(candidate.to_dict() for candidate in self.candidates)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (datetimes as ISO 8601)."""
        return {
            "outcome": self.outcome,
            "rep_id": self.rep_id,
            "team_id": self.team_id,
            "rule_id": self.rule_id,
            "ruleset_version": self.ruleset_version,
            "method": self.method,
            "candidates": list(self.candidate_dicts),
            "reason": self.reason,
            "hold_until": self.hold_until.isoformat() if self.hold_until else None,
            "rotation": {team: dict(state) for team, state in self.rotation.items()},
            "match": self.account.to_dict() if self.account else None,
        }


def _matched_by(match: AccountMatch | None) -> str:
    if match is None:
        return "unmatched"
    how = {"domain": "by domain", "parent_domain": "by parent domain", "company_name": "by company name"}
    return f"{how.get(match.method, match.method)} {match.value}"


def _rule_phrase(rule: Rule | None) -> str:
    return f"Rule '{rule.id}' matched" if rule else "No rule matched, so the fallback team applies"


def _exclusion_summary(candidates: Sequence[Candidate]) -> str:
    excluded = [c for c in candidates if not c.eligible]
    if not excluded:
        return ""
    listed = ", ".join(f"{c.rep_id} ({'+'.join(c.excluded_because)})" for c in excluded[:8])
    more = f" and {len(excluded) - 8} more" if len(excluded) > 8 else ""
    return f" Excluded: {listed}{more}."


@dataclass(frozen=True)
class RosterIndex:
    """A roster's teams and reps by id and each team's members in roster order: built once per roster by a caller
    that routes many leads on it (route() builds them for each lead otherwise)."""

    teams: dict[str, Team]
    reps: dict[str, Rep]
    members: dict[str, tuple[Rep, ...]]

    @classmethod
    def of(cls, teams: Sequence[Team], reps: Sequence[Rep]) -> RosterIndex:
        by_id = {rep.id: rep for rep in reps}
        members: dict[str, list[Rep]] = {}
        for rep in by_id.values():
            if rep.team is not None:
                members.setdefault(rep.team, []).append(rep)
        return cls({team.id: team for team in teams}, by_id, {team: tuple(each) for team, each in members.items()})


class _Router:
    def __init__(
        self,
        view: Mapping[str, Any],
        rules: RoutingRules,
        teams: Sequence[Team],
        reps: Sequence[Rep],
        loads: Mapping[str, RepLoad],
        rotation: Mapping[str, Mapping[str, int]],
        accounts: Mapping[str, str] | AccountBook,
        previous_rep: str | None,
        exclude: frozenset[str],
        now: datetime,
        index: RosterIndex | None,
    ) -> None:
        self.view, self.rules, self.loads, self.rotation = view, rules, loads, rotation
        book = accounts if isinstance(accounts, AccountBook) else AccountBook.from_owners(accounts)
        self.account = book.match(view)
        self.facts = lead_facts(view)  # read once: every rep checked reads the same language and country
        self.previous_rep, self.exclude, self.now = previous_rep, exclude, now
        index = index or RosterIndex.of(teams, reps)
        self.teams, self.reps, self.members = index.teams, index.reps, index.members
        self.candidates: dict[str, Candidate] = {}
        self.sticky_checked = False

    # helpers ------------------------------------------------------------------

    def check(self, rep: Rep, options: RuleOptions, *, fit: bool = True) -> Candidate:
        candidate = check_rep(
            rep,
            view=self.view,
            load=self.loads.get(rep.id, _IDLE),
            options=options,
            exclude=self.exclude,
            now=self.now,
            fit=fit,
            facts=self.facts,
        )
        self.candidates[rep.id] = candidate
        return candidate

    def decision(self, outcome: str, rule: Rule | None, reason: str, **fields: Any) -> Decision:
        return Decision(
            outcome=outcome,
            rep_id=fields.get("rep_id"),
            team_id=fields.get("team_id"),
            rule_id=rule.id if rule else None,
            ruleset_version=self.rules.version,
            method=fields.get("method"),
            candidates=list(self.candidates.values()),
            reason=reason,
            hold_until=fields.get("hold_until"),
            rotation=fields.get("rotation", {}),
            account=self.account,
        )

    def team(self, team_id: str) -> Team:
        # An unknown team still gets a queue: a typo in the rules parks leads visibly instead of losing them.
        return self.teams.get(team_id) or Team(id=team_id, name=team_id)

    def queued(self, team_id: str, rule: Rule | None, why: str) -> Decision:
        known = "" if team_id in self.teams else f" (team '{team_id}' is not in the roster)"
        reason = f"{_rule_phrase(rule)}; {why}, so the lead waits in team '{team_id}' queue{known}."
        reason += _exclusion_summary(list(self.candidates.values()))
        return self.decision("queued", rule, reason, team_id=team_id)

    # actions --------------------------------------------------------------------

    def execute(self, action: Action, rule: Rule | None, options: RuleOptions) -> Decision | None:
        if action.kind == "nurture":
            return self.decision("nurture", rule, f"{_rule_phrase(rule)}: the lead goes to nurture, not to a rep.")
        sticky = self.sticky(rule)
        if sticky is not None:
            return sticky
        if action.kind == "account_owner":
            return self.account_owner(action, rule, options)
        if action.kind == "rep":
            return self.direct(action, rule, options)
        return self.team_rotation(action, rule, options)

    def sticky(self, rule: Rule | None) -> Decision | None:
        if self.sticky_checked or not self.rules.sticky_duplicates:
            return None
        self.sticky_checked = True
        duplicate_of = lookup(self.view, "duplicate_of")
        if not duplicate_of or not self.previous_rep or self.previous_rep not in self.reps:
            return None
        rep = self.reps[self.previous_rep]
        candidate = self.check(rep, RuleOptions(), fit=False)
        if not candidate.eligible:
            return None
        return self.decision(
            "assigned",
            rule,
            f"{_rule_phrase(rule)}; the lead duplicates one held by {rep.id}, who is available,"
            " so it goes back to the same rep.",
            rep_id=rep.id,
            team_id=rep.team,
            method="previous_rep",
        )

    def account_owner(self, action: Action, rule: Rule | None, options: RuleOptions) -> Decision | None:
        owner = self.reps.get(self.account.owner) if self.account else None
        if owner is not None:
            # Ownership outranks capacity and territory; availability and working hours still apply,
            # because a hot lead should not wait for an owner who is asleep or on leave.
            candidate = self.check(owner, options, fit=False)
            if candidate.eligible:
                return self.decision(
                    "assigned",
                    rule,
                    f"{_rule_phrase(rule)}; {owner.id} owns the account ({_matched_by(self.account)})"
                    " and is available.",
                    rep_id=owner.id,
                    team_id=owner.team,
                    method="account_owner",
                )
        if action.fallback is not None:
            return self.execute(action.fallback, rule, options)
        return None

    def direct(self, action: Action, rule: Rule | None, options: RuleOptions) -> Decision | None:
        rep = self.reps.get(action.rep or "")
        if rep is not None:
            candidate = self.check(rep, options)
            if candidate.eligible:
                return self.decision(
                    "assigned",
                    rule,
                    f"{_rule_phrase(rule)}; it names {rep.id} directly and they are eligible.",
                    rep_id=rep.id,
                    team_id=rep.team,
                    method="direct",
                )
        if action.fallback is not None:
            return self.execute(action.fallback, rule, options)
        team_id = (rep.team if rep else None) or self.rules.fallback_team
        why = f"rep '{action.rep}' is not eligible" if rep else f"rep '{action.rep}' is not in the roster"
        return self.queued(team_id, rule, why)

    def prefer_speakers(self, pool: list[Rep]) -> tuple[list[Rep], str]:
        """Narrow the pool to reps who speak the lead's language, when at least one of them does."""
        language = lead_language(self.view)
        speakers = [rep for rep in pool if language and language in rep.languages]
        if not speakers or len(speakers) == len(pool):
            return pool, ""
        speaker_ids = {rep.id for rep in speakers}
        for rep in pool:
            if rep.id not in speaker_ids:
                self.candidates[rep.id] = Candidate(
                    rep.id, False, [*self.candidates[rep.id].excluded_because, "language"]
                )
        return speakers, f" Reps who speak '{language}' were preferred."

    def team_rotation(self, action: Action, rule: Rule | None, options: RuleOptions) -> Decision | None:
        team = self.team(action.team or self.rules.fallback_team)
        method = action.method or (self.rules.fallback_method if rule is None else None) or team.method
        members = self.members.get(team.id, ())
        checked = [self.check(rep, options) for rep in members]
        # Present (rep.is_available): active and not out of office, as each check has just worked out.
        present = {
            rep.id: rep.weight
            for rep, candidate in zip(members, checked, strict=True)
            if rep.status == "active" and "out_of_office" not in candidate.excluded_because
        }
        eligible = [self.reps[c.rep_id] for c in checked if c.eligible]
        only_hours = [self.reps[c.rep_id] for c in checked if c.excluded_because == ["outside_hours"]]
        note = ""
        if not eligible and only_hours:
            if options.outside_hours == "hold":
                starts = [
                    (start, rep.id)
                    for rep in only_hours
                    if (start := next_working_time(self.now, hours=rep.hours, tz=rep.timezone)) is not None
                ]
                if starts:
                    hold_until, first = min(starts)
                    reason = (
                        f"{_rule_phrase(rule)}; nobody in team '{team.id}' who could take it is working"
                        f" now, so the lead is held until {hold_until.isoformat()} when {first} starts."
                    )
                    reason += _exclusion_summary(checked)
                    return self.decision("held", rule, reason, team_id=team.id, hold_until=hold_until)
            elif options.outside_hours == "assign":
                eligible = only_hours
                note = " Nobody was working, so reps outside their hours were considered."
        if not eligible:
            if action.fallback is not None:
                return self.execute(action.fallback, rule, options)
            return self.queued(team.id, rule, f"no rep in team '{team.id}' can take the lead now")
        if options.prefer_language:
            eligible, preferred = self.prefer_speakers(eligible)
            note += preferred
            checked = [self.candidates[rep.id] for rep in members]

        if method == "least_loaded":
            fewest = min(self.loads.get(rep.id, _IDLE).open_leads for rep in eligible)
            pool = {rep.id: 1 for rep in eligible if self.loads.get(rep.id, _IDLE).open_leads == fewest}
            how = f"it has the fewest open leads ({fewest}) among {len(eligible)} eligible"
        elif method == "round_robin":
            pool = {rep.id: 1 for rep in eligible}
            how = f"it is next in round robin among {len(eligible)} eligible"
        else:
            pool = {rep.id: rep.weight for rep in eligible}
            how = f"it is next in weighted rotation among {len(eligible)} eligible (weight"
        winner, state = rotate(pool, present, self.rotation.get(team.id, {}))
        if method == "weighted":
            how += f" {pool[winner]} of {sum(pool.values())})"
        elif method == "least_loaded" and len(pool) > 1:
            how += f", rotation broke a {len(pool)}-way tie"
        reason = f"{_rule_phrase(rule)}; team '{team.id}' by {method}: {winner} won because {how}."
        reason += note + _exclusion_summary(checked)
        return self.decision(
            "assigned",
            rule,
            reason,
            rep_id=winner,
            team_id=team.id,
            method=method,
            rotation={team.id: state},
        )


@dataclass(frozen=True)
class FirstMatch:
    """`rules.first_match(view)` as the caller already worked it out for this view and rules (None: no rule)."""

    match: tuple[int, Rule] | None


def route(
    view: Mapping[str, Any],
    *,
    rules: RoutingRules,
    teams: Sequence[Team],
    reps: Sequence[Rep],
    loads: Mapping[str, RepLoad],
    rotation: Mapping[str, Mapping[str, int]],
    accounts: Mapping[str, str] | AccountBook,
    previous_rep: str | None,
    exclude: frozenset[str] = frozenset(),
    now: datetime,
    first: FirstMatch | None = None,
    index: RosterIndex | None = None,
) -> Decision:
    """Decide where one lead goes: first matching rule, then affinity, eligibility and rotation. `first`: the
    first matching rule of this view under these rules, when the caller has evaluated the conditions already;
    `index`: RosterIndex.of(teams, reps), when the caller keeps one."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    router = _Router(
        view, rules, teams, reps, loads, rotation, accounts, previous_rep, exclude, now.astimezone(UTC), index
    )
    start = 0
    while (match := first.match if first and not start else rules.first_match(view, start=start)) is not None:
        position, rule = match
        decision = router.execute(rule.action, rule, rule.options)
        if decision is not None:
            return decision
        start = position + 1  # an account_owner rule with no owner and no fallback passes the lead on
    fallback = Action(kind="team", team=rules.fallback_team, method=rules.fallback_method)
    decision = router.execute(fallback, None, rules.default_options)
    assert decision is not None  # a team action always decides (assign, hold or queue)
    return decision
