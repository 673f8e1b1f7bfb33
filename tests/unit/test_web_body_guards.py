"""The shared request guards: JSON nesting is measured by a byte scan, and every route authenticates first."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute

from common.web import JSON_MAX_DEPTH, BodyLimitMiddleware, HandoffRoute, json_depth_exceeds
from ingest.api.webhooks import PLATFORM_BODY_LIMITS, WEBHOOK_MAX_BODY_BYTES
from ingest.app import create_app as create_ingest
from ingest.settings import IngestSettings
from routing.app import create_app as create_routing
from routing.settings import RoutingSettings
from scoring.app import create_app as create_scoring
from scoring.settings import ScoringSettings


def _nested(depth: int) -> bytes:
    return json.dumps({"email": "a@b.co", "custom": json.loads("[" * depth + "]" * depth)}).encode()


def test_nesting_at_the_limit_passes_and_one_deeper_is_refused() -> None:
    assert not json_depth_exceeds(_nested(JSON_MAX_DEPTH - 1))  # the outer object is one level
    assert json_depth_exceeds(_nested(JSON_MAX_DEPTH))
    assert json_depth_exceeds(b'{"a":' * 500 + b"1" + b"}" * 500)


@pytest.mark.parametrize(
    "body",
    [
        b'{"message": "' + b"[{" * 1000 + b'"}',  # brackets inside a string are text, not nesting
        b'{"message": "\\"' + b"[" * 100 + b'", "b": []}',  # an escaped quote does not end the string
        b'{"path": "C:\\\\", "x": [[1]]}',  # an escaped backslash does, and what follows is outside again
        b"",
    ],
)
def test_brackets_inside_strings_do_not_count(body: bytes) -> None:
    assert not json_depth_exceeds(body)


def test_a_string_that_ends_after_an_escaped_backslash_leaves_later_brackets_counted() -> None:
    assert json_depth_exceeds(b'{"path": "C:\\\\", "x": ' + b"[" * 40 + b"]" * 40 + b"}")


def _apps() -> list[FastAPI]:
    token: Any = "t" * 40
    return [
        create_ingest(IngestSettings(env="test", admin_token=token)),
        create_scoring(ScoringSettings(env="test", admin_token=token)),
        create_routing(RoutingSettings(env="test", admin_token=token)),
    ]


def _api_routes(routes: list[Any]) -> list[APIRoute]:
    """Every APIRoute, through the routers an app includes (FastAPI keeps them as included routers)."""
    found: list[APIRoute] = []
    for route in routes:
        if isinstance(route, APIRoute):
            found.append(route)
        elif hasattr(route, "original_router"):
            found.extend(_api_routes(route.original_router.routes))
    return found


def test_every_route_of_every_service_authenticates_before_reading_its_body() -> None:
    for app in _apps():
        routes = _api_routes(app.routes)
        assert len(routes) > 5
        plain = [route.path for route in routes if not isinstance(route, HandoffRoute)]
        assert plain == [], f"{app.title}: routes without HandoffRoute (FastAPI parses before auth): {plain}"


def test_platform_webhooks_get_the_largest_platform_limit_and_web_leads_keep_64_kib() -> None:
    limits = BodyLimitMiddleware(FastAPI(), 64 * 1024, {r"/v1/sources/[^/]+/webhook": WEBHOOK_MAX_BODY_BYTES})
    assert limits.limit_for("/v1/sources/abc/webhook") == WEBHOOK_MAX_BODY_BYTES == PLATFORM_BODY_LIMITS["typeform"]
    assert limits.limit_for("/v1/leads") == 64 * 1024
    assert limits.limit_for("/v1/sources/abc/webhook/extra") == 64 * 1024
