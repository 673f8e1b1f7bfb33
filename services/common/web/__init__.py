"""HTTP plumbing every service mounts: correlation ids, body limits, error shapes, auth, health and metrics.

One module per role; `from common.web import X` keeps working for all of them.
"""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import FastAPI

from common.web.auth import (
    AUTHENTICATION_DEPENDENCIES,
    OPS_COOKIE,
    OPS_COOKIE_MAX_AGE_S,
    Admin,
    Network,
    Ops,
    bearer_token,
    client_address,
    has_ops_access,
    is_ops_token,
    issue_ops_cookie,
    ops_credential,
    ops_tokens,
    require_admin_token,
    require_ops_access,
    tokens_equal,
)
from common.web.body import (
    JSON_MAX_DEPTH,
    BodyLimitMiddleware,
    HandoffRoute,
    json_depth_exceeds,
    read_body_limited,
    refuse_deep_json,
)
from common.web.errors import BodyTooLarge, field_errors_from_validation, install_error_handlers, problem
from common.web.health import health_router
from common.web.middleware import (
    CORRELATION_HEADER,
    UNMATCHED,
    CorrelationIdMiddleware,
    InflightGate,
    InflightLimitMiddleware,
    MetricsMiddleware,
    bind_request_correlation_id,
    count_request,
    shed_answer,
)

__all__ = [
    "AUTHENTICATION_DEPENDENCIES",
    "CORRELATION_HEADER",
    "JSON_MAX_DEPTH",
    "OPS_COOKIE",
    "OPS_COOKIE_MAX_AGE_S",
    "UNMATCHED",
    "Admin",
    "BodyLimitMiddleware",
    "BodyTooLarge",
    "CorrelationIdMiddleware",
    "HandoffRoute",
    "InflightGate",
    "InflightLimitMiddleware",
    "MetricsMiddleware",
    "Network",
    "Ops",
    "bearer_token",
    "bind_request_correlation_id",
    "client_address",
    "count_request",
    "field_errors_from_validation",
    "has_ops_access",
    "health_router",
    "install_common",
    "install_error_handlers",
    "is_ops_token",
    "issue_ops_cookie",
    "json_depth_exceeds",
    "ops_credential",
    "ops_tokens",
    "problem",
    "read_body_limited",
    "refuse_deep_json",
    "require_admin_token",
    "require_ops_access",
    "shed_answer",
    "tokens_equal",
]


def install_common(
    app: FastAPI, *, max_body_bytes: int = 64 * 1024, route_body_limits: Mapping[str, int] | None = None
) -> None:
    """Middleware and error handlers in the same order in every service."""
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_body_bytes, route_limits=route_body_limits)
    app.add_middleware(MetricsMiddleware)
    app.add_middleware(CorrelationIdMiddleware)
