"""Scoring's audit trail (issue 15 item 3): every ruleset change is recorded with who and when, newest first.

Scoring's only writer is the admin token (roles and named tokens live in routing), so "who" here is "admin";
routing's GET /v1/audit covers rules, roster and tokens.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from scoring.app import create_app
from scoring.domain import DEFAULT_RULESET_YAML, load_ruleset
from scoring.settings import ScoringSettings
from tests.support.stack import ADMIN, ADMIN_TOKEN

pytestmark = [pytest.mark.integration, pytest.mark.kafka]

OPS_TOKEN = "test-ops-token-0123456789"
YAML = {"content-type": "application/yaml"}


@pytest.fixture
async def client(
    tmp_path: Path, kafka_bootstrap: str, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[httpx.AsyncClient]:
    env = {
        "HANDOFF_ENV": "test",
        "HANDOFF_ADMIN_TOKEN": ADMIN_TOKEN,
        "HANDOFF_OPS_TOKEN": OPS_TOKEN,
        "HANDOFF_DATA_DIR": str(tmp_path / "data"),
        "HANDOFF_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "HANDOFF_TOPIC_NAMESPACE": namespace,
        "HANDOFF_TOPIC_PARTITIONS": "1",
        "HANDOFF_LOG_LEVEL": "WARNING",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    app = create_app(ScoringSettings())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://scoring") as http:
            yield http


async def test_ruleset_changes_are_audited_with_who_and_when_and_a_refused_one_is_not(
    client: httpx.AsyncClient,
) -> None:
    default = load_ruleset(DEFAULT_RULESET_YAML).version
    tuned_text = DEFAULT_RULESET_YAML.replace("thresholds: {A: 70, B: 50, C: 30}", "thresholds: {A: 60, B: 40, C: 20}")
    tuned = (await client.put("/v1/ruleset", content=tuned_text, headers={**ADMIN, **YAML})).json()["version"]
    refused = await client.put("/v1/ruleset", content="name: x\nfit: [\n", headers={**ADMIN, **YAML})
    assert refused.status_code == 422
    back = (await client.put("/v1/ruleset", content=DEFAULT_RULESET_YAML, headers={**ADMIN, **YAML})).json()

    assert (await client.get("/v1/audit")).status_code == 401
    page = await client.get("/v1/audit", params={"limit": 1}, headers={"Authorization": f"Bearer {OPS_TOKEN}"})
    assert page.status_code == 200, page.text
    [newest] = page.json()["items"]
    assert (newest["who"], newest["action"], newest["subject"]) == ("admin", "ruleset.activate", back["version"])
    assert newest["detail"]["previous_version"] == tuned and newest["at"]
    older = await client.get("/v1/audit", params={"before": page.json()["next_before"]}, headers=ADMIN)
    # Before the first PUT the built-in default was in force and nothing stored: no previous version.
    assert [(e["subject"], e["detail"]["previous_version"]) for e in older.json()["items"]] == [(tuned, None)]
    assert tuned != default
