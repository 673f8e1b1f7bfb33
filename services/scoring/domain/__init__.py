"""The pure domain of the scoring service: enrichment, rule-based scores, outcome learning. No I/O."""

from scoring.domain.bayes import (
    OUTCOME_FEATURES,
    Conversion,
    OutcomeCounts,
    batch_features,
    conversion_probability,
    outcome_features,
)
from scoring.domain.conditions import OPERATORS
from scoring.domain.emails import EMAIL_TYPES, classify_email, email_domain
from scoring.domain.enrichment import PROVIDER_STATUSES, Enrichment, EnrichmentMemo, enrich, lookup_domain
from scoring.domain.firmographics import (
    EMPLOYEE_BANDS,
    Firmographic,
    FirmographicsError,
    domain_candidates,
    normalize_domain,
    parse_firmographics_csv,
)
from scoring.domain.phones import phone_facts
from scoring.domain.ruleset import GRADES, Qualification, Rule, Ruleset, RulesetError
from scoring.domain.ruleset_loader import DEFAULT_RULESET_YAML, load_ruleset
from scoring.domain.score import FiredRule, Score, ScoreDicts, score_lead
from scoring.domain.titles import FUNCTIONS, SENIORITIES, parse_title

__all__ = [
    "DEFAULT_RULESET_YAML",
    "EMAIL_TYPES",
    "EMPLOYEE_BANDS",
    "FUNCTIONS",
    "GRADES",
    "OPERATORS",
    "OUTCOME_FEATURES",
    "PROVIDER_STATUSES",
    "SENIORITIES",
    "Conversion",
    "Enrichment",
    "EnrichmentMemo",
    "FiredRule",
    "Firmographic",
    "FirmographicsError",
    "OutcomeCounts",
    "Qualification",
    "Rule",
    "Ruleset",
    "RulesetError",
    "Score",
    "ScoreDicts",
    "batch_features",
    "classify_email",
    "conversion_probability",
    "domain_candidates",
    "email_domain",
    "enrich",
    "load_ruleset",
    "lookup_domain",
    "normalize_domain",
    "outcome_features",
    "parse_firmographics_csv",
    "parse_title",
    "phone_facts",
    "score_lead",
]
