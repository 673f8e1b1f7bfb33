"""Pure domain of the ingest service: lead normalization, platform verification/parsing, API keys."""

from ingest.domain.errors import FieldError, LeadValidationError, NotALead, SignatureError
from ingest.domain.keys import (
    hash_api_key,
    key_matches,
    key_prefix,
    mask_email,
    mask_phone,
    new_api_key,
    new_publishable_key,
)
from ingest.domain.lead import (
    NormalizedLead,
    lookup_country,
    normalize_lead,
    normalize_url,
    parse_datetime,
    parse_phone,
)
from ingest.domain.sources._common import PlatformLead
from ingest.domain.sources.google_ads import parse_google_ads, verify_google_key
from ingest.domain.sources.hubspot import hubspot_signed_uri, parse_hubspot, verify_hubspot_v3
from ingest.domain.sources.linkedin import (
    LinkedInNotification,
    linkedin_challenge,
    linkedin_is_test,
    linkedin_lead_to_raw,
    parse_linkedin_notification,
    verify_linkedin_signature,
)
from ingest.domain.sources.meta import (
    MetaLeadRef,
    meta_lead_to_raw,
    meta_verify_challenge,
    parse_meta_notification,
    verify_meta_signature,
)
from ingest.domain.sources.typeform import parse_typeform, verify_typeform_signature
from ingest.domain.sources.webflow import parse_webflow, verify_webflow_signature

__all__ = [
    "FieldError",
    "LeadValidationError",
    "LinkedInNotification",
    "MetaLeadRef",
    "NormalizedLead",
    "NotALead",
    "PlatformLead",
    "SignatureError",
    "hash_api_key",
    "hubspot_signed_uri",
    "key_matches",
    "key_prefix",
    "linkedin_challenge",
    "linkedin_is_test",
    "linkedin_lead_to_raw",
    "lookup_country",
    "mask_email",
    "mask_phone",
    "meta_lead_to_raw",
    "meta_verify_challenge",
    "new_api_key",
    "new_publishable_key",
    "normalize_lead",
    "normalize_url",
    "parse_datetime",
    "parse_google_ads",
    "parse_hubspot",
    "parse_linkedin_notification",
    "parse_meta_notification",
    "parse_phone",
    "parse_typeform",
    "parse_webflow",
    "verify_google_key",
    "verify_hubspot_v3",
    "verify_linkedin_signature",
    "verify_meta_signature",
    "verify_typeform_signature",
    "verify_webflow_signature",
]
