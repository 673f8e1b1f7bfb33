"""normalize_lead: what a lead looks like after it enters Handoff, whatever form sent it."""

from __future__ import annotations

import json
import unicodedata
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest.domain import FieldError, LeadValidationError, NormalizedLead, NotALead, normalize_lead

pytestmark = pytest.mark.unit

NOW = datetime(2025, 3, 14, 15, 9, 26, tzinfo=UTC)


def lead(raw: dict, **kwargs) -> NormalizedLead:
    return normalize_lead(raw, now=NOW, **kwargs)


def quality_of(raw: dict, **kwargs) -> tuple[list[str], dict]:
    """(flags, raw values) of a lead that was accepted with what could not be read."""
    result = normalize_lead(raw, now=NOW, **kwargs)
    return list(result.quality_flags), dict(result.quality_raw)


def errors_of(raw: dict, **kwargs) -> dict[str, str]:
    with pytest.raises(LeadValidationError) as info:
        normalize_lead(raw, now=NOW, **kwargs)
    return {e.field: e.reason for e in info.value.errors}


# --- names: Unicode kept exactly ----------------------------------------------------------------

BENGALI = "\u09b0\u200d\u09cd\u09af\u09be\u09ac\u09c7\u09df\u09be"  # র‍্যাবেয়া: ZWJ for ra-phala, precomposed U+09DF
ARABIC = "عبد\u200cالرحمن"  # noqa: RUF001 (Arabic on purpose, with ZWNJ)
PERSIAN = "محمد\u200cرضا"  # noqa: RUF001
CHINESE = "王小明"


@pytest.mark.parametrize("name", [BENGALI, ARABIC, PERSIAN, CHINESE, "Zoë", "José", "Ærøskøbing-Ólafsdóttir"])
def test_names_round_trip_byte_for_byte(name: str) -> None:
    result = lead({"first_name": name, "last_name": name, "email": "a@example.com"})
    assert result.first_name is not None and result.last_name is not None
    assert result.first_name.encode("utf-8") == name.encode("utf-8")
    assert result.last_name.encode("utf-8") == name.encode("utf-8")


def test_bengali_is_not_nfc_normalized() -> None:
    # U+09DF has a canonical decomposition excluded from composition: NFC would change its bytes.
    assert unicodedata.normalize("NFC", BENGALI) != BENGALI
    assert lead({"full_name": BENGALI, "email": "a@example.com"}).first_name == BENGALI


def test_zwj_and_zwnj_survive_but_controls_and_bidi_overrides_do_not() -> None:
    result = lead(
        {
            "first_name": "\x00Ra\u200dhim\x07\u202e",
            "last_name": "Ka\u200cram\u200b",
            "email": "a@example.com",
        }
    )
    assert result.first_name == "Ra\u200dhim"
    assert result.last_name == "Ka\u200cram"


def test_line_breaks_in_names_become_spaces_and_whitespace_is_trimmed() -> None:
    result = lead({"name": "  Ada\n\tLovelace  ", "email": "a@example.com"})
    assert result.full_name == "Ada Lovelace"
    assert (result.first_name, result.last_name) == ("Ada", "Lovelace")


def test_message_keeps_its_line_breaks_but_loses_control_characters() -> None:
    result = lead({"message": "Hello\r\nWe need 40 seats\x1b[31m.\n\nThanks", "email": "a@example.com"})
    assert result.message == "Hello\nWe need 40 seats[31m.\n\nThanks"


def test_emoji_zwj_sequence_is_kept() -> None:
    family = "Sam \U0001f468\u200d\U0001f469\u200d\U0001f467"
    assert lead({"first_name": family, "email": "a@example.com"}).first_name == family


@pytest.mark.parametrize(
    ("full_name", "first", "last"),
    [
        ("Ada Lovelace", "Ada", "Lovelace"),
        ("Cher", "Cher", None),
        ("Mary Ann Smith", "Mary Ann", "Smith"),
        ("Jan van der Berg", "Jan", "van der Berg"),
        ("Lovelace, Ada", "Ada", "Lovelace"),
        ("Martin Luther King Jr.", "Martin Luther", "King Jr."),
        (CHINESE, None, None),
        ("山田\u3000太郎", "太郎", "山田"),  # family name first, full-width space kept in full_name
    ],
)
def test_full_name_is_split_when_first_and_last_are_absent(full_name: str, first: str | None, last: str | None) -> None:
    result = lead({"name": full_name, "email": "a@example.com"})
    assert (result.first_name, result.last_name) == (first, last)
    assert result.full_name == full_name


def test_full_name_is_derived_from_first_and_last() -> None:
    assert lead({"firstname": "Ada", "surname": "Lovelace", "email": "a@example.com"}).full_name == "Ada Lovelace"
    assert lead({"first_name": "小明", "last_name": "王", "email": "a@example.com"}).full_name == "王小明"
    assert lead({"given_name": "Ada", "email": "a@example.com"}).full_name == "Ada"


def test_given_first_last_and_full_name_are_all_kept_as_sent() -> None:
    result = lead({"first_name": "Ada", "last_name": "King", "name": "Augusta Ada King", "email": "a@example.com"})
    assert (result.first_name, result.last_name, result.full_name) == ("Ada", "King", "Augusta Ada King")


_name_chars = st.characters(categories=["Lu", "Ll", "Lo", "Mn", "Mc"])


@given(st.text(_name_chars, min_size=1, max_size=40))
def test_any_name_made_of_letters_and_marks_comes_back_unchanged(name: str) -> None:
    result = normalize_lead({"first_name": name, "last_name": "X", "email": "a@example.com"}, now=NOW)
    assert result.first_name == name


# --- email and phone -----------------------------------------------------------------------------


def test_email_domain_is_lower_cased_and_identity_key_is_case_insensitive() -> None:
    result = lead({"email_address": "  Ada.Lovelace@Example.COM "})
    assert result.email == "Ada.Lovelace@example.com"
    assert result.identity_keys() == ["email:ada.lovelace@example.com"]


@pytest.mark.parametrize("email", ["not-an-email", "a@b", "ada@@example.com", "ada@example..com"])
def test_an_invalid_email_is_kept_raw_and_flagged_when_the_phone_is_good(email: str) -> None:
    result = lead({"email": email, "phone": "+14155552671"})
    assert (result.email, result.phone) == (None, "+14155552671")
    assert result.quality_flags == ("email_invalid",) and result.quality_raw == {"email": email}


def test_international_email_is_accepted() -> None:
    assert lead({"email": "José@Bücher.DE"}).email == "José@bücher.de"


def test_a_lead_needs_an_email_or_a_phone() -> None:
    assert errors_of({"first_name": "Ada"}) == {"email": "email or phone is required"}
    with pytest.raises(NotALead) as info:
        normalize_lead({"email": "jane@", "phone": "n/a"}, now=NOW)
    assert {e.field for e in info.value.errors} == {"email", "phone"}  # each unusable way named


def test_a_platform_lead_id_is_a_way_to_reach_the_person() -> None:
    result = normalize_lead({"full_name": "Ada L", "phone": "n/a"}, now=NOW, strict=False, require_contact=False)
    assert result.quality_flags == ("phone_unparsed", "no_contact") and result.full_name == "Ada L"


def test_a_nanp_number_without_any_region_is_read_as_plus_one_and_flagged() -> None:
    result = lead({"phone": "(415) 555-2671", "email": "a@example.com"})
    assert result.phone == "+14155552671"
    assert result.quality_flags == ("phone_region_assumed",) and result.quality_raw == {"phone": "(415) 555-2671"}
    # A country on the lead or the source's region still decides first, and then nothing is assumed.
    assert lead({"phone": "(415) 555-2671", "email": "a@example.com"}, default_region="US").quality_flags == ()
    assert lead({"phone": "030 12345678", "country": "DE", "email": "a@example.com"}).quality_flags == ()


def test_phone_na_with_a_good_email_is_kept_and_flagged() -> None:
    result = lead({"phone": "n/a", "email": "jane@example.com"})
    assert (result.email, result.phone) == ("jane@example.com", None)
    assert result.to_dict()["quality"] == {"flags": ["phone_unparsed"], "raw": {"phone": "n/a"}}


def test_phone_alone_is_enough_and_gives_an_identity_key() -> None:
    result = lead({"tel": "(415) 555-2671"}, default_region="us")
    assert result.phone == "+14155552671"
    assert result.identity_keys() == ["phone:+14155552671"]


def test_lead_country_decides_the_phone_region_before_the_default_region() -> None:
    assert lead({"phone_number": "030 12345678", "country": "Germany"}, default_region="US").phone == "+493012345678"
    assert lead({"phone": "020 7946 0958"}, default_region="GB").phone == "+442079460958"


def test_international_phone_ignores_the_region() -> None:
    assert lead({"phone": "+44 20 7946 0958"}, default_region="US").phone == "+442079460958"


def test_digits_only_international_number_without_plus_is_understood() -> None:
    # Webflow sends phone fields as JSON numbers, which lose the "+".
    assert lead({"phone": 14155552671}).phone == "+14155552671"


@pytest.mark.parametrize(
    ("phone", "region", "reason_part"),
    [
        ("030 1234567", None, "country code"),
        ("555", "US", "not a valid phone number for US"),
        ("call me maybe", "US", "not a phone number"),
        ("+1 200 000 0000", None, "not a valid"),
    ],
)
def test_bad_phones_are_kept_raw_and_flagged(phone: str, region: str | None, reason_part: str) -> None:
    assert quality_of({"phone": phone, "email": "a@example.com"}, default_region=region) == (
        ["phone_unparsed"],
        {"phone": phone},
    )
    with pytest.raises(NotALead) as info:  # and without an email, the reason is named
        normalize_lead({"phone": phone}, default_region=region, now=NOW)
    assert reason_part in {e.field: e.reason for e in info.value.errors}["phone"]


def test_phone_extension_is_kept_in_custom() -> None:
    result = lead({"phone": "+1 415 555 2671 ext. 12"})
    assert result.phone == "+14155552671"
    assert result.custom["phone_extension"] == "12"


# --- country, language, website ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given_country", "code"),
    [
        ("Germany", "DE"),
        ("DE", "DE"),
        ("deu", "DE"),
        ("de", "DE"),
        ("276", "DE"),
        ("Deutschland", "DE"),
        ("United States", "US"),
        ("United States of America", "US"),
        ("USA", "US"),
        ("U.S.A.", "US"),
        ("UK", "GB"),
        ("United Kingdom", "GB"),
        ("the Netherlands", "NL"),
        ("South Korea", "KR"),
        ("Russia", "RU"),
        ("বাংলাদেশ", "BD"),
    ],
)
def test_country_names_and_codes_become_iso_alpha_2(given_country: str, code: str) -> None:
    assert lead({"country": given_country, "email": "a@example.com"}).country == code


def test_unknown_country_is_kept_raw_and_flagged() -> None:
    assert quality_of({"country": "Narnia", "email": "a@example.com"}) == (["country_unknown"], {"country": "Narnia"})


@pytest.mark.parametrize(
    ("given_language", "tag"), [("EN-us", "en-US"), ("pt_br", "pt-BR"), ("German", "de"), ("fr", "fr")]
)
def test_language_is_normalized(given_language: str, tag: str) -> None:
    assert lead({"language": given_language, "email": "a@example.com"}).language == tag


def test_unknown_language_is_kept_raw_and_flagged() -> None:
    assert quality_of({"language": "xx", "email": "a@example.com"}) == (["language_unknown"], {"language": "xx"})


@pytest.mark.parametrize(
    ("website", "normalized"),
    [
        ("Example.COM/Pricing?a=B", "https://example.com/Pricing?a=B"),
        ("http://WWW.Example.com", "http://www.example.com"),
        ("https://user:pw@Example.com:8443/x", "https://example.com:8443/x"),
        ("//example.org", "https://example.org"),
    ],
)
def test_website_gets_a_scheme_and_a_lower_case_host(website: str, normalized: str) -> None:
    assert lead({"website": website, "email": "a@example.com"}).website == normalized


@pytest.mark.parametrize("website", ["ftp://example.com", "not a url", "https://", "javascript:alert(1)"])
def test_bad_websites_are_kept_raw_and_flagged(website: str) -> None:
    assert quality_of({"website": website, "email": "a@example.com"}) == (["website_invalid"], {"website": website})


# --- aliases, mapping, custom fields ---------------------------------------------------------------


def test_web_form_aliases_reach_their_fields() -> None:
    result = lead(
        {
            "firstname": "Ada",
            "lastname": "Lovelace",
            "email_address": "ada@example.com",
            "phone_number": "+442079460958",
            "organization": "Analytical Engines Ltd",
            "title": "Mathematician",
            "zip": "SW1A 1AA",
            "state": "London",
            "city": "London",
            "comments": "Interested",
            "Company Website": "engines.example",
        }
    )
    assert result.company == "Analytical Engines Ltd"
    assert result.job_title == "Mathematician"
    assert (result.postal_code, result.region, result.city) == ("SW1A 1AA", "London", "London")
    assert result.message == "Interested"
    assert result.website == "https://engines.example"
    assert result.custom == {}


def test_field_mapping_is_applied_before_aliases() -> None:
    result = lead(
        {"your-mail": "ada@example.com", "email": "other@example.com", "Plan": "pro", "src": "newsletter"},
        field_mapping={
            "your-mail": "email",
            "email": "custom.secondary_email",
            "Plan": "custom.plan",
            "src": "utm.source",
        },
    )
    assert result.email == "ada@example.com"
    assert result.custom == {"secondary_email": "other@example.com", "plan": "pro"}
    assert result.utm == {"source": "newsletter"}


def test_field_mapping_to_an_unknown_target_is_an_error() -> None:
    errors = errors_of({"x": "1", "email": "a@example.com"}, field_mapping={"x": "nonsense"})
    assert errors == {"field_mapping.x": "unknown target field 'nonsense'"}


def test_field_mapping_to_empty_string_drops_the_key() -> None:
    raw = {"internal_ref": "x", "email": "a@example.com"}
    assert lead(raw).custom == {"internal_ref": "x"}
    assert lead(raw, field_mapping={"internal_ref": ""}).custom == {}


def test_unknown_keys_go_to_custom_and_captcha_tokens_are_dropped() -> None:
    result = lead(
        {
            "email": "a@example.com",
            "plan": "pro",
            "seats": 40,
            "annual": True,
            "budget": 12.5,
            "note_to_self": None,
            "g-recaptcha-response": "x" * 2000,
            "interests": ["api", "sso"],
        }
    )
    assert result.custom == {
        "plan": "pro",
        "seats": 40,
        "annual": True,
        "budget": 12.5,
        "note_to_self": None,
        "interests": "api, sso",
    }


def test_a_differing_duplicate_alias_is_kept_in_custom_not_lost() -> None:
    result = lead({"email": "ada@example.com", "work_email": "ada@engines.example"})
    assert result.email == "ada@example.com"
    assert result.custom == {"work_email": "ada@engines.example"}


def test_custom_is_bounded_to_50_keys() -> None:
    fifty = {f"k{i}": i for i in range(50)}
    assert len(lead({"email": "a@example.com", **fifty}).custom) == 50
    errors = errors_of({"email": "a@example.com", **fifty, "k50": 50})
    assert errors == {"custom": "at most 50 custom fields, got 51"}


def test_custom_key_and_value_lengths_are_bounded() -> None:
    long_key = "k" * 65
    errors = errors_of({"email": "a@example.com", long_key: "v", "essay": "v" * 1001})
    assert errors == {
        f"custom.{'k' * 64}": "key longer than 64 characters",
        "custom.essay": "value longer than 1000 characters",
    }
    assert lead({"email": "a@example.com", "k" * 64: "v" * 1000}).custom == {"k" * 64: "v" * 1000}


def test_nested_custom_dict_is_merged_and_nested_objects_become_json_text() -> None:
    result = lead({"email": "a@example.com", "custom": {"plan": "pro"}, "meta": {"b": 1, "a": [1, 2]}})
    assert result.custom == {"plan": "pro", "meta": '{"a":[1,2],"b":1}'}


def test_overlong_standard_fields_are_rejected_by_name() -> None:
    errors = errors_of({"email": "a@example.com", "first_name": "A" * 101, "company": "C" * 201})
    assert errors == {"first_name": "longer than 100 characters", "company": "longer than 200 characters"}


def test_structured_value_for_a_text_field_is_rejected() -> None:
    assert errors_of({"email": "a@example.com", "first_name": {"x": 1}}) == {"first_name": "expected text"}


def test_a_list_of_plain_values_is_text_joined_by_commas_and_a_list_holding_an_object_is_refused() -> None:
    """As the README says: a multi-select answer is read as text; structure where text belongs is malformed."""
    assert lead({"email": "a@example.com", "company": ["Acme", "Widgets", 3]}).company == "Acme, Widgets, 3"
    assert errors_of({"email": "a@example.com", "first_name": ["Ada", {"x": 1}]}) == {"first_name": "expected text"}


# --- attribution and consent ---------------------------------------------------------------------


def test_flat_and_nested_utm_and_click_ids() -> None:
    flat = lead({"email": "a@example.com", "utm_source": "google", "utm_medium": "cpc", "gclid": "G1", "fbclid": "F1"})
    assert flat.utm == {"source": "google", "medium": "cpc"}
    assert flat.click_ids == {"gclid": "G1", "fbclid": "F1"}
    nested = lead({"email": "a@example.com", "utm": {"source": "li", "utm_campaign": "q2"}, "li_fat_id": "L1"})
    assert nested.utm == {"source": "li", "campaign": "q2"}
    assert nested.click_ids == {"li_fat_id": "L1"}


def test_hidden_fields_feed_attribution_but_visible_answers_win() -> None:
    result = lead(
        {
            "email": "a@example.com",
            "hidden": {"utm_source": "typeform", "email": "hidden@example.com", "msclkid": "M"},
        }
    )
    assert result.utm == {"source": "typeform"}
    assert result.click_ids == {"msclkid": "M"}
    assert result.email == "a@example.com"


def test_utm_and_click_ids_missing_from_the_form_are_read_from_the_page_url() -> None:
    result = lead(
        {
            "email": "a@example.com",
            "utm_source": "explicit",
            "page_url": "https://example.com/demo?utm_source=url&utm_campaign=spring&gclid=G9&other=1",
        }
    )
    assert result.utm == {"source": "explicit", "campaign": "spring"}
    assert result.click_ids == {"gclid": "G9"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("yes", True),
        ("on", True),
        ("TRUE", True),
        ("1", True),
        (True, True),
        ("no", False),
        ("", False),
        ("false", False),
        (0, False),
    ],
)
def test_consent_flags_from_truthy_strings(value: object, expected: bool) -> None:
    assert lead({"email": "a@example.com", "marketing_consent": value}).consent == {"marketing": expected}


def test_consent_keys_from_various_spellings() -> None:
    result = lead(
        {
            "email": "a@example.com",
            "consent": "yes",
            "opt_in": "on",
            "consent_sms": "no",
            "terms_consent": "1",
        }
    )
    assert result.consent == {"general": True, "marketing": True, "sms": False, "terms": True}


def test_consent_object_keys_are_slugged() -> None:
    result = lead({"email": "a@example.com", "consent": {"Phone Calls": "agreed", "email": ["checked"]}})
    assert result.consent == {"phone_calls": True, "email": True}


def test_unrecognizable_consent_is_kept_raw_and_flagged() -> None:
    assert quality_of({"email": "a@example.com", "gdpr_consent": "maybe"}) == (
        ["consent_unreadable"],
        {"consent.gdpr": "maybe"},
    )


# --- time ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "2025-03-14T15:00:00Z",
        "2025-03-14T16:00:00+01:00",
        "2025-03-14T15:00:00+0000",
        1741964400,
        1741964400000,
        "1741964400",
    ],
)
def test_submitted_at_is_read_in_many_formats_and_stored_in_utc(value: object) -> None:
    assert lead({"email": "a@example.com", "submitted_at": value}).submitted_at == datetime(
        2025, 3, 14, 15, 0, tzinfo=UTC
    )


def test_submitted_at_slightly_ahead_is_tolerated_but_an_hour_ahead_is_clamped_to_now_and_flagged() -> None:
    ahead = NOW + timedelta(minutes=4)
    assert lead({"email": "a@example.com", "submitted_at": ahead}).submitted_at == ahead
    sent = (NOW + timedelta(hours=1)).isoformat()
    result = lead({"email": "a@example.com", "submitted_at": sent})
    assert result.submitted_at == NOW
    assert result.quality_flags == ("submitted_at_clamped",) and result.quality_raw == {"submitted_at": sent}


def test_unreadable_submitted_at_is_kept_raw_and_flagged() -> None:
    assert quality_of({"email": "a@example.com", "submitted_at": "last tuesday"}) == (
        ["submitted_at_unparsed"],
        {"submitted_at": "last tuesday"},
    )


# --- errors and output -----------------------------------------------------------------------------


def test_every_malformed_field_is_named_in_one_error_and_unreadable_ones_are_not() -> None:
    with pytest.raises(LeadValidationError) as info:
        lead(
            {"email": "a@example.com", "country": "Atlantis", "first_name": "A" * 101, "company": {"x": 1},
             "utm_source": ["a", {"b": 1}]},
            default_region="US",
        )  # fmt: skip
    fields = {e.field for e in info.value.errors}
    assert fields == {"first_name", "company", "utm.source"}
    assert all(isinstance(e, FieldError) for e in info.value.errors)
    assert not isinstance(info.value, NotALead)
    message = str(info.value)
    assert "first_name:" in message and "100" in message


def test_non_mapping_body_is_rejected() -> None:
    with pytest.raises(LeadValidationError):
        normalize_lead(["not", "an", "object"], now=NOW)  # type: ignore[arg-type]


def test_to_dict_has_every_key_and_is_json_ready() -> None:
    data = lead({"email": "a@example.com", "submitted_at": "2025-03-14T16:00:00+01:00"}).to_dict()
    assert set(data) == {
        "first_name", "last_name", "full_name", "email", "phone", "company", "job_title", "website",
        "country", "region", "city", "postal_code", "language", "message", "consent", "utm", "click_ids",
        "page_url", "referrer", "form_id", "submitted_at", "custom", "quality",
    }  # fmt: skip
    assert data["submitted_at"] == "2025-03-14T15:00:00+00:00"
    assert data["phone"] is None and data["utm"] == {} and data["quality"] == {"flags": [], "raw": {}}
    assert json.loads(json.dumps(data)) == data


def test_from_dict_restores_a_stored_lead() -> None:
    original = lead(
        {
            "name": BENGALI,
            "email": "a@example.com",
            "phone": "+14155552671",
            "plan": "pro",
            "utm_source": "x",
            "submitted_at": 1741964400,
        }
    )
    assert NormalizedLead.from_dict(json.loads(json.dumps(original.to_dict()))) == original


def test_naive_now_is_treated_as_utc() -> None:
    naive_now = NOW.replace(tzinfo=None)
    in_five_hours_local = datetime(2025, 3, 14, 20, 0, tzinfo=timezone(timedelta(hours=5)))  # == 15:00 UTC
    result = normalize_lead({"email": "a@example.com", "submitted_at": in_five_hours_local}, now=naive_now)
    assert result.submitted_at == datetime(2025, 3, 14, 15, 0, tzinfo=UTC)


# --- lenient mode for platform leads ---------------------------------------------------------------


def test_lenient_mode_keeps_the_person_and_parks_unreadable_fields() -> None:
    raw = {
        "email": "ada@example.com",
        "phone": "15550000000",  # Webflow's own sample: 555 numbers do not exist
        "country": "Atlantis",
        "submitted_at": (NOW + timedelta(hours=1)).isoformat(),
        "essay": "x" * 1500,
        "k" * 70: "long key",
    }
    with pytest.raises(LeadValidationError):
        normalize_lead(raw, now=NOW)
    result = normalize_lead({**raw, "job_title": "t" * 300}, now=NOW, strict=False)
    assert result.email == "ada@example.com"
    assert (result.phone, result.country, result.submitted_at) == (None, None, NOW)
    assert result.quality_flags == ("job_title_invalid", "country_unknown", "phone_unparsed", "submitted_at_clamped")
    assert result.quality_raw == {
        "job_title": "t" * 300,
        "country": "Atlantis",
        "phone": "15550000000",
        "submitted_at": (NOW + timedelta(hours=1)).isoformat(),
    }
    assert not any(key.startswith("invalid_") for key in result.custom)  # one place for what was unreadable
    assert result.custom["essay"] == "x" * 1000
    assert result.custom["k" * 64] == "long key"


def test_lenient_mode_still_needs_a_usable_email_or_phone_unless_told_otherwise() -> None:
    with pytest.raises(NotALead) as info:
        normalize_lead({"email": "not-an-email", "first_name": "Ada"}, now=NOW, strict=False)
    assert [e.field for e in info.value.errors] == ["email"]


def test_lenient_mode_caps_custom_at_50_fields() -> None:
    raw = {"email": "a@example.com", **{f"k{i}": i for i in range(60)}}
    custom = normalize_lead(raw, now=NOW, strict=False).custom
    assert list(custom) == [f"k{i}" for i in range(50)]


def test_a_normalized_lead_is_the_dataclass_its_fields_make() -> None:
    """The normalizer builds its lead without the dataclass's __init__ (of_values); the lead must still be a
    frozen NormalizedLead equal to the one __init__ makes from the same values, and refuse a missing field."""
    result = lead({"email": "ada@example.org", "first_name": "Ada", "utm_source": "x", "hidden": {"gclid": "g"}})
    rebuilt = NormalizedLead.from_dict(result.to_dict())
    assert result == rebuilt
    assert result.to_dict() == rebuilt.to_dict()
    with pytest.raises(AttributeError):
        result.email = "other@example.org"  # type: ignore[misc]
    values = dict(result.__dict__)
    values.pop("custom")
    with pytest.raises(TypeError):
        NormalizedLead.of_values(values)


def test_fields_absent_from_the_submission_are_none_and_maps_empty() -> None:
    """Steps skipped for fields a lead did not send leave what reading them found: nothing."""
    result = lead({"phone": "+49 30 1234567"})
    data = result.to_dict()
    assert data["phone"] == "+49301234567"
    assert all(data[name] is None for name in ("first_name", "email", "country", "website", "language", "message"))
    assert (data["utm"], data["click_ids"], data["consent"], data["custom"]) == ({}, {}, {}, {})
    assert data["submitted_at"] is None
