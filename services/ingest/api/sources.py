"""Sources: the admin API that creates, lists, changes and re-keys lead sources (secrets write-only)."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import urlsplit

import structlog
from fastapi import APIRouter, Path, Request
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from common.crypto import SecretKeyError
from common.egress import UnsafeUrl, vet_url
from common.session import ReadSession, Transaction
from common.web import Admin, HandoffRoute, problem
from ingest.api.shared import ADMIN_SECURITY, date_time, error_responses, request_time
from ingest.domain import lookup_country, normalize_url
from ingest.domain.sources.registry import SOURCE_KINDS, URL_CONFIG_KEYS
from ingest.handlers import sources as source_cases

log = structlog.get_logger(__name__)
router = APIRouter(route_class=HandoffRoute)

if TYPE_CHECKING:
    SourceKind = str
else:
    # The registry's kinds as a Literal, so the OpenAPI document lists them and pydantic names them in a 422.
    SourceKind = Literal[SOURCE_KINDS]


def _printable(value: str) -> str:
    if not value.isprintable():
        raise ValueError("must not contain control characters")
    return value


def _region(value: str) -> str:
    if lookup_country(value) != value:
        raise ValueError("not an ISO 3166-1 alpha-2 country code")
    return value


def _origin(value: str) -> str:
    parts = urlsplit(value.strip().lower())
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        raise ValueError("an origin is scheme://host[:port], e.g. https://www.example.com")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError("an origin is scheme://host[:port], e.g. https://www.example.com")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("the port is not a number") from None
    # Browsers send the origin without a default port and without a trailing slash.
    default = {"http": 80, "https": 443}[parts.scheme]
    return f"{parts.scheme}://{parts.hostname}" + (f":{port}" if port not in (None, default) else "")


def _url(value: str) -> str:
    if "://" not in value:
        raise ValueError("must be an absolute http or https URL")
    return normalize_url(value)


Name = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_printable)]
Region = Annotated[str, Field(pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2"), AfterValidator(_region)]
MappingKey = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_printable)]
MappingTarget = Annotated[
    str,
    Field(max_length=200, description="Our field, utm.x, consent.x, click_ids.x or custom.x; '' drops the key"),
    AfterValidator(_printable),
]
Origin = Annotated[str, Field(min_length=1, max_length=300), AfterValidator(_origin)]
Url = Annotated[str, Field(min_length=1, max_length=2000), AfterValidator(_url)]
Secret = Annotated[str, Field(max_length=4096), AfterValidator(_printable)]
PropertyName = Annotated[str, Field(max_length=200), AfterValidator(_printable)]
ConfigValue = Secret | Annotated[list[PropertyName], Field(max_length=200)]


def _check_config(kind: str, config: dict[str, Any]) -> None:
    problems = source_cases.config_problems(kind, config, _url)
    if problems:
        raise problem(422, "validation_failed", problems)


async def _vet_config_urls(request: Request, config: dict[str, Any] | None) -> None:
    """Refuse upstream base URLs the fetcher must not call (internal addresses; http in production): 422.

    Runs outside any transaction, since it resolves host names; the fetcher checks again at every connect.
    """
    policy = request.app.state.settings.platform_address_policy
    problems = []
    for key in sorted(URL_CONFIG_KEYS & set(config or {})):
        value = (config or {})[key]
        if isinstance(value, str):
            try:
                await vet_url(value, policy)
            except UnsafeUrl as exc:
                problems.append({"field": f"config.{key}", "reason": str(exc)})
    if problems:
        raise problem(422, "validation_failed", problems)


class SourceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: SourceKind
    name: Name
    default_region: Region | None = Field(default=None, description="Region assumed for national phone numbers")
    field_mapping: dict[MappingKey, MappingTarget] = Field(default_factory=dict, max_length=200)
    config: dict[str, ConfigValue] = Field(
        default_factory=dict,
        max_length=20,
        description="Platform settings under the platform's own names (write-only: never echoed)",
    )
    allowed_origins: list[Origin] = Field(
        default_factory=list, max_length=50, description="Web pages that may use the publishable key"
    )
    thank_you_url: Url | None = Field(default=None, description="Where a browser form is sent after a post")


_NOT_NULL = ("name", "enabled", "field_mapping", "config", "allowed_origins")


def _document_not_null(schema: dict[str, Any]) -> None:
    # Left out means unchanged, but these may not be set to null: the document says so too.
    for name in _NOT_NULL:
        prop = schema["properties"][name]
        options = [option for option in prop.pop("anyOf", []) if option.get("type") != "null"]
        prop.update(options[0] if options else {})
        prop.pop("default", None)


class SourcePatch(BaseModel):
    """Only the fields sent change; `config` is merged key by key, and a null value removes that key."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_document_not_null)

    name: Name | None = None
    enabled: bool | None = None
    default_region: Region | None = None
    field_mapping: dict[MappingKey, MappingTarget] | None = Field(default=None, max_length=200)
    config: dict[str, ConfigValue | None] | None = Field(default=None, max_length=20)
    allowed_origins: list[Origin] | None = Field(default=None, max_length=50)
    thank_you_url: Url | None = None

    @field_validator(*_NOT_NULL)
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("may be left out, but not null")
        return value


class SourceOut(BaseModel):
    id: str
    kind: SourceKind
    name: str
    enabled: bool
    default_region: str | None
    field_mapping: dict[str, str]
    config_keys: list[str] = Field(description="Which settings are set; their values are never echoed")
    api_key_prefix: str | None = Field(description="The start of the API key, to recognise it (web sources)")
    publishable_key: str | None = Field(description="For browser forms on the allowed origins (web sources)")
    allowed_origins: list[str]
    thank_you_url: str | None
    webhook_url: str | None = Field(description="Where the platform posts (platform sources)")
    created_at: str = date_time()
    updated_at: str = date_time()


class SourceWithKeyOut(SourceOut):
    api_key: str | None = Field(description="Shown only in this answer; only its hash is stored")


class SourceList(BaseModel):
    items: list[SourceOut]


def source_out(source: source_cases.Source, request: Request) -> dict[str, Any]:
    """A source as the admin API shows it: secrets are write-only, only which ones are set is shown."""
    webhook_url = None
    if source.kind != "web":
        base = request.app.state.settings.public_base_url
        path = request.app.url_path_for("source_webhook", source_id=source.id)
        webhook_url = (
            f"{base.rstrip('/')}{path}" if base else str(request.url_for("source_webhook", source_id=source.id))
        )
    return {
        "id": source.id,
        "kind": source.kind,
        "name": source.name,
        "enabled": source.enabled,
        "default_region": source.default_region,
        "field_mapping": source.field_mapping or {},
        "config_keys": sorted((source.config or {}).keys()),
        "api_key_prefix": source.api_key_prefix,
        "publishable_key": source.publishable_key,
        "allowed_origins": source.allowed_origins or [],
        "thank_you_url": source.thank_you_url,
        "webhook_url": webhook_url,
        "created_at": source.created_at.isoformat(),
        "updated_at": source.updated_at.isoformat(),
    }


SourceId = Annotated[uuid.UUID, Path(description="The source's id")]


@router.post(
    "/v1/sources",
    status_code=201,
    summary="Create a lead source (a web source's API key is shown once, here)",
    response_model=SourceWithKeyOut,
    responses=error_responses(400, 401, 413, 422, 503),
    openapi_extra=ADMIN_SECURITY,
)
async def create_source(body: SourceIn, request: Request, session: Transaction, _admin: Admin) -> dict[str, Any]:
    """A new source; a web source's API key is in this answer only."""
    fields = body.model_dump()
    _check_config(body.kind, fields["config"])
    # Resolving host names is slow, but the transaction has not begun: a session connects at its first statement.
    await _vet_config_urls(request, fields["config"])
    fields["config"] = source_cases.sealed_config(request.app.state.secrets, fields["config"])
    created = await source_cases.create_source(session, fields, request_time(request))
    log.info("source_created", source_id=created.source.id, kind=created.source.kind)
    return {**source_out(created.source, request), "api_key": created.api_key}


@router.get(
    "/v1/sources",
    summary="List lead sources",
    response_model=SourceList,
    responses=error_responses(401, 503),
    openapi_extra=ADMIN_SECURITY,
)
async def list_sources(request: Request, session: ReadSession, _admin: Admin) -> dict[str, Any]:
    """Every source, oldest first, without secrets."""
    return {"items": [source_out(s, request) for s in await source_cases.sources(session)]}


@router.get(
    "/v1/sources/{source_id}",
    summary="One lead source",
    response_model=SourceOut,
    responses=error_responses(401, 404, 422, 503),
    openapi_extra=ADMIN_SECURITY,
)
async def get_source(source_id: SourceId, request: Request, session: ReadSession, _admin: Admin) -> dict[str, Any]:
    """One source, without secrets."""
    source = await source_cases.source(session, str(source_id))
    if source is None:
        raise problem(404, "not_found", "no source with this id")
    return source_out(source, request)


@router.patch(
    "/v1/sources/{source_id}",
    summary="Change or disable a lead source",
    response_model=SourceOut,
    responses=error_responses(400, 401, 404, 413, 422, 503),
    openapi_extra=ADMIN_SECURITY,
)
async def patch_source(
    source_id: SourceId, body: SourcePatch, request: Request, session: Transaction, _admin: Admin
) -> dict[str, Any]:
    """Change the fields sent; config is merged and checked against the source's kind."""
    changes = body.model_dump(exclude_unset=True)
    # Before the first statement, so outside the transaction (see create_source).
    await _vet_config_urls(request, changes.get("config"))
    try:
        source = await source_cases.change_source(
            session, request.app.state.secrets, str(source_id), changes, request_time(request), _url
        )
    except source_cases.ConfigInvalid as exc:
        raise problem(422, "validation_failed", exc.problems) from None
    if source is None:
        raise problem(404, "not_found", "no source with this id")
    log.info("source_changed", source_id=source.id, fields=sorted(changes))
    return source_out(source, request)


@router.post(
    "/v1/sources/{source_id}/rotate-key",
    summary="Issue a new API key for a web source; the old one is refused (other processes: within the bound)",
    description=(
        "The old key is refused at once by this ingest process and by every other one within "
        "HANDOFF_SOURCE_CACHE_TTL_S seconds (5 by default), the revocation bound of their key cache."
    ),
    response_model=SourceWithKeyOut,
    responses=error_responses(401, 404, 422, 503),
    openapi_extra=ADMIN_SECURITY,
)
async def rotate_key(source_id: SourceId, request: Request, session: Transaction, _admin: Admin) -> dict[str, Any]:
    """A new API key, shown once; the old key is refused from now on (by other ingest processes within the bound)."""
    rotated = await source_cases.rotate_web_source_key(session, str(source_id), request_time(request))
    if rotated is None:
        raise problem(404, "not_found", "no web source with this id")
    source, key = rotated
    log.info("source_key_rotated", source_id=source.id)
    return {**source_out(source, request), "api_key": key}


@router.post(
    "/v1/admin/rotate-secrets",
    summary="Re-encrypt every stored source secret under the newest HANDOFF_SECRET_KEY (after adding a key first)",
    responses=error_responses(401, 503),
    openapi_extra=ADMIN_SECURITY,
)
async def rotate_secrets(request: Request, session: Transaction, _admin: Admin) -> dict[str, int]:
    """Secrets under an older key, or stored in clear by an older version, are encrypted under the first key."""
    try:
        count = await source_cases.reencrypt_source_secrets(session, request.app.state.secrets)
    except SecretKeyError as exc:
        # A key that encrypted some secret was dropped too early: nothing changed; put it back (second) and retry.
        raise problem(409, "secret_key_missing", str(exc)) from exc
    log.info("source_secrets_reencrypted", count=count)
    return {"reencrypted": count}
