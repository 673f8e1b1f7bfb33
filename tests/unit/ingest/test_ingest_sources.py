"""Lead platforms: each signature scheme as the platform publishes it, and each real payload shape.

Signatures are computed here from the published recipe (not with the code under test), so a change
in how we verify that stops matching the platform fails these tests.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta

import pytest

from ingest.domain import (
    LeadValidationError,
    PlatformLead,
    SignatureError,
    linkedin_challenge,
    linkedin_is_test,
    linkedin_lead_to_raw,
    meta_lead_to_raw,
    meta_verify_challenge,
    normalize_lead,
    parse_google_ads,
    parse_hubspot,
    parse_linkedin_notification,
    parse_meta_notification,
    parse_typeform,
    parse_webflow,
    verify_google_key,
    verify_hubspot_v3,
    verify_linkedin_signature,
    verify_meta_signature,
    verify_typeform_signature,
    verify_webflow_signature,
)

pytestmark = pytest.mark.unit

NOW = datetime(2025, 3, 14, 15, 9, 26, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
SECRET = "s3cr3t-Ünïcode-key"


def hmac_digest(secret: str, message: bytes) -> bytes:
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).digest()


def body_of(payload: object) -> bytes:
    # Platforms do not send our serialization: odd spacing and non-ASCII make re-serialization fail.
    return json.dumps(payload, indent=1, ensure_ascii=False).encode("utf-8")


# --- Meta Lead Ads ---------------------------------------------------------------------------------

META_NOTIFICATION = {
    "object": "page",
    "entry": [
        {
            "id": "153125381133",
            "time": 1741964400,
            "changes": [
                {
                    "field": "leadgen",
                    "value": {
                        "leadgen_id": 444444444444,
                        "page_id": 153125381133,
                        "form_id": 555555555555,
                        "adgroup_id": 666666666666,
                        "ad_id": 777777777777,
                        "created_time": 1741964400,
                    },
                },
                {"field": "feed", "value": {"item": "status", "verb": "add"}},
            ],
        },
        {
            "id": "153125381133",
            "time": 1741964460,
            "changes": [{"field": "leadgen", "value": {"leadgen_id": "444444444445", "form_id": "555555555555"}}],
        },
    ],
}

META_GRAPH_LEAD = {
    "created_time": "2025-03-14T15:00:00+0000",
    "id": "444444444444",
    "ad_id": "777777777777",
    "form_id": "555555555555",
    "field_data": [
        {"name": "full_name", "values": ["Ada Lovelace"]},
        {"name": "email", "values": ["Ada@Example.com"]},
        {"name": "phone_number", "values": ["+442079460958"]},
        {"name": "company_name", "values": ["Analytical Engines"]},
        {"name": "which_products?", "values": ["api", "sso"]},
        {"name": "country", "values": ["GB"]},
    ],
}


class TestMeta:
    def sign(self, body: bytes, secret: str = SECRET) -> str:
        return "sha256=" + hmac_digest(secret, body).hex()

    def test_good_signature_passes(self) -> None:
        body = body_of(META_NOTIFICATION)
        verify_meta_signature(SECRET, body, self.sign(body))

    def test_tampered_body_fails(self) -> None:
        body = body_of(META_NOTIFICATION)
        with pytest.raises(SignatureError):
            verify_meta_signature(SECRET, body.replace(b"444444444444", b"444444444446"), self.sign(body))

    def test_wrong_secret_fails(self) -> None:
        body = body_of(META_NOTIFICATION)
        with pytest.raises(SignatureError):
            verify_meta_signature(SECRET, body, self.sign(body, "other"))

    @pytest.mark.parametrize("header", [None, "", "sha256=", "sha1=abcd", "deadbeef"])
    def test_missing_or_malformed_header_fails(self, header: str | None) -> None:
        with pytest.raises(SignatureError):
            verify_meta_signature(SECRET, body_of(META_NOTIFICATION), header)

    def test_empty_app_secret_never_verifies(self) -> None:
        body = body_of(META_NOTIFICATION)
        with pytest.raises(SignatureError):
            verify_meta_signature("", body, "sha256=" + hmac.new(b"", body, hashlib.sha256).hexdigest())

    def test_subscription_challenge_is_echoed_only_for_our_token(self) -> None:
        params = {"hub.mode": "subscribe", "hub.verify_token": "tok", "hub.challenge": "1158201444"}
        assert meta_verify_challenge("tok", params) == "1158201444"
        with pytest.raises(SignatureError):
            meta_verify_challenge("other", params)
        with pytest.raises(SignatureError):
            meta_verify_challenge("tok", {**params, "hub.mode": "unsubscribe"})
        with pytest.raises(SignatureError):
            meta_verify_challenge("tok", {"hub.mode": "subscribe", "hub.challenge": "1"})

    @pytest.mark.parametrize("challenge", ["", "<script>alert(1)</script>", "1" * 257])
    def test_challenge_that_is_not_a_plain_token_is_not_reflected(self, challenge: str) -> None:
        with pytest.raises(SignatureError):
            meta_verify_challenge(
                "tok", {"hub.mode": "subscribe", "hub.verify_token": "tok", "hub.challenge": challenge}
            )

    def test_batched_notification_yields_every_leadgen_change(self) -> None:
        refs = parse_meta_notification(META_NOTIFICATION)
        assert [r.leadgen_id for r in refs] == ["444444444444", "444444444445"]
        first = refs[0]
        assert (first.form_id, first.page_id, first.ad_id) == ("555555555555", "153125381133", "777777777777")
        assert first.created_time == datetime(2025, 3, 14, 15, 0, tzinfo=UTC)
        assert refs[1].created_time is None and refs[1].page_id == "153125381133"

    def test_notification_without_leadgen_id_is_rejected_by_path(self) -> None:
        payload = {"object": "page", "entry": [{"id": "1", "changes": [{"field": "leadgen", "value": {}}]}]}
        with pytest.raises(LeadValidationError) as info:
            parse_meta_notification(payload)
        assert info.value.errors[0].field == "entry.0.changes.0.value.leadgen_id"

    def test_graph_lead_becomes_a_normalized_lead(self) -> None:
        raw = meta_lead_to_raw(META_GRAPH_LEAD)
        assert raw["which_products?"] == ["api", "sso"]
        lead = normalize_lead(raw, now=NOW)
        assert (lead.first_name, lead.last_name, lead.email) == ("Ada", "Lovelace", "Ada@example.com")
        assert (lead.phone, lead.company, lead.country) == ("+442079460958", "Analytical Engines", "GB")
        assert lead.form_id == "555555555555"
        assert lead.submitted_at == datetime(2025, 3, 14, 15, 0, tzinfo=UTC)
        assert lead.custom == {"which_products?": "api, sso", "meta_ad_id": "777777777777"}


# --- Google Ads lead forms ---------------------------------------------------------------------------

GOOGLE_LEAD = {
    "lead_id": "TeSter-123-ABCDEFGHIJKLMNOPQRSTUVWXYZ-abcdefghijklmnopqrstuvwxyz-0123456789-AaBbCc",
    "user_column_data": [
        {"column_name": "Full Name", "string_value": "Ada Lovelace", "column_id": "FULL_NAME"},
        {"column_name": "User Email", "string_value": "ada@example.com", "column_id": "EMAIL"},
        {"column_name": "User Phone", "string_value": "+16505550123", "column_id": "PHONE_NUMBER"},
        {"column_name": "Company Name", "string_value": "Analytical Engines", "column_id": "COMPANY_NAME"},
        {"column_name": "Job title", "string_value": "Mathematician", "column_id": "JOB_TITLE"},
        {"column_name": "City", "string_value": "London", "column_id": "CITY"},
        {
            "column_name": "What is your budget?",
            "string_value": "10-50k",
            "column_id": "what_is_your_budget?",
        },
    ],
    "api_version": "1.0",
    "form_id": 40000000000,
    "campaign_id": 12345678901,
    "google_key": "the-shared-key",
    "is_test": True,
    "gcl_id": "EAIaIQobChMI",
    "adgroup_id": 20000000000,
    "creative_id": 30000000000,
    "lead_submit_time": "2025-03-14 15:00:00.123456+00:00",
}


class TestGoogleAds:
    def test_matching_key_passes(self) -> None:
        verify_google_key("the-shared-key", GOOGLE_LEAD)

    @pytest.mark.parametrize("key", ["the-shared-kez", "", None, 12345])
    def test_wrong_or_missing_key_fails(self, key: object) -> None:
        with pytest.raises(SignatureError):
            verify_google_key("the-shared-key", {**GOOGLE_LEAD, "google_key": key})

    def test_no_configured_key_never_verifies(self) -> None:
        with pytest.raises(SignatureError):
            verify_google_key("", {**GOOGLE_LEAD, "google_key": ""})

    def test_columns_are_mapped_by_column_id(self) -> None:
        parsed = parse_google_ads(GOOGLE_LEAD)
        assert parsed.external_id == GOOGLE_LEAD["lead_id"]
        assert parsed.is_test is True
        lead = normalize_lead(parsed.raw, now=NOW)
        assert (lead.first_name, lead.last_name, lead.email, lead.phone) == (
            "Ada",
            "Lovelace",
            "ada@example.com",
            "+16505550123",
        )
        assert (lead.company, lead.job_title, lead.city) == ("Analytical Engines", "Mathematician", "London")
        assert lead.click_ids == {"gclid": "EAIaIQobChMI"}
        assert lead.form_id == "40000000000"
        assert lead.submitted_at == datetime(2025, 3, 14, 15, 0, 0, 123456, tzinfo=UTC)
        assert lead.custom["what_is_your_budget?"] == "10-50k"
        assert lead.custom["google_campaign_id"] == "12345678901"

    def test_real_leads_are_not_test_leads(self) -> None:
        assert parse_google_ads({**GOOGLE_LEAD, "is_test": False}).is_test is False
        assert parse_google_ads({k: v for k, v in GOOGLE_LEAD.items() if k != "is_test"}).is_test is False

    def test_unreadable_submit_time_keeps_the_lead(self) -> None:
        parsed = parse_google_ads({**GOOGLE_LEAD, "lead_submit_time": "yesterday-ish"})
        assert "submitted_at" not in parsed.raw
        assert parsed.raw["google_lead_submit_time"] == "yesterday-ish"

    def test_missing_lead_id_is_rejected_by_name(self) -> None:
        with pytest.raises(LeadValidationError) as info:
            parse_google_ads({k: v for k, v in GOOGLE_LEAD.items() if k != "lead_id"})
        assert [e.field for e in info.value.errors] == ["lead_id"]


# --- LinkedIn Lead Sync ------------------------------------------------------------------------------

LINKEDIN_NOTIFICATION = {
    "type": "LEAD_ACTION",
    "leadGenFormResponse": "urn:li:leadGenFormResponse:5f0b8e1c-1e2b-4a4c-9a9c-8f3c1b2d3e4f",
    "leadGenForm": "urn:li:leadGenForm:5925256",
    "owner": {"sponsoredAccount": "urn:li:sponsoredAccount:522529623"},
    "leadType": "SPONSORED",
    "leadAction": "CREATED",
    "occurredAt": 1741964400000,
}

LINKEDIN_FORM = {
    "id": 5925256,
    "content": {
        "questions": [
            {"questionId": 1, "name": "firstName", "predefinedField": "FIRST_NAME"},
            {"questionId": 2, "name": "lastName", "predefinedField": "LAST_NAME"},
            {"questionId": 3, "name": "email", "predefinedField": "EMAIL"},
            {"questionId": 4, "name": "company", "predefinedField": "COMPANY_NAME"},
            {"questionId": 5, "name": "title", "predefinedField": "JOB_TITLE"},
            {"questionId": 6, "name": "phone", "predefinedField": "PHONE_NUMBER"},
            {"questionId": 7, "name": "country", "predefinedField": "COUNTRY"},
            {"questionId": 8, "name": "team_size"},
        ]
    },
}

LINKEDIN_RESPONSE = {
    "owner": {"sponsoredAccount": "urn:li:sponsoredAccount:522529623"},
    "submitter": "urn:li:person:abc123",
    "leadType": "SPONSORED",
    "versionedLeadGenFormUrn": "urn:li:versionedLeadGenForm:(urn:li:leadGenForm:5925256,1)",
    "id": "5f0b8e1c-1e2b-4a4c-9a9c-8f3c1b2d3e4f",
    "submittedAt": 1741964400000,
    "testLead": False,
    "formResponse": {
        "answers": [
            {"answerDetails": {"textQuestionAnswer": {"answer": "অর্ণব"}}, "questionId": 1},
            {"answerDetails": {"textQuestionAnswer": {"answer": "Roy"}}, "questionId": 2},
            {"answerDetails": {"textQuestionAnswer": {"answer": "arnab@example.in"}}, "questionId": 3},
            {"answerDetails": {"textQuestionAnswer": {"answer": "Engines Pvt Ltd"}}, "questionId": 4},
            {"answerDetails": {"textQuestionAnswer": {"answer": "CTO"}}, "questionId": 5},
            {"answerDetails": {"textQuestionAnswer": {"answer": "98765 43210"}}, "questionId": 6},
            {"answerDetails": {"textQuestionAnswer": {"answer": "India"}}, "questionId": 7},
            {"answerDetails": {"multipleChoiceAnswer": {"options": [2]}}, "questionId": 8},
        ],
        "consentResponses": [{"accepted": True, "consentId": 3}],
    },
}


class TestLinkedIn:
    def sign(self, body: bytes, secret: str = SECRET) -> str:
        return hmac_digest(secret, b"hmacsha256=" + body).hex()

    def test_challenge_response_is_hex_hmac_of_the_code(self) -> None:
        code = "890e4bf3-4b9d-4b0e-9e1f-4e3f1a2b3c4d"
        answer = linkedin_challenge(SECRET, code)
        assert answer == {
            "challengeCode": code,
            "challengeResponse": hmac_digest(SECRET, code.encode()).hex(),
        }

    @pytest.mark.parametrize(
        "code",
        [
            'hmacsha256={"leadAction":"DELETED"}',  # forging a notification's signature
            "anything",
            "890e4bf3-4b9d-4b0e-9e1f-4e3f1a2b3c4d\n",
            "890e4bf34b9d4b0e9e1f4e3f1a2b3c4d",
            "{890e4bf3-4b9d-4b0e-9e1f-4e3f1a2b3c4d}",
            "",
        ],
    )
    def test_challenge_code_other_than_a_uuid_is_refused_unsigned(self, code: str) -> None:
        with pytest.raises(LeadValidationError) as raised:
            linkedin_challenge(SECRET, code)
        assert [e.field for e in raised.value.errors] == ["challengeCode"]

    def test_good_signature_passes(self) -> None:
        body = body_of(LINKEDIN_NOTIFICATION)
        verify_linkedin_signature(SECRET, body, self.sign(body))

    def test_signature_must_cover_the_hmacsha256_prefix(self) -> None:
        body = body_of(LINKEDIN_NOTIFICATION)
        with pytest.raises(SignatureError):
            verify_linkedin_signature(SECRET, body, hmac_digest(SECRET, body).hex())

    def test_tampered_body_fails(self) -> None:
        body = body_of(LINKEDIN_NOTIFICATION)
        with pytest.raises(SignatureError):
            verify_linkedin_signature(SECRET, body.replace(b"CREATED", b"DELETED"), self.sign(body))

    @pytest.mark.parametrize("header", [None, "", "not-hex"])
    def test_missing_signature_fails(self, header: str | None) -> None:
        with pytest.raises(SignatureError):
            verify_linkedin_signature(SECRET, body_of(LINKEDIN_NOTIFICATION), header)

    def test_notification_names_the_response_to_fetch(self) -> None:
        note = parse_linkedin_notification(LINKEDIN_NOTIFICATION)
        assert note.urn == LINKEDIN_NOTIFICATION["leadGenFormResponse"]
        assert (note.action, note.form_urn) == ("CREATED", "urn:li:leadGenForm:5925256")
        assert note.occurred_at == datetime(2025, 3, 14, 15, 0, tzinfo=UTC)
        assert parse_linkedin_notification({**LINKEDIN_NOTIFICATION, "leadAction": "DELETED"}).action == "DELETED"

    def test_notification_without_urn_or_with_unknown_action_is_rejected(self) -> None:
        with pytest.raises(LeadValidationError):
            parse_linkedin_notification({**LINKEDIN_NOTIFICATION, "leadGenFormResponse": None})
        with pytest.raises(LeadValidationError):
            parse_linkedin_notification({**LINKEDIN_NOTIFICATION, "leadAction": "EXPLODED"})

    def test_form_response_maps_predefined_fields_through_the_form(self) -> None:
        raw = linkedin_lead_to_raw(LINKEDIN_RESPONSE, form=LINKEDIN_FORM)
        lead = normalize_lead(raw, now=NOW)
        assert (lead.first_name, lead.last_name, lead.email) == ("অর্ণব", "Roy", "arnab@example.in")
        assert (lead.company, lead.job_title, lead.country, lead.phone) == (
            "Engines Pvt Ltd",
            "CTO",
            "IN",
            "+919876543210",
        )
        assert lead.consent == {"3": True}
        assert lead.custom["team_size"] == "2"
        assert lead.submitted_at == datetime(2025, 3, 14, 15, 0, tzinfo=UTC)
        assert lead.form_id == "urn:li:versionedLeadGenForm:(urn:li:leadGenForm:5925256,1)"
        assert linkedin_is_test(LINKEDIN_RESPONSE) is False

    def test_form_response_without_the_form_keeps_answers_by_question_id(self) -> None:
        raw = linkedin_lead_to_raw(LINKEDIN_RESPONSE)
        assert raw["question_3"] == "arnab@example.in"
        assert "email" not in raw


# --- Typeform --------------------------------------------------------------------------------------

TYPEFORM_EVENT = {
    "event_id": "01JPBZ9X5R0M6Z3T8V1QW2E4R5",
    "event_type": "form_response",
    "form_response": {
        "form_id": "lT4Z3j",
        "token": "a3a12ec67a1365927098a606107fac15",
        "landed_at": "2025-03-14T14:58:00Z",
        "submitted_at": "2025-03-14T15:00:00Z",
        "hidden": {"utm_source": "newsletter", "gclid": "G-123"},
        "definition": {
            "id": "lT4Z3j",
            "title": "Talk to sales",
            "fields": [
                {"id": "DlXFaesWBteA", "ref": "first_name", "type": "short_text", "title": "First name?"},
                {
                    "id": "SMEUb7VJz92Q",
                    "ref": "01FKQZ2EK4K7SZS388XFD6NHT1",
                    "type": "email",
                    "title": "Email?",
                },
                {"id": "JwWggjAKtOkA", "ref": "phone_ref", "type": "phone_number", "title": "Phone?"},
                {"id": "pn48RmPazVdM", "ref": "team_size", "type": "multiple_choice", "title": "Team size?"},
                {
                    "id": "Q7M2gRzAHuQq",
                    "ref": "integrations",
                    "type": "multiple_choice",
                    "title": "Integrations?",
                },
                {"id": "gFFf3xAkJKsr", "ref": "newsletter", "type": "yes_no", "title": "Newsletter?"},
                {"id": "Fl7Nf8YSGeo9", "ref": "seats", "type": "number", "title": "Seats?"},
            ],
        },
        "answers": [
            {
                "type": "text",
                "text": "李娜",
                "field": {"id": "DlXFaesWBteA", "type": "short_text", "ref": "first_name"},
            },
            {
                "type": "email",
                "email": "lina@example.cn",
                "field": {"id": "SMEUb7VJz92Q", "type": "email", "ref": "01FKQZ2EK4K7SZS388XFD6NHT1"},
            },
            {
                "type": "phone_number",
                "phone_number": "+8613800138000",
                "field": {"id": "JwWggjAKtOkA", "type": "phone_number", "ref": "phone_ref"},
            },
            {
                "type": "choice",
                "choice": {"label": "11-50"},
                "field": {"id": "pn48RmPazVdM", "type": "multiple_choice", "ref": "team_size"},
            },
            {
                "type": "choices",
                "choices": {"labels": ["Salesforce", "HubSpot"]},
                "field": {"id": "Q7M2gRzAHuQq", "type": "multiple_choice", "ref": "integrations"},
            },
            {
                "type": "boolean",
                "boolean": True,
                "field": {"id": "gFFf3xAkJKsr", "type": "yes_no", "ref": "newsletter"},
            },
            {
                "type": "number",
                "number": 42,
                "field": {"id": "Fl7Nf8YSGeo9", "type": "number", "ref": "seats"},
            },
        ],
    },
}


class TestTypeform:
    def sign(self, body: bytes, secret: str = SECRET) -> str:
        return "sha256=" + base64.b64encode(hmac_digest(secret, body)).decode()

    def test_good_signature_passes(self) -> None:
        body = body_of(TYPEFORM_EVENT)
        verify_typeform_signature(SECRET, body, self.sign(body))

    def test_tampered_body_fails(self) -> None:
        body = body_of(TYPEFORM_EVENT)
        with pytest.raises(SignatureError):
            verify_typeform_signature(SECRET, body.replace(b"11-50", b"1-10"), self.sign(body))

    def test_hex_digest_is_not_accepted(self) -> None:
        body = body_of(TYPEFORM_EVENT)
        with pytest.raises(SignatureError):
            verify_typeform_signature(SECRET, body, "sha256=" + hmac_digest(SECRET, body).hex())

    @pytest.mark.parametrize("header", [None, "", "sha256=", "sha1=abc="])
    def test_missing_signature_fails(self, header: str | None) -> None:
        with pytest.raises(SignatureError):
            verify_typeform_signature(SECRET, body_of(TYPEFORM_EVENT), header)

    def test_answers_are_keyed_by_ref_with_email_and_phone_found_by_type(self) -> None:
        parsed = parse_typeform(TYPEFORM_EVENT)
        assert parsed.external_id == "01JPBZ9X5R0M6Z3T8V1QW2E4R5"
        lead = normalize_lead(parsed.raw, now=NOW)
        assert lead.first_name == "李娜" and lead.full_name == "李娜"
        assert lead.email == "lina@example.cn" and lead.phone == "+8613800138000"
        assert lead.utm == {"source": "newsletter"} and lead.click_ids == {"gclid": "G-123"}
        assert lead.consent == {"marketing": True}  # the "newsletter" yes/no question
        assert lead.custom["team_size"] == "11-50"
        assert lead.custom["integrations"] == "Salesforce, HubSpot"
        assert lead.custom["seats"] == 42
        assert lead.form_id == "lT4Z3j"
        assert lead.submitted_at == datetime(2025, 3, 14, 15, 0, tzinfo=UTC)

    def test_other_event_types_and_missing_event_id_are_rejected(self) -> None:
        with pytest.raises(LeadValidationError):
            parse_typeform({**TYPEFORM_EVENT, "event_type": "form_partial_response"})
        with pytest.raises(LeadValidationError):
            parse_typeform({k: v for k, v in TYPEFORM_EVENT.items() if k != "event_id"})


# --- Webflow ---------------------------------------------------------------------------------------

WEBFLOW_EVENT = {
    "triggerType": "form_submission",
    "payload": {
        "name": "Contact Us",
        "siteId": "65427cf400e02b306eaa049c",
        "data": {
            "First Name": "Zaphod",
            "Last Name": "Beeblebrox",
            "email": "zaphod@heartofgold.ai",
            "Phone Number": 14155552671,  # Webflow sends number inputs as JSON numbers
        },
        "schema": [
            {"fieldName": "First Name", "fieldType": "FormTextInput", "fieldElementId": "285042f7"},
            {"fieldName": "Phone Number", "fieldType": "FormTextInput", "fieldElementId": "285042f8"},
        ],
        "submittedAt": "2025-03-14T15:00:00.117Z",
        "id": "6321ca84df3949bfc6752327",
        "formId": "65429eadebe8a9f3a30f62d0",
        "formElementId": "4e038d2c-6a1e-4953-7be9-a59a2b453177",
    },
}


class TestWebflow:
    def sign(self, ts: str, body: bytes, secret: str = SECRET) -> str:
        return hmac_digest(secret, ts.encode() + b":" + body).hex()

    def test_good_signature_passes(self) -> None:
        body, ts = body_of(WEBFLOW_EVENT), str(NOW_MS - 1_000)
        verify_webflow_signature(SECRET, body, ts, self.sign(ts, body), now=NOW)

    def test_tampered_body_fails(self) -> None:
        body, ts = body_of(WEBFLOW_EVENT), str(NOW_MS)
        with pytest.raises(SignatureError):
            verify_webflow_signature(SECRET, body.replace(b"Zaphod", b"Arthur"), ts, self.sign(ts, body), now=NOW)

    def test_changed_timestamp_fails(self) -> None:
        body, ts = body_of(WEBFLOW_EVENT), str(NOW_MS)
        with pytest.raises(SignatureError):
            verify_webflow_signature(SECRET, body, str(NOW_MS + 1), self.sign(ts, body), now=NOW)

    @pytest.mark.parametrize("offset", [timedelta(minutes=-5, seconds=-1), timedelta(minutes=5, seconds=1)])
    def test_stale_or_future_timestamp_fails_even_when_signed(self, offset: timedelta) -> None:
        body = body_of(WEBFLOW_EVENT)
        ts = str(int((NOW + offset).timestamp() * 1000))
        with pytest.raises(SignatureError, match="5 minutes"):
            verify_webflow_signature(SECRET, body, ts, self.sign(ts, body), now=NOW)

    def test_four_minutes_old_is_still_fresh(self) -> None:
        body = body_of(WEBFLOW_EVENT)
        ts = str(int((NOW - timedelta(minutes=4)).timestamp() * 1000))
        verify_webflow_signature(SECRET, body, ts, self.sign(ts, body), now=NOW)

    @pytest.mark.parametrize(
        ("ts", "sig"),
        [(None, "ab"), ("123", None), ("", ""), ("12:34", "ab"), ("9" * 40, "ab"), ("١٧٤١٩٦٤٤٠٠٠٠٠", "ab")],
    )
    def test_missing_or_malformed_headers_fail(self, ts: str | None, sig: str | None) -> None:
        with pytest.raises(SignatureError):
            verify_webflow_signature(SECRET, body_of(WEBFLOW_EVENT), ts, sig, now=NOW)

    def test_form_data_becomes_a_lead(self) -> None:
        parsed = parse_webflow(WEBFLOW_EVENT)
        assert parsed.external_id == "6321ca84df3949bfc6752327"
        lead = normalize_lead(parsed.raw, now=NOW)
        assert (lead.first_name, lead.last_name, lead.email) == (
            "Zaphod",
            "Beeblebrox",
            "zaphod@heartofgold.ai",
        )
        assert lead.phone == "+14155552671"
        assert lead.form_id == "65429eadebe8a9f3a30f62d0"
        assert lead.custom["webflow_form_name"] == "Contact Us"

    def test_other_triggers_are_rejected(self) -> None:
        with pytest.raises(LeadValidationError):
            parse_webflow({**WEBFLOW_EVENT, "triggerType": "site_publish"})


# --- HubSpot v3 ------------------------------------------------------------------------------------

HUBSPOT_EVENTS = [
    {
        "eventId": 1,
        "subscriptionId": 12345,
        "portalId": 62515,
        "appId": 54321,
        "occurredAt": 1741964400000,
        "subscriptionType": "contact.creation",
        "attemptNumber": 0,
        "objectId": 123,
        "changeSource": "CRM",
        "changeFlag": "NEW",
    },
    {
        "eventId": 2,
        "subscriptionId": 12346,
        "portalId": 62515,
        "appId": 54321,
        "occurredAt": 1741964401000,
        "subscriptionType": "contact.propertyChange",
        "attemptNumber": 0,
        "objectId": 123,
        "propertyName": "email",
        "propertyValue": "ada@example.com",
        "changeSource": "CRM",
    },
    {
        "eventId": 3,
        "subscriptionId": 12347,
        "portalId": 62515,
        "appId": 54321,
        "occurredAt": 1741964402000,
        "subscriptionType": "contact.privacyDeletion",
        "attemptNumber": 0,
        "objectId": 456,
    },
    {
        "eventId": 4,
        "subscriptionId": 12348,
        "portalId": 62515,
        "appId": 54321,
        "occurredAt": 1741964403000,
        "subscriptionType": "deal.creation",
        "attemptNumber": 0,
        "objectId": 789,
    },
]

HUBSPOT_URI = "https://hooks.example.com/ingest/hubspot?source=src%3Aweb%2Fmain&name=Ada%20L&x=%3D"
# HubSpot decodes %3A, %2F and the other listed escapes before signing, and leaves %20 and %3D.
HUBSPOT_SIGNED_URI = "https://hooks.example.com/ingest/hubspot?source=src:web/main&name=Ada%20L&x=%3D"


class TestHubSpot:
    def sign(self, method: str, uri: str, body: bytes, ts: str, secret: str = SECRET) -> str:
        return base64.b64encode(hmac_digest(secret, method.encode() + uri.encode() + body + ts.encode())).decode()

    def test_good_signature_passes_with_the_uri_decoded_as_hubspot_does(self) -> None:
        body, ts = body_of(HUBSPOT_EVENTS), str(NOW_MS)
        signature = self.sign("POST", HUBSPOT_SIGNED_URI, body, ts)
        verify_hubspot_v3(SECRET, "POST", HUBSPOT_URI, body, ts, signature, now=NOW)

    def test_lower_case_escapes_are_decoded_too(self) -> None:
        body, ts = body_of(HUBSPOT_EVENTS), str(NOW_MS)
        signature = self.sign("POST", HUBSPOT_SIGNED_URI, body, ts)
        verify_hubspot_v3(SECRET, "post", HUBSPOT_URI.replace("%3A", "%3a"), body, ts, signature, now=NOW)

    def test_fully_decoded_uri_would_not_match(self) -> None:
        body, ts = body_of(HUBSPOT_EVENTS), str(NOW_MS)
        over_decoded = HUBSPOT_SIGNED_URI.replace("%20", " ").replace("%3D", "=")
        with pytest.raises(SignatureError):
            verify_hubspot_v3(SECRET, "POST", HUBSPOT_URI, body, ts, self.sign("POST", over_decoded, body, ts), now=NOW)

    def test_tampered_body_method_or_uri_fails(self) -> None:
        body, ts = body_of(HUBSPOT_EVENTS), str(NOW_MS)
        signature = self.sign("POST", HUBSPOT_SIGNED_URI, body, ts)
        for method, uri, sent in [
            ("POST", HUBSPOT_URI, body.replace(b"ada@", b"eve@")),
            ("PUT", HUBSPOT_URI, body),
            ("POST", HUBSPOT_URI.replace("hooks.", "evil."), body),
        ]:
            with pytest.raises(SignatureError):
                verify_hubspot_v3(SECRET, method, uri, sent, ts, signature, now=NOW)

    def test_stale_timestamp_fails_even_when_signed(self) -> None:
        body = body_of(HUBSPOT_EVENTS)
        ts = str(NOW_MS - 5 * 60 * 1000 - 1)
        with pytest.raises(SignatureError, match="5 minutes"):
            verify_hubspot_v3(
                SECRET,
                "POST",
                HUBSPOT_URI,
                body,
                ts,
                self.sign("POST", HUBSPOT_SIGNED_URI, body, ts),
                now=NOW,
            )

    @pytest.mark.parametrize(
        ("ts", "sig"), [(None, "abc="), (str(NOW_MS), None), ("", ""), ("soon", "abc="), ("9" * 40, "abc=")]
    )
    def test_missing_headers_fail(self, ts: str | None, sig: str | None) -> None:
        with pytest.raises(SignatureError):
            verify_hubspot_v3(SECRET, "POST", HUBSPOT_URI, body_of(HUBSPOT_EVENTS), ts, sig, now=NOW)

    def test_event_batch_is_merged_per_contact_and_deletions_are_flagged(self) -> None:
        leads = parse_hubspot(HUBSPOT_EVENTS)
        assert [(lead.external_id, lead.erased) for lead in leads] == [("123", False), ("456", True)]
        created = leads[0]
        assert created.raw["email"] == "ada@example.com"
        assert created.raw["hubspot_contact_id"] == "123"
        assert normalize_lead(created.raw, now=NOW).email == "ada@example.com"

    def test_workflow_contact_payload_v1_shape(self) -> None:
        contact = {
            "vid": 3234574,
            "properties": {
                "firstname": {"value": "Ada"},
                "lastname": {"value": "Lovelace"},
                "email": {"value": "ada@example.com"},
                "mobilephone": {"value": "+442079460958"},
                "jobtitle": {"value": "Mathematician"},
                "lifecyclestage": {"value": "lead"},
            },
        }
        (parsed,) = parse_hubspot(contact)
        assert isinstance(parsed, PlatformLead) and parsed.external_id == "3234574"
        lead = normalize_lead(parsed.raw, now=NOW)
        assert (lead.full_name, lead.phone, lead.job_title) == (
            "Ada Lovelace",
            "+442079460958",
            "Mathematician",
        )
        assert lead.custom == {"hubspot_contact_id": "3234574", "lifecyclestage": "lead"}

    def test_crm_v3_object_shape(self) -> None:
        (parsed,) = parse_hubspot({"id": "51", "properties": {"email": "ada@example.com", "firstname": "Ada"}})
        assert parsed.external_id == "51"
        assert normalize_lead(parsed.raw, now=NOW).first_name == "Ada"

    def test_unexpected_body_is_rejected(self) -> None:
        with pytest.raises(LeadValidationError):
            parse_hubspot("nope")
        with pytest.raises(LeadValidationError):
            parse_hubspot([{"subscriptionType": "contact.creation"}])
