"""Routing's webhook API: endpoints (secret shown once), test pings, the delivery log and replays."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from common.crypto import SecretKeyError
from common.egress import Destination, UnsafeUrl
from common.session import ReadSession, Transaction
from common.web import Admin, HandoffRoute, problem
from routing.webhooks.formats import UnknownFormat
from routing.webhooks.service import (
    Attempt,
    Delivery,
    DeliveryLog,
    Endpoint,
    WebhookConflict,
    Webhooks,
    iso,
    reencrypt_secrets,
)

router = APIRouter(prefix="/v1/webhook-endpoints", tags=["webhooks"], route_class=HandoffRoute)


def webhooks_service(request: Request) -> Webhooks:
    """The use cases, built once per app from its settings (tests override this dependency to inject DNS)."""
    service = getattr(request.app.state, "webhooks", None)
    if service is None:
        service = request.app.state.webhooks = Webhooks(request.app.state.settings)
    return service


Service = Annotated[Webhooks, Depends(webhooks_service)]


def _invalid(field: str, reason: str) -> HTTPException:
    return problem(422, "validation_failed", [{"field": field, "reason": reason}])


def _db(request: Request) -> Any:
    return request.app.state.runtime.db


Format = Literal["standard", "slack", "teams"]
FORMAT_HELP = (
    "standard: Standard Webhooks JSON; slack: a Block Kit message for a Slack incoming webhook; "
    "teams: an Adaptive Card for a Teams incoming webhook"
)


class EndpointIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=2048, description="http(s) URL of the receiver")
    event_types: list[str] = Field(min_length=1, max_length=50, description='lead.* event types, or ["*"]')
    description: str = Field(default="", max_length=500)
    format: Format = Field(default="standard", description=FORMAT_HELP)


class EndpointPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(default=None, max_length=2048)
    event_types: list[str] | None = Field(default=None, min_length=1, max_length=50)
    description: str | None = Field(default=None, max_length=500)
    enabled: bool | None = None
    format: Format | None = Field(default=None, description=FORMAT_HELP)


class ReplaySinceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    since: AwareDatetime = Field(description="Replay every failed delivery created at or after this time")


def _endpoint_out(endpoint: Endpoint) -> dict[str, Any]:
    return {
        "id": endpoint.id,
        "url": endpoint.url,
        "description": endpoint.description,
        "event_types": endpoint.event_types,
        "format": endpoint.format,
        "enabled": endpoint.enabled,
        "disabled_reason": endpoint.disabled_reason,
        "disabled_at": iso(endpoint.disabled_at),
        "failing_since": iso(endpoint.failing_since),
        "last_success_at": iso(endpoint.last_success_at),
        "last_failure_at": iso(endpoint.last_failure_at),
        "previous_secret_valid_until": iso(endpoint.previous_secret_until),
        "created_at": iso(endpoint.created_at),
        "updated_at": iso(endpoint.updated_at),
    }


def _attempt_out(attempt: Attempt) -> dict[str, Any]:
    return {
        "attempt_no": attempt.attempt_no,
        "started_at": iso(attempt.started_at),
        "webhook_timestamp": attempt.signed_at,
        "result": attempt.result,
        "status_code": attempt.status_code,
        "latency_ms": attempt.latency_ms,
        "error": attempt.error,
        "response_body": attempt.response_body,
        "next_attempt_at": iso(attempt.next_attempt_at),
    }


def _delivery_out(delivery: Delivery, attempts: list[Attempt] | None = None) -> dict[str, Any]:
    out = {
        "id": delivery.id,
        "endpoint_id": delivery.endpoint_id,
        "webhook_id": delivery.message_id,
        "event_type": delivery.event_type,
        "status": delivery.status,
        "attempt_count": delivery.attempt_count,
        "replays": delivery.replays,
        "next_attempt_at": iso(delivery.next_attempt_at),
        "last_attempt_at": iso(delivery.last_attempt_at),
        "last_status_code": delivery.last_status_code,
        "last_error": delivery.last_error,
        "delivered_at": iso(delivery.delivered_at),
        "created_at": iso(delivery.created_at),
    }
    if attempts is not None:
        out["attempts"] = [_attempt_out(a) for a in attempts]
    return out


async def _vet(service: Webhooks, url: str) -> Destination:
    try:
        return await service.vet_url(url)
    except UnsafeUrl as exc:
        raise _invalid("url", str(exc)) from exc


@router.post("", status_code=201, summary="Register a webhook endpoint; the signing secret is shown only here")
async def create_endpoint(body: EndpointIn, request: Request, service: Service, _admin: Admin) -> dict[str, Any]:
    # Its own transaction, opened after the URL is vetted: DNS can be slow, and a transaction held meanwhile would
    # keep SQLite's one writer waiting.
    destination = await _vet(service, body.url)
    try:
        async with _db(request).transaction() as session:
            endpoint, secret = await service.create_endpoint(
                session,
                url=destination,
                event_types=body.event_types,
                description=body.description,
                format=body.format,
            )
    except UnknownFormat as exc:
        raise _invalid("format", str(exc)) from exc
    except ValueError as exc:
        raise _invalid("event_types", str(exc)) from exc
    return {**_endpoint_out(endpoint), "secret": secret}


@router.get("", summary="Webhook endpoints (disabled ones say why)")
async def list_endpoints(session: ReadSession, service: Service, _admin: Admin) -> dict[str, Any]:
    endpoints = await service.endpoints(session)
    return {"items": [_endpoint_out(e) for e in endpoints]}


@router.get("/{endpoint_id}", summary="One webhook endpoint")
async def get_endpoint(endpoint_id: str, session: ReadSession, service: Service, _admin: Admin) -> dict[str, Any]:
    try:
        endpoint = await service.endpoint(session, endpoint_id)
    except LookupError as exc:
        raise problem(404, "not_found", str(exc)) from exc
    return _endpoint_out(endpoint)


@router.patch("/{endpoint_id}", summary="Change the URL, event types or description; enable or disable")
async def update_endpoint(
    endpoint_id: str, body: EndpointPatch, request: Request, service: Service, _admin: Admin
) -> dict[str, Any]:
    # Its own transaction, opened after a new URL is vetted (DNS can be slow), as at creation.
    destination = await _vet(service, body.url) if body.url is not None else None
    try:
        async with _db(request).transaction() as session:
            endpoint = await service.update_endpoint(
                session,
                endpoint_id,
                url=destination,
                event_types=body.event_types,
                description=body.description,
                enabled=body.enabled,
                format=body.format,
            )
    except LookupError as exc:
        raise problem(404, "not_found", str(exc)) from exc
    except UnknownFormat as exc:
        raise _invalid("format", str(exc)) from exc
    except ValueError as exc:
        raise _invalid("event_types", str(exc)) from exc
    return _endpoint_out(endpoint)


@router.post(
    "/{endpoint_id}/rotate-secret",
    summary="A new signing secret, shown once; the old one keeps signing too until the overlap ends",
)
async def rotate_secret(endpoint_id: str, session: Transaction, service: Service, _admin: Admin) -> dict[str, Any]:
    try:
        endpoint, secret = await service.rotate_secret(session, endpoint_id)
    except LookupError as exc:
        raise problem(404, "not_found", str(exc)) from exc
    return {**_endpoint_out(endpoint), "secret": secret}


@router.post("/{endpoint_id}/test", status_code=202, summary="Send a webhook.test ping to the endpoint")
async def send_test(endpoint_id: str, session: Transaction, service: Service, _admin: Admin) -> dict[str, Any]:
    try:
        delivery = await service.send_test(session, endpoint_id)
    except LookupError as exc:
        raise problem(404, "not_found", str(exc)) from exc
    except WebhookConflict as exc:
        raise problem(409, "conflict", str(exc)) from exc
    return _delivery_out(delivery)


@router.get("/{endpoint_id}/deliveries", summary="The endpoint's deliveries, newest first, with every attempt")
async def list_deliveries(
    endpoint_id: str,
    session: ReadSession,
    service: Service,
    _admin: Admin,
    status: Literal["pending", "succeeded", "failed"] | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> dict[str, Any]:
    try:
        logs: list[DeliveryLog] = await service.deliveries(session, endpoint_id, status=status, limit=limit)
    except LookupError as exc:
        raise problem(404, "not_found", str(exc)) from exc
    return {"items": [_delivery_out(entry.delivery, entry.attempts) for entry in logs]}


@router.post(
    "/{endpoint_id}/deliveries/{delivery_id}/replay",
    status_code=202,
    summary="Send one delivery again now (same webhook-id, fresh retry schedule)",
)
async def replay_delivery(
    endpoint_id: str, delivery_id: str, session: Transaction, service: Service, _admin: Admin
) -> dict[str, Any]:
    try:
        delivery = await service.replay(session, endpoint_id, delivery_id)
    except LookupError as exc:
        raise problem(404, "not_found", str(exc)) from exc
    except WebhookConflict as exc:
        raise problem(409, "conflict", str(exc)) from exc
    return _delivery_out(delivery)


@router.post(
    "/{endpoint_id}/replay",
    status_code=202,
    summary="Send again every failed delivery of the endpoint since a time (same webhook-ids)",
)
async def replay_failed(
    endpoint_id: str, body: ReplaySinceIn, session: Transaction, service: Service, _admin: Admin
) -> dict[str, Any]:
    try:
        count = await service.replay_failed_since(session, endpoint_id, body.since)
    except LookupError as exc:
        raise problem(404, "not_found", str(exc)) from exc
    except WebhookConflict as exc:
        raise problem(409, "conflict", str(exc)) from exc
    return {"endpoint_id": endpoint_id, "since": body.since.isoformat(), "replayed": count}


# -- key rotation for secrets at rest ---------------------------------------------------------------------------

admin_router = APIRouter(prefix="/v1/admin", tags=["admin"], route_class=HandoffRoute)


@admin_router.post(
    "/rotate-secrets",
    summary="Re-encrypt every stored signing secret under the newest HANDOFF_SECRET_KEY (after adding a key first)",
)
async def rotate_secrets(session: Transaction, service: Service, _admin: Admin) -> dict[str, Any]:
    """Secrets under an older key, or stored in clear by an older version, are encrypted under the first key."""
    try:
        count = await reencrypt_secrets(session, service.secrets)
    except SecretKeyError as exc:
        # A key that encrypted some secret was dropped too early: nothing changed; put it back (second) and retry.
        raise problem(409, "secret_key_missing", str(exc)) from exc
    return {"reencrypted": count}
