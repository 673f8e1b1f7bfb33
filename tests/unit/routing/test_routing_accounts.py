"""Account matching: by domain, by a parent domain up to the registrable one, by a company name only one has."""

from __future__ import annotations

from typing import Any

import pytest

from routing.domain.accounts import (
    Account,
    AccountBook,
    AccountsCsvError,
    company_key,
    domain_chain,
    lead_match_keys,
    parse_accounts_csv,
)

pytestmark = pytest.mark.unit

BOOK = AccountBook.of(
    [
        Account(id="acme", owner="ana", name="ACME, Inc.", domains=("acme.com", "acme-corp.de")),
        Account(id="globex", owner="ben", name="Globex GmbH", domains=("globex.co.uk",)),
        Account(id="initech-us", owner="cy", name="Initech", domains=("initech.com",)),
        Account(id="initech-de", owner="dee", name="Initech GmbH", domains=("initech.de",)),
    ]
)


def view(email: str | None = None, company: str | None = None, **enrichment: Any) -> dict[str, Any]:
    return {"lead": {"email": email, "company": company}, "enrichment": enrichment}


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("ACME, Inc.", "acme"),
        ("Acme Inc", "acme"),
        ("acme", "acme"),
        ("Müller GmbH & Co. KG", "müller"),
        ("Société Générale S.A.", "société générale"),
        ("  Group  ", "group"),  # a name that is only a legal word is kept, not emptied
        ("", None),
        (None, None),
    ],
)
def test_company_keys_set_aside_case_punctuation_and_legal_forms(name: str | None, key: str | None) -> None:
    assert company_key(name) == key


def test_domain_chains_stop_at_the_registrable_domain() -> None:
    assert domain_chain("jane@UK.Acme.com") == ["uk.acme.com", "acme.com"]
    assert domain_chain("https://www.shop.acme.co.uk/path") == ["shop.acme.co.uk", "acme.co.uk"]
    assert domain_chain("co.uk") == [] and domain_chain("localhost") == [] and domain_chain(None) == []


@pytest.mark.parametrize(
    ("lead", "owner", "method", "value"),
    [
        (view("pat@acme.com"), "ana", "domain", "acme.com"),
        (view("jane@uk.acme.com"), "ana", "parent_domain", "acme.com"),
        (view("kai@mail.eu.acme-corp.de"), "ana", "parent_domain", "acme-corp.de"),
        (view("x@gmail.com", domain="acme-corp.de"), "ana", "domain", "acme-corp.de"),
        (view("vp@gmail.com", company="Acme Inc"), "ana", "company_name", "acme"),
        (view("vp@gmail.com", company="globex"), "ben", "company_name", "globex"),
    ],
)
def test_a_lead_finds_its_account_and_says_how(lead: dict[str, Any], owner: str, method: str, value: str) -> None:
    match = BOOK.match(lead)
    assert match is not None
    assert (match.owner, match.method, match.value) == (owner, method, value)


def test_no_match_on_a_shared_public_suffix_or_an_ambiguous_company_name() -> None:
    assert BOOK.match(view("someone@other.co.uk")) is None  # shares only co.uk with globex.co.uk
    assert BOOK.match(view("x@gmail.com", company="Initech")) is None  # two accounts are called Initech
    assert BOOK.match(view("x@gmail.com")) is None


def test_the_older_domain_to_owner_shape_still_matches_subdomains() -> None:
    match = AccountBook.from_owners({"ACME.io": "owner"}).match(view("a@eu.acme.io"))
    assert match is not None and (match.owner, match.method) == ("owner", "parent_domain")


def test_match_keys_name_what_a_store_must_look_up() -> None:
    domains, names = lead_match_keys(view("jane@uk.acme.com", company="ACME, Inc."))
    assert domains == ["uk.acme.com", "acme.com"] and names == ["acme"]


def test_accounts_csv_parses_several_domains_and_names_every_bad_line() -> None:
    specs = parse_accounts_csv(
        'account,name,domains,owner\nacme,"ACME, Inc.",acme.com; ACME-corp.de,ana\n,,globex.co.uk,ben\n'
    )
    assert [(s.id, s.name, s.domains, s.owner) for s in specs] == [
        ("acme", "ACME, Inc.", ("acme.com", "acme-corp.de"), "ana"),
        ("globex.co.uk", None, ("globex.co.uk",), "ben"),
    ]
    with pytest.raises(AccountsCsvError) as bad:
        parse_accounts_csv("account,name,domains,owner\nx,X,,ana\ny,Y,co.uk,\n")
    assert bad.value.errors == [
        "line 2: domains: at least one company domain like acme.com",
        "line 3: domains: a public suffix (like co.uk) is not a company domain",
        "line 3: owner: a rep id is required",
    ]
    with pytest.raises(AccountsCsvError, match="missing column"):
        parse_accounts_csv("domain,owner_id\nacme.com,ana\n")
