"""Rule regexes on RE2: linear-time matching, since lead text is attacker-controlled and matched in a transaction."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import re2

MAX_REGEX_LENGTH = 2_000


_UNANCHORED = re2._Anchor.UNANCHORED
_NO_MATCH = -1


@dataclass(frozen=True)
class Regex:
    """A pattern compiled once with RE2, with the text it was written as."""

    text: str
    compiled: Any  # re2._Regexp: the package ships no type information

    def search(self, value: str) -> bool:
        """True when the pattern matches anywhere in `value`.

        Asks RE2 itself (`_re2.RE2.Match` on the UTF-8 bytes): the wrapper's `search` builds a generator, byte and
        character offset maps and a match object per call, about half of a rule test's cost; only yes or no is
        wanted here. The answer is the wrapper's: it runs the same Match and tests the same first span."""
        data = value.encode()
        return self.compiled._regexp.Match(_UNANCHORED, data, 0, len(data))[0][0] != _NO_MATCH


class RegexError(ValueError):
    """A pattern RE2 cannot compile; the message says why and what to write instead."""


def _re2_options() -> Any:
    options = re2.Options()
    options.case_sensitive = False
    options.log_errors = False  # the error is returned to the caller; RE2's own log would go to stderr
    return options


_OPTIONS = _re2_options()


def compile_regex(text: str) -> Regex:
    """Compile a rule's regex with RE2: case-insensitive, matched anywhere in the value (^...$ anchors)."""
    if len(text) > MAX_REGEX_LENGTH:
        raise RegexError(f"the pattern is longer than {MAX_REGEX_LENGTH} characters")
    try:
        return Regex(text, re2.compile(text, _OPTIONS))
    except re2.error as exc:
        raise RegexError(_regex_reason(exc)) from None


def alternation(patterns: Sequence[Regex]) -> Regex | None:
    """One regex matching wherever any of `patterns` matches (RE2 finds `(?:a)|(?:b)` exactly where `a` or `b`
    does, in one search), or None when RE2 will not compile it (the patterns are then matched one by one)."""
    text = "|".join(f"(?:{regex.text})" for regex in patterns)
    try:
        return Regex(text, re2.compile(text, _OPTIONS))
    except re2.error:
        return None


def _regex_reason(exc: Exception) -> str:
    raw = exc.args[0] if exc.args else exc
    reason = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    if re.search(r"\(\?<?[=!]", reason):
        return f"{reason}: lookahead and lookbehind are not supported (RE2 matches in linear time)"
    if re.search(r"escape sequence: \\[1-9]", reason) or "\\k<" in reason:
        return f"{reason}: backreferences are not supported (RE2 matches in linear time)"
    return reason
