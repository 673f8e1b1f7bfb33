"""Job title -> (seniority, function), for English and the common European and East Asian languages.

Keyword rules, checked in order, first match wins; the vocabulary is data, in titles.yaml next to this
module. Input and patterns are folded the same way (NFKD, accents dropped, casefold), so "Geschäftsführer",
"GESCHÄFTSFÜHRER" and "Geschaeftsfuehrer" all match. German and Dutch glue words together ("Vertriebsleiter"),
so their stems are matched without word boundaries; short English acronyms ("vp", "it", "hr") need
boundaries. CJK has no word boundaries at all.
"""

from __future__ import annotations

import functools
import importlib.resources
import re
import unicodedata

import yaml

SENIORITIES: tuple[str, ...] = ("c_level", "vp", "director", "manager", "individual")
FUNCTIONS: tuple[str, ...] = (
    "sales",
    "marketing",
    "engineering",
    "product",
    "finance",
    "hr",
    "operations",
    "it",
    "legal",
    "executive",
    "other",
)


def fold(text: str) -> str:
    """Accent-free, case-folded, width-normalised form used for keyword matching."""
    # Kana lose their voicing marks too (ジ -> シ); harmless, as the patterns are folded the same way.
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()


def _compile(patterns: list[str]) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{fold(p)})" for p in patterns))


Rules = tuple[tuple[str, re.Pattern[str]], ...]


def _load_vocabulary() -> tuple[Rules, Rules]:
    """The seniority and function rules of titles.yaml (shipped with the package), compiled once at import."""
    text = importlib.resources.files("scoring.domain").joinpath("titles.yaml").read_text(encoding="utf-8")
    data = yaml.safe_load(text)

    def rules(section: str, allowed: tuple[str, ...]) -> Rules:
        compiled: list[tuple[str, re.Pattern[str]]] = []
        for entry in data[section]:
            ((name, patterns),) = entry.items()
            # A typo in the data file must fail loudly at start-up, not classify titles into a new category.
            if name not in allowed:
                raise ValueError(f"titles.yaml: unknown {section} {name!r}")
            compiled.append((name, _compile(patterns)))
        return tuple(compiled)

    return rules("seniority", SENIORITIES), rules("function", FUNCTIONS)


# Order matters: the first rule that matches decides (see the head of titles.yaml).
_SENIORITY_RULES, _FUNCTION_RULES = _load_vocabulary()


@functools.lru_cache(maxsize=8192)
def parse_title(title: str | None) -> tuple[str | None, str | None]:
    """(seniority, function) of a job title; (None, None) when there is no title.

    Cached: titles repeat ("CEO", "VP Sales"), and each is some twenty regular-expression searches."""
    if title is None or not title.strip():
        return None, None
    text = fold(title)
    text = re.sub(r"[\s/,;|()\[\]_]+", " ", text).strip()
    seniority = next((level for level, pattern in _SENIORITY_RULES if pattern.search(text)), "individual")
    function = next((name for name, pattern in _FUNCTION_RULES if pattern.search(text)), None)
    if function is None:
        function = "executive" if seniority == "c_level" else "other"
    return seniority, function
