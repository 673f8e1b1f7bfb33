"""Schemathesis against ingest's own OpenAPI document, served by a real uvicorn process.

Every operation gets generated requests, valid and invalid, with the admin token. The run passes when no
answer is a 5xx and every answer (status, content type, headers, body) is one the document describes.
Bounded and deterministic: at most 50 examples an operation, derandomized, no shrinking time limit surprises.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from ingest.app import create_app
from ingest.settings import IngestSettings
from tests.support.stack import ADMIN, ADMIN_TOKEN, Service, free_port

pytestmark = [pytest.mark.integration, pytest.mark.kafka]

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    # Operations that declare the admin token must refuse a request without it, or with a wrong one.
    ignored_auth,
]


@pytest.fixture(scope="module")
def ingest_service(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str) -> Iterator[Service]:
    tmp: Path = tmp_path_factory.mktemp("schemathesis")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HANDOFF_", "INGEST_"))}
    env.update(
        HANDOFF_ENV="test",
        HANDOFF_ADMIN_TOKEN=ADMIN_TOKEN,
        HANDOFF_KAFKA_BOOTSTRAP=kafka_bootstrap,
        HANDOFF_TOPIC_NAMESPACE=f"t{uuid.uuid4().hex[:10]}.",
        HANDOFF_TOPIC_PARTITIONS="1",
        HANDOFF_DATA_DIR=str(tmp / "data"),
        HANDOFF_LOG_LEVEL="WARNING",
        # Generated browser posts must not trip the per-address limit: 429 is tested elsewhere.
        HANDOFF_PUBLIC_RATE_LIMIT_PER_MINUTE="100000",
        # Nor may the generated requests without a key lock the test's address out with 429s.
        HANDOFF_AUTH_FAILURE_LIMIT="100000",
    )
    service = Service("ingest", free_port(), env, tmp / "ingest.log")
    service.start()
    yield service
    service.stop()
    assert "Traceback" not in service.logs(), service.log_tail(80)


def _document() -> dict[str, Any]:
    # Built in-process (nothing connects) so tests can be generated at collection; the test checks that the
    # running server serves this same document. (schemathesis' lazy `from_fixture` does not run on pytest 9.)
    settings = IngestSettings(env="test", admin_token=ADMIN_TOKEN, log_format="console", log_level="WARNING")
    return create_app(settings).openapi()


DOCUMENT = _document()
schema = schemathesis.openapi.from_dict(DOCUMENT)


def test_the_server_serves_the_document_under_test(ingest_service: Service) -> None:
    served = httpx.get(f"{ingest_service.url}/openapi.json", timeout=10).json()
    assert served == DOCUMENT
    operations = {(method.upper(), path) for path, item in DOCUMENT["paths"].items() for method in item}
    assert {("POST", "/v1/leads"), ("GET", "/v1/leads"), ("PATCH", "/v1/sources/{source_id}")} <= operations


@schema.parametrize()
@settings(
    max_examples=50,
    derandomize=True,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_ingest_api_honours_its_openapi_document(case: schemathesis.Case, ingest_service: Service) -> None:
    case.call_and_validate(base_url=ingest_service.url, headers=ADMIN, checks=CHECKS, timeout=10)
