"""Pure routing domain: rules, eligibility, rotation, working hours and SLAs. No I/O, clock passed in."""

from __future__ import annotations

from importlib.resources import files

from routing.domain.eligibility import EXCLUSION_REASONS, Candidate, account_domain, check_rep, lead_language
from routing.domain.engine import OUTCOMES, Decision, route
from routing.domain.geo import REGIONS, covers, territory_problem
from routing.domain.hours import (
    WorkingHours,
    is_working_time,
    next_working_time,
    sla_deadline,
    warning_times,
    working_minutes_between,
)
from routing.domain.reps import Rep, RepLoad, Team
from routing.domain.roster import RosterError, parse_hours, parse_reps
from routing.domain.rotation import rotate, settle, simulate, weighted_pick
from routing.domain.rules import Action, RoutingRules, Rule, RuleOptions
from routing.domain.rules_loader import RulesError, load_rules, load_yaml
from routing.domain.sla import (
    EscalationPolicy,
    LadderStep,
    ResolvedSla,
    SlaBlock,
    SlaPolicy,
    default_ladder,
    default_sla_policies,
    manager_for,
    next_escalation_step,
    queue_policy,
    resolve_sla,
    sla_policy_for,
)
from routing.domain.sla_grammar import parse_sla_block

DEFAULT_RULES_YAML: str = files("routing").joinpath("default_rules.yaml").read_text(encoding="utf-8")

__all__ = [
    "DEFAULT_RULES_YAML",
    "EXCLUSION_REASONS",
    "OUTCOMES",
    "REGIONS",
    "Action",
    "Candidate",
    "Decision",
    "EscalationPolicy",
    "LadderStep",
    "Rep",
    "RepLoad",
    "ResolvedSla",
    "RosterError",
    "RoutingRules",
    "Rule",
    "RuleOptions",
    "RulesError",
    "SlaBlock",
    "SlaPolicy",
    "Team",
    "WorkingHours",
    "account_domain",
    "check_rep",
    "covers",
    "default_ladder",
    "default_sla_policies",
    "is_working_time",
    "lead_language",
    "load_rules",
    "load_yaml",
    "manager_for",
    "next_escalation_step",
    "next_working_time",
    "parse_hours",
    "parse_reps",
    "parse_sla_block",
    "queue_policy",
    "resolve_sla",
    "rotate",
    "route",
    "settle",
    "simulate",
    "sla_deadline",
    "sla_policy_for",
    "territory_problem",
    "warning_times",
    "weighted_pick",
    "working_minutes_between",
]
