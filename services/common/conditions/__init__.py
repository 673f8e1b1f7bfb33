"""One condition language for scoring rulesets and routing rules: field paths, operators, comparisons, errors.

Both services write `when:` conditions the same way, in YAML (or JSON)::

    when:
      source.kind: {one_of: [web, api]}      # a field path, then one or more operators (all must hold)
      score.grade: A                          # a bare value means equals, a bare list means one_of
      any: [{lead.country: DE}, {quality.flags: {contains: phone_unparsed}}]
      not: {is_test: true}                    # combinators: all / any (lists), not (one condition)

Field paths (one fact, one path, in both services):
  lead.<field>, lead.utm.<key>, lead.click_ids|consent|custom.<key>    the lead as submitted
  enrichment.<field>, enrichment.company.<field>, enrichment.provider.<key>   what scoring derived
  source, source.id|kind|name, is_test, duplicate_of                   where the lead came from
  quality.flags                                                        what could not be read as typed
  repeat_count                                                         (scoring) earlier submissions
  score.fit|intent|grade|qualified, score.conversion.probability|status|outcomes_seen   (routing)
  The scoring ruleset's old `context.<path>` spellings still work as aliases of `<path>`.

Operators: equals, one_of, contains (substring of text; member of a list), regex (search, case-insensitive,
RE2 syntax), range ({min|gte, max|lte, gt, lt} or [min, max], inclusive unless gt/lt), exists (true/false),
not (negates the operators under it).

Comparisons, the same everywhere: text ignores case and surrounding blanks; numbers compare by value, so "50"
equals 50 (forms submit every number as text); true/false match only booleans (a count of 1 is not true);
a list value matches when any item does (contains asks for an equal item). A missing value (absent, null,
blank, an empty list or map) matches nothing except `exists: false`, so `not` of a test on it holds.

Regexes run on RE2, which matches in linear time: lead text is attacker-controlled and the match runs inside
the consumer's transaction. RE2 refuses backreferences and lookaround, and its \\w, \\d, \\b are ASCII: for
other scripts spell the class out (\\pL letters, \\pN digits).

Modules: paths (which field paths exist, aliases, a service's Catalog), operators (compiled conditions,
evaluation and comparisons), regex (RE2), documents (guards on a rules document and its YAML nodes), compiler
(conditions from YAML nodes, with lines and paths). Import from the package: `from common.conditions import X`.
"""

from common.conditions.compiler import ConditionCompiler
from common.conditions.documents import (
    MAX_DEPTH,
    MAX_EXPANDED_NODES,
    DocumentRefused,
    Problem,
    child,
    compose,
    document_problems,
    expanded_size,
    is_null,
    load_document,
    node_kind,
    node_line,
    represent,
)
from common.conditions.operators import (
    ALWAYS,
    COMBINATORS,
    MAX_MATCH_LENGTH,
    OPERATORS,
    RANGE_KEYS,
    AllOf,
    AnyOf,
    Bounds,
    Condition,
    FieldTest,
    Not,
    Resolver,
    Scalar,
    apply_test,
    describe,
    evaluate,
    is_present,
    walk,
)
from common.conditions.paths import (
    ALIAS_PREFIX,
    COUNTRY_FIELDS,
    ENRICHMENT_FIELDS,
    LEAD_FIELDS,
    LEAD_MAPS,
    OTHER_FIELDS,
    ROOTS,
    Catalog,
    canonical_path,
    known_field_paths,
    suggest,
)
from common.conditions.regex import MAX_REGEX_LENGTH, Regex, RegexError, compile_regex

__all__ = [
    "ALIAS_PREFIX",
    "ALWAYS",
    "COMBINATORS",
    "COUNTRY_FIELDS",
    "ENRICHMENT_FIELDS",
    "LEAD_FIELDS",
    "LEAD_MAPS",
    "MAX_DEPTH",
    "MAX_EXPANDED_NODES",
    "MAX_MATCH_LENGTH",
    "MAX_REGEX_LENGTH",
    "OPERATORS",
    "OTHER_FIELDS",
    "RANGE_KEYS",
    "ROOTS",
    "AllOf",
    "AnyOf",
    "Bounds",
    "Catalog",
    "Condition",
    "ConditionCompiler",
    "DocumentRefused",
    "FieldTest",
    "Not",
    "Problem",
    "Regex",
    "RegexError",
    "Resolver",
    "Scalar",
    "apply_test",
    "canonical_path",
    "child",
    "compile_regex",
    "compose",
    "describe",
    "document_problems",
    "evaluate",
    "expanded_size",
    "is_null",
    "is_present",
    "known_field_paths",
    "load_document",
    "node_kind",
    "node_line",
    "represent",
    "suggest",
    "walk",
]
