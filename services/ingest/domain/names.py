"""People's names: splitting a full name into first and last, and joining them back, across naming orders."""

from __future__ import annotations

from ingest.domain.text import is_cjk_text

_NAME_PARTICLES = frozenset({"van", "von", "de", "da", "del", "della", "der", "den", "di", "du", "la", "le",
                             "ter", "ten", "bin", "binti", "ibn", "dos", "das", "do", "zu", "af", "av",
                             "st.", "bint", "بن", "ابن", "بنت"})  # fmt: skip
_NAME_SUFFIXES = frozenset({"jr", "sr", "ii", "iii", "iv", "phd", "md", "esq"})


def split_full_name(full: str) -> tuple[str | None, str | None]:
    tokens = full.split()
    if not tokens:
        return None, None
    if is_cjk_text(full):
        # Chinese, Japanese and Korean names are family-name first; without a space we cannot tell
        # where the family name ends, so only the full name is kept.
        if len(tokens) == 1:
            return None, None
        return " ".join(tokens[1:]), tokens[0]
    if full.count(",") == 1:
        last, _, first = full.partition(",")
        if first.strip() and last.strip() and first.strip().lower().rstrip(".") not in _NAME_SUFFIXES:
            return first.strip(), last.strip()
    if len(tokens) == 1:
        return tokens[0], None
    end = len(tokens)
    while end > 2 and tokens[end - 1].lower().strip(".,") in _NAME_SUFFIXES:
        end -= 1
    start = end - 1
    while start > 1 and tokens[start - 1].lower() in _NAME_PARTICLES:
        start -= 1
    return " ".join(tokens[:start]), " ".join(tokens[start:])


def join_name(first: str | None, last: str | None) -> str | None:
    if first and last:
        if is_cjk_text(first) and is_cjk_text(last):
            return last + first
        return f"{first} {last}"
    return first or last
