"""A rule regex answers yes or no exactly as the RE2 package's own `search` does."""

from __future__ import annotations

import pytest

from common.conditions.regex import compile_regex

PATTERNS = [
    r"\bdemo(?:s|nstration)?\b|\bpric(?:e|es|ing)\b",
    r"\b(student|intern|werkstudent)\b",
    r"\.(edu|ac\.[a-z]{2})$",
    r"^$",
    r"x*",
    r"^acme",
    r"r(?:ü|ue)ckruf|\bpreis",
    r"ডেম(?:ো|ো)|দাম",
]
TEXTS = [
    "",
    " ",
    "Please send PRICING",
    "a demonstration, please",
    "demos",
    "undemocratic",
    "I am an Intern",
    "jane@uni.ac.uk",
    "jane@uni.ac.uk.com",
    "Rückruf bitte",
    "RÜCKRUF",
    "Preisliste",
    "দাম কত",
    "acme corp",
    "the acme",
    "emoji 🙂 then demo",
]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_search_answers_what_the_re2_package_answers(pattern: str) -> None:
    regex = compile_regex(pattern)
    for text in TEXTS:
        assert regex.search(text) == (regex.compiled.search(text) is not None), (pattern, text)
