"""The firmographics CSV and enrichment: which facts come from where, and when enrichment is partial."""

from __future__ import annotations

import json
import random
from typing import Any

import phonenumbers
import pytest
from phonenumbers import PhoneNumberFormat, PhoneNumberType

from scoring.domain import (
    Firmographic,
    FirmographicsError,
    domain_candidates,
    enrich,
    lookup_domain,
    parse_firmographics_csv,
)
from scoring.domain.phones import _LINE_TYPES, phone_facts

pytestmark = pytest.mark.unit

CSV = """domain,name,employee_band,industry,country,revenue_band
acme.io,Acme GmbH,201-500,Software,de,10M-50M
https://www.Globex.com/about,"Globex, Inc.",10001+,Manufacturing,US,1B+
tiny.example,,,,,

"""


def test_parse_firmographics_csv() -> None:
    rows = parse_firmographics_csv(CSV)
    assert rows == [
        Firmographic("acme.io", "Acme GmbH", "201-500", "Software", "DE", "10M-50M"),
        Firmographic("globex.com", "Globex, Inc.", "10001+", "Manufacturing", "US", "1B+"),
        Firmographic("tiny.example", None, None, None, None, None),
    ]


def test_firmographics_errors_name_every_bad_line() -> None:
    text = (
        "domain,name,employee_band,industry,country,revenue_band\n"
        "acme.io,Acme,201-500,Software,DE,\n"
        "not a domain,X,,,,\n"
        "ACME.io,Acme again,,,,\n"
        "globex.com,Globex,200-500,,,\n"
        "initech.com,Initech,,,Germany,\n"
        "short.com,Short\n"
    )
    with pytest.raises(FirmographicsError) as caught:
        parse_firmographics_csv(text)
    lines = [line for line, _ in caught.value.errors]
    assert lines == [3, 4, 5, 6, 7]
    message = str(caught.value)
    assert "line 4: duplicate domain 'acme.io' (first on line 2)" in message
    assert "line 5: unknown employee_band '200-500'" in message
    assert "line 7: expected 6 columns, found 2" in message


def test_firmographics_header_is_checked() -> None:
    with pytest.raises(FirmographicsError, match="line 1: header"):
        parse_firmographics_csv("domain,company,size\nacme.io,Acme,1-10\n")


def test_firmographics_line_numbers_count_multiline_cells() -> None:
    text = 'domain,name,employee_band,industry,country,revenue_band\nacme.io,"Acme\nGmbH",,,,\nbad,,,,,\n'
    with pytest.raises(FirmographicsError) as caught:
        parse_firmographics_csv(text)
    assert caught.value.errors == [(4, "invalid domain 'bad'")]


LEAD: dict[str, Any] = {
    "email": "jane@acme.io",
    "phone": "+4915112345678",
    "job_title": "VP Sales",
    "website": "https://other.example",
}
ACME = Firmographic("acme.io", "Acme GmbH", "201-500", "Software", "DE", None)


@pytest.mark.parametrize(
    ("lead", "domain"),
    [
        ({"email": "jane@acme.io", "website": "https://other.example"}, "acme.io"),
        ({"email": "info@acme.io"}, "acme.io"),
        ({"email": "jane@gmail.com", "website": "https://www.acme.io/en"}, "acme.io"),
        ({"email": "jane@mailinator.com"}, None),
        ({}, None),
    ],
)
def test_lookup_domain_prefers_a_work_email_then_the_website(lead: dict[str, Any], domain: str | None) -> None:
    assert lookup_domain(lead) == domain


def test_enrich_collects_the_facts_and_where_they_came_from() -> None:
    enrichment = enrich(LEAD, firmographic=ACME, provider_result=None, provider_status="disabled")
    assert enrichment.email_type == "corporate"
    assert enrichment.domain == "acme.io"
    assert enrichment.company == ACME
    assert (enrichment.phone_country, enrichment.phone_line_type) == ("DE", "mobile")
    assert (enrichment.seniority, enrichment.function) == ("vp", "sales")
    assert enrichment.partial is False
    sources = {step["step"]: (step["source"], step["ok"]) for step in enrichment.steps}
    assert sources == {
        "email_type": ("email_domain_lists", True),
        "domain": ("email", True),
        "firmographics": ("firmographics_table", True),
        "phone": ("phonenumbers", True),
        "title": ("title_parser", True),
        "provider": ("provider", False),
    }


@pytest.mark.parametrize(
    ("status", "partial"),
    [("ok", False), ("disabled", False), ("unavailable", True), ("timeout", True), ("circuit_open", True)],
)
def test_partial_when_the_provider_was_wanted_but_did_not_answer(status: str, partial: bool) -> None:
    result = {"company": {"industry": "Software"}} if status == "ok" else None
    enrichment = enrich(LEAD, firmographic=None, provider_result=result, provider_status=status)
    assert enrichment.partial is partial
    provider_step = next(step for step in enrichment.steps if step["step"] == "provider")
    assert provider_step["detail"] == status


def test_unknown_provider_status_is_refused() -> None:
    with pytest.raises(ValueError, match="provider_status"):
        enrich(LEAD, firmographic=None, provider_result=None, provider_status="maybe")


def test_provider_fills_only_what_the_table_left_empty() -> None:
    table_row = Firmographic("acme.io", "Acme GmbH", None, "Software", "DE", None)
    provider = {
        "company": {
            "name": "ACME Corp",
            "employee_band": "51-200",
            "industry": "Retail",
            "revenue_band": "huge",
        },
        "seniority": "director",  # the title already says vp: ignored
        "function": "marketing",  # the title already says sales: ignored
    }
    enrichment = enrich(LEAD, firmographic=table_row, provider_result=provider, provider_status="ok")
    assert enrichment.company == Firmographic("acme.io", "Acme GmbH", "51-200", "Software", "DE", "huge")
    assert (enrichment.seniority, enrichment.function) == ("vp", "sales")
    filled = next(step for step in enrichment.steps if step["step"] == "company_from_provider")
    assert filled == {
        "step": "company_from_provider",
        "source": "provider",
        "ok": True,
        "detail": ["employee_band", "revenue_band"],
    }


def test_provider_fills_seniority_when_the_title_says_nothing_and_ignores_unknown_values() -> None:
    lead = {**LEAD, "job_title": None}
    provider = {"seniority": "c_level", "function": "wizardry", "company": {"employee_band": "lots"}}
    enrichment = enrich(lead, firmographic=None, provider_result=provider, provider_status="ok")
    assert enrichment.seniority == "c_level"
    assert enrichment.function is None
    assert enrichment.company is None
    assert enrichment.provider == provider


def test_provider_result_is_dropped_unless_status_is_ok() -> None:
    enrichment = enrich(LEAD, firmographic=None, provider_result={"seniority": "vp"}, provider_status="timeout")
    assert enrichment.provider is None


def test_as_fields_flattens_for_conditions() -> None:
    provider = {"company": {"tech": {"crm": "salesforce"}}, "linkedin_followers": 1200}
    enrichment = enrich(LEAD, firmographic=ACME, provider_result=provider, provider_status="ok")
    fields = enrichment.as_fields()
    assert fields["enrichment.email_type"] == "corporate"
    assert fields["enrichment.company.employee_band"] == "201-500"
    assert fields["enrichment.company.industry"] == "Software"
    assert fields["enrichment.seniority"] == "vp"
    assert fields["enrichment.provider.company.tech.crm"] == "salesforce"
    assert fields["enrichment.provider.linkedin_followers"] == 1200


def test_as_fields_without_a_company_has_empty_company_fields() -> None:
    enrichment = enrich({"email": "x@gmail.com"}, firmographic=None, provider_result=None, provider_status="disabled")
    fields = enrichment.as_fields()
    assert fields["enrichment.company.employee_band"] is None
    assert fields["enrichment.email_type"] == "free"
    assert fields["enrichment.domain"] is None


def test_to_dict_round_trips_through_json() -> None:
    enrichment = enrich(LEAD, firmographic=ACME, provider_result=None, provider_status="timeout")
    data = json.loads(json.dumps(enrichment.to_dict()))
    assert data["company"]["name"] == "Acme GmbH"
    assert data["partial"] is True
    assert data["steps"][0]["step"] == "email_type"


@pytest.mark.parametrize(
    ("domain", "candidates"),
    [
        # Down to the registrable domain (Public Suffix List), never the public suffix itself.
        ("mail.eu.acme.co.uk", ["mail.eu.acme.co.uk", "eu.acme.co.uk", "acme.co.uk"]),
        ("jane@uk.acme.com", ["uk.acme.com", "acme.com"]),
        ("foo.github.io", ["foo.github.io"]),
        ("co.uk", []),
        ("https://www.Acme.io/pricing", ["acme.io"]),
        (None, []),
    ],
)
def test_domain_candidates_for_the_table_lookup(domain: str | None, candidates: list[str]) -> None:
    assert domain_candidates(domain) == candidates


def test_enrichment_says_whether_the_company_matched_by_its_own_domain_or_a_parent() -> None:
    own = enrich(LEAD, firmographic=ACME, provider_result=None, provider_status="disabled")
    assert own.to_dict()["match"] == {"method": "domain", "value": "acme.io"}
    subsidiary = {**LEAD, "email": "jane@uk.acme.io"}
    parent = enrich(subsidiary, firmographic=ACME, provider_result=None, provider_status="disabled")
    assert parent.to_dict()["match"] == {"method": "parent_domain", "value": "acme.io"}
    none = enrich(subsidiary, firmographic=None, provider_result=None, provider_status="disabled")
    assert none.to_dict()["match"] is None


def test_phone_facts_answer_as_libphonenumbers_validity_check_for_every_region() -> None:
    # phone_facts asks a number's type alone (valid exactly when the type is known); the reference asks
    # is_valid_number first, as the first release did.
    def reference(text: str) -> dict[str, str | None]:
        try:
            number = phonenumbers.parse(text, None)
        except phonenumbers.NumberParseException:
            return {"country": None, "line_type": "invalid"}
        if not phonenumbers.is_valid_number(number):
            return {"country": None, "line_type": "invalid"}
        region = phonenumbers.region_code_for_number(number)
        country = region if region and region.isalpha() and region != "ZZ" else None
        return {"country": country, "line_type": _LINE_TYPES.get(phonenumbers.number_type(number), "unknown")}

    rng = random.Random(13)
    numbers = ["+80012345678", "+441624123456", "+447700900123", "+12025550123", "+1 800 555 0199", "abc", "+1"]
    for code, regions in phonenumbers.COUNTRY_CODE_TO_REGION_CODE.items():
        numbers += [f"+{code}{rng.randrange(10**6, 10**10)}" for _ in range(3)]
        for region in regions:
            for kind in (PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE, PhoneNumberType.TOLL_FREE):
                example = phonenumbers.example_number_for_type(region, kind)
                if example is not None:
                    numbers.append(phonenumbers.format_number(example, PhoneNumberFormat.E164))
    answers = [phone_facts(text) for text in numbers]
    assert answers == [reference(text) for text in numbers]
    assert sum(answer["line_type"] not in ("invalid", None) for answer in answers) > 300  # valid ones too
