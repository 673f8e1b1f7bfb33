"""Which account a lead belongs to: by its company domain, a parent of it, or the company's name.

An account has an owner and any number of domains. A lead matches, in this order of trust:
1. `domain`: its company domain (enrichment, else the email's) is one of the account's domains;
2. `parent_domain`: a parent of that domain up to the registrable domain is, so `jane@uk.acme.com` finds the owner
   of `acme.com` (the registrable domain comes from the Public Suffix List, so `acme.co.uk` is never cut to `co.uk`
   and `foo.github.io` never matches `github.io`);
3. `company_name`: the company name the lead typed (or enrichment found) equals the account's name once case,
   punctuation and legal suffixes are set aside (`ACME, Inc.` == `Acme`), and only when exactly one account has it.
Free-mail domains never reach this far: enrichment's domain is empty for them, and the email's own domain would
only match an account that lists gmail.com, which no operator does on purpose.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from common.companies import company_key, domain_chain, normalize_domain, registrable_domain
from routing.domain.rules import lookup

__all__ = ["company_key", "domain_chain", "normalize_domain", "registrable_domain"]


@dataclass(frozen=True)
class Account:
    id: str
    owner: str
    name: str | None = None
    domains: tuple[str, ...] = ()


@dataclass(frozen=True)
class AccountMatch:
    """How a lead was matched to an account: the `match` block of the decision and of lead.assigned."""

    account_id: str
    owner: str
    method: str  # "domain" | "parent_domain" | "company_name"
    value: str  # the domain or the normalized company name that matched

    def to_dict(self) -> dict[str, str]:
        return {"account_id": self.account_id, "owner": self.owner, "method": self.method, "value": self.value}


@dataclass
class AccountBook:
    """Accounts indexed by domain and by company key; built from the rows a lead could match (or all of them)."""

    by_domain: dict[str, Account] = field(default_factory=dict)
    by_name: dict[str, dict[str, Account]] = field(default_factory=dict)  # company key -> account id -> account

    @classmethod
    def of(cls, accounts: Iterable[Account]) -> AccountBook:
        book = cls()
        for account in accounts:
            for domain in account.domains:
                book.by_domain[domain.lower()] = account
            key = company_key(account.name)
            if key is not None:
                book.by_name.setdefault(key, {})[account.id] = account
        return book

    @classmethod
    def from_owners(cls, owners: Mapping[str, str]) -> AccountBook:
        """The older shape, domain -> owner: each domain its own account."""
        return cls.of(Account(id=d.lower(), owner=o, domains=(d.lower(),)) for d, o in owners.items())

    def match(self, view: Mapping[str, Any]) -> AccountMatch | None:
        """The lead's account, by domain, then parent domain, then a company name that only one account has."""
        if not self.by_domain and not self.by_name:
            return None  # no account the lead could match (a batch's book holds only the accounts of its keys)
        for path in ("enrichment.domain", "enrichment.company.domain", "lead.email"):
            chain = _chain(lookup(view, path))
            for depth, domain in enumerate(chain):
                account = self.by_domain.get(domain)
                if account is not None:
                    method = "domain" if depth == 0 else "parent_domain"
                    return AccountMatch(account.id, account.owner, method, domain)
        for path in ("enrichment.company.name", "lead.company"):
            key = _company(lookup(view, path))
            found = list(self.by_name.get(key or "", {}).values())
            if len(found) == 1:  # two accounts of the same name: a guess would be wrong half the time
                return AccountMatch(found[0].id, found[0].owner, "company_name", key or "")
        return None


@lru_cache(maxsize=8192)
def _host_chain(host: str) -> tuple[str, ...]:
    """A normalized host's domain_chain (the host, then each parent down to its registrable domain)."""
    top = registrable_domain(host)
    if top is None:
        return ()
    labels = host.split(".")
    chain = tuple(".".join(labels[i:]) for i in range(len(labels)))
    return chain[: chain.index(top) + 1]


def _chain(value: Any) -> tuple[str, ...]:
    """domain_chain of a view value, worked out once per host: a batch's emails share a few company domains."""
    host = normalize_domain(value)
    return _host_chain(host) if host is not None else ()


@lru_cache(maxsize=8192)
def _name_key(name: str) -> str | None:
    return company_key(name)


def _company(value: Any) -> str | None:
    """company_key of a view value, worked out once per distinct name (a batch's leads repeat a few companies)."""
    return _name_key(value) if isinstance(value, str) else None


def lead_match_keys(view: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """The domains and company keys a store must look up to build the AccountBook for one lead."""
    domains: list[str] = []
    for path in ("enrichment.domain", "enrichment.company.domain", "lead.email"):
        domains.extend(d for d in _chain(lookup(view, path)) if d not in domains)
    names = [key for key in (_company(lookup(view, p)) for p in ("enrichment.company.name", "lead.company")) if key]
    return domains, sorted(set(names))


@dataclass(frozen=True)
class AccountSpec:
    """One account as an operator writes it (seed file, API or CSV line): its domains share one owner."""

    id: str
    owner: str
    name: str | None
    domains: tuple[str, ...]


class AccountsCsvError(ValueError):
    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


CSV_COLUMNS = ("account", "name", "domains", "owner")


def parse_accounts_csv(text: str) -> list[AccountSpec]:
    """`account,name,domains,owner` lines (domains separated by `;` or spaces); every bad line is named at once."""
    import csv
    import io

    reader = csv.DictReader(io.StringIO(text))
    header = [c.strip().lower() for c in reader.fieldnames or []]
    missing = [c for c in ("domains", "owner") if c not in header]
    if missing:
        raise AccountsCsvError([f"line 1: missing column(s) {', '.join(missing)} (expected {','.join(CSV_COLUMNS)})"])
    reader.fieldnames = header
    specs: list[AccountSpec] = []
    errors: list[str] = []
    for row in reader:
        line = reader.line_num
        domains = tuple(
            d for d in (normalize_domain(x) for x in re.split(r"[;\s]+", row.get("domains") or "") if x) if d
        )
        owner = (row.get("owner") or "").strip()
        problems = []
        if not domains:
            problems.append("domains: at least one company domain like acme.com")
        elif any(registrable_domain(d) is None for d in domains):
            problems.append("domains: a public suffix (like co.uk) is not a company domain")
        if not owner:
            problems.append("owner: a rep id is required")
        if problems:
            errors.extend(f"line {line}: {p}" for p in problems)
            continue
        name = (row.get("name") or "").strip() or None
        account_id = (row.get("account") or "").strip() or domains[0]
        specs.append(AccountSpec(id=account_id, owner=owner, name=name, domains=domains))
    if errors:
        raise AccountsCsvError(errors)
    return specs
