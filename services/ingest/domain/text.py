"""Text cleaning that never rewrites a person's name: only invisible, unsafe characters go."""

from __future__ import annotations

import functools
import re
import unicodedata

# Bidi embeddings/overrides/isolates can visually reorder what a sales rep sees (Trojan Source style
# spoofing) and zero-width spaces/BOMs only hide text, so they go. ZWJ/ZWNJ (U+200D/U+200C) stay:
# Bengali, Arabic, Persian and emoji need them to shape correctly. LRM/RLM are harmless marks and stay.
_UNSAFE_FORMAT = frozenset("\u200b\u2060\ufeff\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_ASCII_SPACE_RUN = re.compile(r" {2,}")
# Anything clean_line might change; most input has none of it, and a regex scan is far cheaper
# than the per-character loop.
_NEEDS_CLEANING = re.compile(
    "[\x00-\x1f\x7f-\x9f\u2028\u2029\u200b\u2060\ufeff\u202a-\u202e\u2066-\u2069\ud800-\udfff]| {2,}"
)


# Truthy when clean_line would do more to a value than strip its ends (the bound search: no call of our own).
needs_cleaning = _NEEDS_CLEANING.search


def _drop_char(ch: str, keep: str) -> bool:
    if ch in keep:
        return False
    if ch in _UNSAFE_FORMAT:
        return True
    # Cc = C0/C1 controls, Cs = lone surrogates (not valid text), Cn-free; categories beyond these
    # (marks, letters, ZWJ/ZWNJ which are Cf) are kept exactly as typed.
    return unicodedata.category(ch) in ("Cc", "Cs")


def clean_line(value: str) -> str:
    """Single-line text: control chars removed (line breaks/tabs become a space), spaces collapsed, trimmed.

    No Unicode normalization on purpose: NFC rewrites e.g. Bengali U+09DF into two code points,
    and a name must come back exactly as the person typed it.
    """
    if not _NEEDS_CLEANING.search(value):
        return value.strip()
    out = []
    for ch in value:
        if ch in "\t\n\r\v\f\x85\u2028\u2029":
            out.append(" ")
        elif not _drop_char(ch, ""):
            out.append(ch)
    return _ASCII_SPACE_RUN.sub(" ", "".join(out)).strip()


def clean_multiline(value: str) -> str:
    """Free text (messages): keeps line breaks and tabs, drops other control chars, trims the ends."""
    value = value.replace("\r\n", "\n").replace("\r", "\n")
    return "".join(ch for ch in value if not _drop_char(ch, "\n\t")).strip()


_CJK_RANGES = (
    (0x1100, 0x11FF),  # Hangul Jamo
    (0x2E80, 0x2FDF),  # CJK radicals
    (0x3040, 0x30FF),  # Hiragana, Katakana
    (0x3100, 0x312F),  # Bopomofo
    (0x3130, 0x318F),  # Hangul compatibility Jamo
    (0x31F0, 0x31FF),  # Katakana phonetic extensions
    (0x3400, 0x4DBF),  # CJK extension A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xAC00, 0xD7AF),  # Hangul syllables
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0x20000, 0x3FFFF),  # CJK extensions B..
)


def is_cjk(ch: str) -> bool:
    """True for Han, Kana and Hangul characters (scripts that write names family-name first)."""
    cp = ord(ch)
    return any(lo <= cp <= hi for lo, hi in _CJK_RANGES)


def is_cjk_text(value: str) -> bool:
    """True when every letter in ``value`` is CJK (spaces and punctuation ignored)."""
    if value.isascii():
        return False
    letters = [ch for ch in value if ch.isalpha()]
    return bool(letters) and all(is_cjk(ch) for ch in letters)


@functools.lru_cache(maxsize=4096)  # a lead's keys come from a small vocabulary; each is slugged several times
def key_slug(key: str) -> str:
    """Loose form of a field key for alias matching: ``"First Name"``, ``first-name`` -> ``first_name``."""
    slug = re.sub(r"[\s\-.]+", "_", key.strip().lower())
    return slug.strip("_?:*")
