"""Company identity shared by scoring and routing: registrable domains (Public Suffix List) and company-name keys.

Pure functions, no I/O: the suffix list ships inside the `publicsuffixlist` package and is read once per process.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from publicsuffixlist import PublicSuffixList

# Legal forms dropped from the end of a company name before comparing, lower-cased and without dots.
LEGAL_SUFFIXES = frozenset(
    {
        "inc", "incorporated", "corp", "corporation", "co", "company", "llc", "llp", "lp", "ltd", "limited", "plc",
        "gmbh", "mbh", "ag", "kg", "kgaa", "ug", "ev", "se", "sa", "sas", "sarl", "srl", "spa", "sl", "slu", "bv",
        "nv", "oy", "oyj", "ab", "as", "asa", "aps", "kk", "pty", "pvt", "pte", "sdn", "bhd", "ltda", "cia", "holding",
        "holdings", "group",
    }
)  # fmt: skip
_NON_WORD = re.compile(r"[^\w]+", re.UNICODE)


@lru_cache(maxsize=1)
def _suffixes() -> PublicSuffixList:
    # The list ships inside the package: nothing is fetched, and it is read once per process.
    return PublicSuffixList()


def normalize_domain(value: str | None) -> str | None:
    """`https://www.Acme.io/pricing`, `Jane@WWW.Acme.com.` -> the lower-case host name; None when there is none."""
    if not isinstance(value, str):
        return None
    text = value.strip().lower()
    if "://" in text:
        text = text.split("://", 1)[1]
    text = text.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    text = text.rsplit("@", 1)[-1].split(":", 1)[0].strip(".").removeprefix("www.")
    if not text or any(c.isspace() for c in text):
        return None
    return text


@lru_cache(maxsize=8192)  # a routing batch asks for the same few company domains over and over
def registrable_domain(domain: str) -> str | None:
    """The part of a domain that someone registered: `uk.acme.com` -> `acme.com`, `x.acme.co.uk` -> `acme.co.uk`."""
    found: str | None = _suffixes().privatesuffix(domain)
    return found


def domain_chain(domain: str | None) -> list[str]:
    """The domain, then each parent down to its registrable domain (longest first); empty for a bare suffix."""
    host = normalize_domain(domain)
    if host is None:
        return []
    top = registrable_domain(host)
    if top is None:
        return []
    labels = host.split(".")
    chain = [".".join(labels[i:]) for i in range(len(labels))]
    return chain[: chain.index(top) + 1]


def company_key(name: str | None) -> str | None:
    """A company name reduced for comparison: `ACME, Inc.` -> `acme`, `Müller GmbH & Co. KG` -> `müller`."""
    if not isinstance(name, str):
        return None
    text = unicodedata.normalize("NFKC", name).casefold().replace(".", "").replace("&", " ")
    words = [word for word in _NON_WORD.split(text) if word]
    while len(words) > 1 and words[-1] in LEGAL_SUFFIXES:
        words.pop()
    key = " ".join(words)
    return key or None
