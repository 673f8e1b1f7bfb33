"""What every lead platform declares in its own module, so the service needs no per-platform code elsewhere.

A platform module ends with one `PLATFORM = Platform(...)`: its config keys (which are secrets, URLs, lists), the
webhook body limit, how a request proves itself, how a verified payload becomes leads to store, fetch or erase,
its GET handshake, and what fetching a lead announced by id needs. `registry.py` lists the modules.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ingest.domain.errors import FieldError, LeadValidationError, SignatureError
from ingest.domain.model import NormalizedLead
from ingest.domain.sources._common import PlatformLead

KIB = 1024

Secret = Callable[[str], str]
"""A source's config secret by key, decrypted; '' when unset or unreadable (verification then fails)."""

Normalize = Callable[[PlatformLead, bool], NormalizedLead]
"""The source's normalization of a platform lead; the flag says whether a way to reach the person is required."""


@dataclass(frozen=True)
class SignedRequest:
    """A webhook request as received: what a platform's signature check reads, nothing framework-specific."""

    body: bytes
    headers: Mapping[str, str]  # case-insensitive, as the framework hands them over
    method: str
    uri: str  # the URL as the platform called it (HubSpot signs it)
    now: datetime
    secret: Secret


@dataclass
class Delivery:
    """What one verified request asks for: leads to store now, leads to fetch, leads to erase."""

    leads: list[tuple[PlatformLead, NormalizedLead]] = field(default_factory=list)
    fetches: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    erasures: list[str] = field(default_factory=list)


class HandshakeMalformed(Exception):
    """A handshake request that cannot be answered (400); `detail` says why."""

    def __init__(self, detail: str | list[dict[str, str]]) -> None:
        self.detail = detail
        super().__init__(str(detail))


@dataclass(frozen=True)
class FetchNeeds:
    """A platform whose notifications carry only an id: the lead is fetched from its API later.

    `api` names the HTTP client in `ingest.clients` that fetches it; `base_url_key` is the config key that
    overrides the API's base URL (vetted against the address policy when saved and at every connect).
    """

    api: str
    base_url_key: str


@dataclass(frozen=True)
class Platform:
    """One lead platform, everything the service must know about it."""

    kind: str
    config_keys: frozenset[str] = frozenset()
    secret_keys: frozenset[str] = frozenset()  # stored encrypted, never shown
    url_keys: frozenset[str] = frozenset()  # upstream base URLs
    list_keys: frozenset[str] = frozenset()  # lists of strings; every other setting is a string
    body_limit: int | None = None  # None: no webhook
    signature_header: str = ""  # named in a 401, so the platform's admin knows what failed
    timestamp_header: str = ""
    verify: Callable[[SignedRequest], None] | None = None  # on the raw bytes, before anything is parsed
    verify_payload: Callable[[SignedRequest, Any], None] | None = None  # a key inside the parsed body
    parse: Callable[[Any, Normalize], Delivery] | None = None
    handshake: Callable[[Secret, Mapping[str, str]], str | dict[str, str]] | None = None
    fetch: FetchNeeds | None = None

    @property
    def has_webhook(self) -> bool:
        return self.body_limit is not None

    def rejected_header(self, exc: SignatureError) -> str:
        """The header a refused signature names: the timestamp's when the timestamp was the problem."""
        if self.timestamp_header and self.timestamp_header.lower() in str(exc).lower():
            return self.timestamp_header
        return self.signature_header


def require_object(payload: Any) -> dict[str, Any]:
    """The parsed body as an object; a platform that sends anything else sent no lead (422)."""
    if not isinstance(payload, dict):
        raise LeadValidationError([FieldError("body", "must be a JSON object")])
    return payload


def one_lead(parse: Callable[[Mapping[str, Any]], PlatformLead]) -> Callable[[Any, Normalize], Delivery]:
    """The parser of a platform that posts whole leads, one per request, stored in the answer's transaction."""

    def delivery(payload: Any, normalize: Normalize) -> Delivery:
        lead = parse(require_object(payload))
        # Lenient: nobody can correct a platform lead and send it again. Its id on the platform is a way to reach
        # the person, so a lead without a usable email or phone is kept too (flagged no_contact).
        return Delivery(leads=[(lead, normalize(lead, False))])

    return delivery
