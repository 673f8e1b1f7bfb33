"""Scoring's HTTP API in-process on a real SQLite store, and the `handoff-scoring` CLI on the same database."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from scoring.app import create_app
from scoring.domain import DEFAULT_RULESET_YAML, load_ruleset
from scoring.settings import ScoringSettings
from tests.support.stack import ADMIN, ADMIN_TOKEN

pytestmark = [pytest.mark.integration, pytest.mark.kafka]

HEADER = "domain,name,employee_band,industry,country,revenue_band\n"
GOOD_CSV = HEADER + "acme-corp.com,Acme Corp,201-500,software,DE,10M-50M\nglobex.io,Globex,10001+,fintech,us,\n"
# Line 3 has a band outside the vocabulary, line 5 a country that is no ISO code; lines 2 and 4 are fine.
BAD_CSV = (
    HEADER
    + "acme-corp.com,Acme Corp,201-500,software,DE,\n"
    + "initech.com,Initech,51 - 200,software,US,\n"
    + "globex.io,Globex,10001+,fintech,US,\n"
    + "hooli.com,Hooli,1001-5000,internet,USA,\n"
)
LEAD = {"email": "jane@acme-corp.com", "job_title": "Head of Marketing", "country": "DE", "form_id": "demo"}

App = Callable[[], AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def env(tmp_path: Path, kafka_bootstrap: str, namespace: str) -> dict[str, str]:
    """The service's environment: what both the app and the CLI read."""
    return {
        "HANDOFF_ENV": "test",
        "HANDOFF_ADMIN_TOKEN": ADMIN_TOKEN,
        "HANDOFF_DATA_DIR": str(tmp_path / "data"),
        "HANDOFF_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "HANDOFF_TOPIC_NAMESPACE": namespace,
        "HANDOFF_TOPIC_PARTITIONS": "1",
        "HANDOFF_LOG_LEVEL": "WARNING",
    }


@pytest.fixture
def scoring_app(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> App:
    for key, value in env.items():
        monkeypatch.setenv(key, value)

    @asynccontextmanager
    async def running() -> AsyncIterator[httpx.AsyncClient]:
        app = create_app(ScoringSettings())
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://scoring", headers=ADMIN) as client:
                yield client

    return running


def _cli(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    executable = Path(sys.executable).parent / "handoff-scoring"
    assert executable.exists(), "the handoff-scoring entry point is installed with the package"
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("HANDOFF_", "SCORING_"))}
    return subprocess.run(
        [str(executable), *args], env={**clean, **env}, input=stdin, capture_output=True, text=True, timeout=120
    )


async def _preview(client: httpx.AsyncClient, lead: dict[str, Any], **extra: Any) -> httpx.Response:
    return await client.post("/v1/score/preview", json={"lead": lead, **extra})


async def test_a_broken_ruleset_is_refused_naming_its_line_and_the_old_one_stays(scoring_app: App) -> None:
    default = load_ruleset(DEFAULT_RULESET_YAML)
    tuned_text = DEFAULT_RULESET_YAML.replace("thresholds: {A: 70, B: 50, C: 30}", "thresholds: {A: 60, B: 40, C: 20}")
    lines = DEFAULT_RULESET_YAML.splitlines()
    broken_line = next(i for i, line in enumerate(lines, 1) if "id: manager" in line) + 2
    broken = "\n".join(
        line.replace("enrichment.seniority: manager", "enrichment.senority: manager") if i == broken_line else line
        for i, line in enumerate(lines, 1)
    )
    async with scoring_app() as client:
        assert (await client.get("/v1/ruleset")).json()["version"] == default.version
        installed = await client.put("/v1/ruleset", content=tuned_text, headers={"content-type": "application/yaml"})
        assert installed.status_code == 200, installed.text
        tuned = installed.json()["version"]
        assert tuned != default.version

        refused = await client.put("/v1/ruleset", content=broken, headers={"content-type": "application/yaml"})
        assert refused.status_code == 422
        body = refused.json()
        assert body["error"] == "invalid_ruleset"
        assert [e["line"] for e in body["detail"]] == [broken_line], body
        assert "senority" in body["detail"][0]["reason"] and "seniority" in body["detail"][0]["reason"]

        not_yaml = await client.put("/v1/ruleset", content="name: x\nfit: [\n", headers={"content-type": "text/plain"})
        assert not_yaml.status_code == 422 and all(e["line"] for e in not_yaml.json()["detail"])

        current = (await client.get("/v1/ruleset")).json()
        assert current["version"] == tuned and current["yaml"] == tuned_text
        assert (await _preview(client, LEAD)).json()["score"]["ruleset_version"] == tuned

        candidate = await _preview(client, LEAD, ruleset_yaml=broken)
        assert candidate.status_code == 422 and candidate.json()["detail"][0]["line"] == broken_line


async def test_firmographics_load_through_the_api_refuses_bad_lines_and_then_scores_with_them(
    scoring_app: App,
) -> None:
    async with scoring_app() as client:
        refused = await client.post("/v1/firmographics", content=BAD_CSV, headers={"content-type": "text/csv"})
        assert refused.status_code == 422
        assert refused.json()["error"] == "invalid_csv"
        assert [e["line"] for e in refused.json()["detail"]] == [3, 5]
        assert "51 - 200" in refused.json()["detail"][0]["reason"]
        before = (await _preview(client, LEAD)).json()
        assert before["enrichment"]["company"] is None, "a refused file loads nothing, not even its good lines"

        loaded = await client.post("/v1/firmographics", content=GOOD_CSV, headers={"content-type": "text/csv"})
        assert loaded.status_code == 200 and loaded.json() == {"loaded": 2}
        after = (await _preview(client, LEAD)).json()
        assert after["enrichment"]["company"]["name"] == "Acme Corp"
        fired = {r["id"] for r in after["score"]["fired"]}
        assert {"company_mid_market", "target_industry"} <= fired
        assert after["score"]["fit"] > before["score"]["fit"]

        upload = await client.post(
            "/v1/firmographics",
            files={"file": ("companies.csv", HEADER + "acme-corp.com,Acme Group,10001+,software,DE,\n", "text/csv")},
        )
        assert upload.status_code == 200 and upload.json() == {"loaded": 1}
        assert (await _preview(client, LEAD)).json()["enrichment"]["company"]["name"] == "Acme Group"


async def test_the_api_wants_the_admin_token_and_says_when_a_lead_has_no_score(scoring_app: App) -> None:
    async with scoring_app() as client:
        anonymous = await client.get("/v1/ruleset", headers={"authorization": ""})
        assert anonymous.status_code == 401
        missing = await client.get("/v1/scores/00000000-0000-0000-0000-000000000000")
        assert missing.status_code == 404 and missing.json()["error"] == "not_found"
        # Preview stores and emits nothing: the lead has no score afterwards.
        assert (await _preview(client, LEAD)).status_code == 200


async def test_the_cli_loads_firmographics_into_the_service_database_and_shows_the_ruleset(
    env: dict[str, str], scoring_app: App, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(BAD_CSV)
    refused = _cli(env, "load-firmographics", str(bad))
    assert refused.returncode == 1, refused
    assert refused.stderr.splitlines() == [
        f"{bad}:3: unknown employee_band '51 - 200', expected one of "
        "1-10, 11-50, 51-200, 201-500, 501-1000, 1001-5000, 5001-10000, 10001+",
        f"{bad}:5: country 'USA' is not an ISO 3166 alpha-2 code",
    ]

    good = tmp_path / "companies.csv"
    good.write_text(GOOD_CSV)
    loaded = _cli(env, "load-firmographics", str(good))  # a fresh database: the CLI migrates it first
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip() == "loaded 2 companies"
    assert _cli(env, "load-firmographics", "-", stdin=GOOD_CSV).returncode == 0

    tuned = DEFAULT_RULESET_YAML.replace("min_fit: 40", "min_fit: 45")
    async with scoring_app() as client:
        preview = (await _preview(client, {**LEAD, "email": "joe@globex.io"})).json()
        assert preview["enrichment"]["company"] == {
            "domain": "globex.io",
            "name": "Globex",
            "employee_band": "10001+",
            "industry": "fintech",
            "country": "US",
            "revenue_band": None,
        }
        version = (await client.put("/v1/ruleset", content=tuned)).json()["version"]

    shown = _cli(env, "show-ruleset")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == tuned
    assert shown.stderr.strip() == f"version {version}"

    missing = _cli(env, "load-firmographics", str(tmp_path / "nope.csv"))
    assert missing.returncode == 2 and "cannot read" in missing.stderr


async def test_an_anonymous_preview_with_a_malformed_body_is_refused_401_not_400(scoring_app: App) -> None:
    async with scoring_app() as client:
        for auth in ("", "Bearer not-the-admin-token-0123"):
            response = await client.post(
                "/v1/score/preview",
                content=b'{"lead": {"email": ',
                headers={"authorization": auth, "content-type": "application/json"},
            )
            assert response.status_code == 401, (auth, response.text)
            assert response.json()["error"] == "unauthorized"
        admin = await client.post(
            "/v1/score/preview", content=b'{"lead": {"email": ', headers={"content-type": "application/json"}
        )
        assert admin.status_code == 400


async def test_a_lookaround_regex_or_an_alias_bomb_is_refused_at_put_naming_the_line(scoring_app: App) -> None:
    lines = DEFAULT_RULESET_YAML.splitlines()
    at = next(i for i, line in enumerate(lines, 1) if ": {regex: " in line and not line.lstrip().startswith("#"))
    lines[at - 1] = lines[at - 1].split("regex:")[0] + "regex: 'demo(?=.*pricing)'}"
    lookahead = "\n".join(lines)
    levels = ["name: &a [x, x, x, x, x, x, x, x, x, x]"]
    for previous, name in zip("abcdefg", "bcdefgh", strict=False):
        levels.append(f"{name}: &{name} [{', '.join([f'*{previous}'] * 10)}]")
    yaml_body = {"content-type": "application/yaml"}
    async with scoring_app() as client:
        before = (await client.get("/v1/ruleset")).json()["version"]
        refused = await client.put("/v1/ruleset", content=lookahead, headers=yaml_body)
        assert refused.status_code == 422, refused.text
        [error] = refused.json()["detail"]
        assert error["line"] == at and "lookahead and lookbehind are not supported" in error["reason"]
        bomb = await client.put("/v1/ruleset", content="\n".join(levels) + "\n", headers=yaml_body)
        assert bomb.status_code == 422 and "too large" in bomb.json()["detail"][0]["reason"]
        assert (await client.get("/v1/ruleset")).json()["version"] == before
