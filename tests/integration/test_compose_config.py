"""docker-compose.yml as Compose itself resolves it: the stack a Docker user gets is wired as we claim."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SERVICES = {"ingest": 8001, "scoring": 8002, "routing": 8003}
TOKEN = "compose-config-test-token-0123456789"
SECRET_KEY = "Jk8fQ3vXQ2u7mC2d0nJ1S2l4a8y9vQn0p3b6c5d7e9A="  # a Fernet key for this test only


def _compose_command() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
        if probe.returncode == 0:
            return ["docker", "compose"]
    return None


COMPOSE = _compose_command()
needs_compose = pytest.mark.skipif(
    COMPOSE is None,
    reason="docker-compose is not installed (apt-get install docker-compose; make installs it)",
)


def _run_config(env_overrides: dict[str, str | None]) -> subprocess.CompletedProcess[str]:
    assert COMPOSE is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HANDOFF_", "COMPOSE_"))}
    for key, value in env_overrides.items():
        if value is not None:
            env[key] = value
    # The monitoring profile is named so Compose v2 lists those services too (1.29 always does).
    return subprocess.run(
        [
            *COMPOSE,
            "--project-directory",
            str(ROOT),
            "-f",
            str(ROOT / "docker-compose.yml"),
            "--profile",
            "monitoring",
            "config",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    if COMPOSE is None:
        pytest.skip("docker-compose is not installed")
    result = _run_config({"HANDOFF_ADMIN_TOKEN": TOKEN, "HANDOFF_SECRET_KEY": SECRET_KEY})
    assert result.returncode == 0, result.stderr
    parsed = yaml.safe_load(result.stdout)
    assert isinstance(parsed, dict)
    return parsed


def _published_ports(service: dict[str, Any]) -> set[int]:
    ports: set[int] = set()
    for entry in service.get("ports", []):
        if isinstance(entry, dict):  # Compose v2 long syntax
            ports.add(int(entry["published"]))
        else:  # "127.0.0.1:8001:8001/tcp" or "8001:8001"
            ports.add(int(str(entry).split("/")[0].split(":")[-2]))
    return ports


def _healthcheck_text(service: dict[str, Any]) -> str:
    test = service["healthcheck"]["test"]
    return " ".join(test) if isinstance(test, list) else str(test)


def _kafka_version_in_script() -> str:
    script = (ROOT / "scripts/kafka.sh").read_text()
    match = re.search(r'KAFKA_VERSION="\$\{KAFKA_VERSION:-([0-9.]+)\}"', script)
    assert match, "scripts/kafka.sh no longer pins KAFKA_VERSION"
    return match.group(1)


@needs_compose
def test_refuses_to_start_without_an_admin_token() -> None:
    result = _run_config({"HANDOFF_SECRET_KEY": SECRET_KEY})
    assert result.returncode != 0
    assert "HANDOFF_ADMIN_TOKEN" in result.stderr


@needs_compose
def test_refuses_to_start_without_a_secret_key() -> None:
    result = _run_config({"HANDOFF_ADMIN_TOKEN": TOKEN})
    assert result.returncode != 0
    assert "HANDOFF_SECRET_KEY" in result.stderr
    assert "at least 32 characters" in result.stderr  # what production will accept, said before it refuses


@needs_compose
def test_stack_has_the_broker_the_database_the_services_and_monitoring(config: dict[str, Any]) -> None:
    assert set(config["services"]) == {"kafka", "postgres", *SERVICES, "prometheus", "grafana"}
    for name in ("prometheus", "grafana"):
        assert config["services"][name].get("profiles") == ["monitoring"]
    for name in ("kafka", "postgres", *SERVICES):
        assert not config["services"][name].get("profiles"), f"{name} must start without a profile"


@needs_compose
@pytest.mark.parametrize("name", sorted(SERVICES))
def test_each_service_is_built_from_its_own_dockerfile_and_published(config: dict[str, Any], name: str) -> None:
    service = config["services"][name]
    assert Path(service["build"]["context"]).resolve() == ROOT
    assert service["build"]["dockerfile"] == f"services/{name}/Dockerfile"
    assert (ROOT / service["build"]["dockerfile"]).is_file()
    assert SERVICES[name] in _published_ports(service)


@needs_compose
@pytest.mark.parametrize("name", sorted(SERVICES))
def test_each_service_waits_for_a_healthy_broker_and_database(config: dict[str, Any], name: str) -> None:
    service = config["services"][name]
    assert service["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
    health = _healthcheck_text(service)
    assert f"127.0.0.1:{SERVICES[name]}/healthz" in health


@needs_compose
def test_broker_and_database_have_real_healthchecks(config: dict[str, Any]) -> None:
    kafka = config["services"]["kafka"]
    assert "kafka-broker-api-versions" in _healthcheck_text(kafka)
    assert kafka["image"] == f"apache/kafka:{_kafka_version_in_script()}"
    assert str(kafka["environment"]["KAFKA_AUTO_CREATE_TOPICS_ENABLE"]).lower() == "false"
    assert "broker,controller" in str(kafka["environment"]["KAFKA_PROCESS_ROLES"])
    postgres = config["services"]["postgres"]
    assert postgres["image"].startswith("postgres:16")
    assert "pg_isready" in _healthcheck_text(postgres)


@needs_compose
@pytest.mark.parametrize("name", sorted(SERVICES))
def test_each_service_gets_production_settings_and_only_its_own_database(config: dict[str, Any], name: str) -> None:
    env = config["services"][name]["environment"]
    assert env["HANDOFF_ENV"] == "production"
    assert env["HANDOFF_KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert env["HANDOFF_ADMIN_TOKEN"] == TOKEN
    assert env["HANDOFF_SECRET_KEY"] == SECRET_KEY
    database_urls = {key: value for key, value in env.items() if key.endswith("_DATABASE_URL")}
    assert set(database_urls) == {f"{name.upper()}_DATABASE_URL"}, "a service must not see another's database"
    url = urlsplit(database_urls[f"{name.upper()}_DATABASE_URL"])
    assert url.scheme == "postgresql+asyncpg"
    assert url.hostname == "postgres"
    assert url.path == f"/{name}"
    assert url.username == name


@needs_compose
def test_the_database_init_script_creates_every_database_the_services_use(config: dict[str, Any]) -> None:
    mounts = config["services"]["postgres"]["volumes"]
    targets = [(m, m["target"] if isinstance(m, dict) else m) for m in mounts]
    init_mount = next((m for m, target in targets if "docker-entrypoint-initdb.d" in target), None)
    assert init_mount is not None, "the init scripts are not mounted into the postgres container"
    host_dir = Path(init_mount["source"] if isinstance(init_mount, dict) else init_mount.split(":")[0])
    scripts = "\n".join(p.read_text() for p in sorted(host_dir.glob("*.sh")))
    loop = re.search(r"for service in ([a-z ]+); do", scripts)
    assert loop, "the init script no longer loops over the service databases"
    used = {
        urlsplit(env_value).path.lstrip("/")
        for name in SERVICES
        for key, env_value in config["services"][name]["environment"].items()
        if key.endswith("_DATABASE_URL")
    }
    assert used == set(loop.group(1).split())


@needs_compose
def test_prometheus_scrapes_every_service_the_stack_runs(config: dict[str, Any]) -> None:
    prometheus = config["services"]["prometheus"]
    mount = next(
        m
        for m in prometheus["volumes"]
        if (m["target"] if isinstance(m, dict) else m.split(":")[1]) == "/etc/prometheus/prometheus.yml"
    )
    source = Path(mount["source"] if isinstance(mount, dict) else mount.split(":")[0])
    scrape = yaml.safe_load(source.read_text())
    groups = [group for job in scrape["scrape_configs"] for group in job["static_configs"]]
    targets = {target for group in groups for target in group["targets"]}
    assert targets == {f"{name}:{port}" for name, port in SERVICES.items()}


def test_grafana_dashboard_charts_the_pipeline_health_metrics() -> None:
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/handoff.json").read_text())
    datasource = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    uids = {d["uid"] for d in datasource["datasources"]}
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    for metric in (
        "handoff_leads_received_total",
        "handoff_leads_scored_total",
        "handoff_leads_assigned_total",
        "handoff_outbox_backlog",
        "handoff_consumer_lag",
        "handoff_sla_breaches_total",
        "handoff_sla_open_timers",
    ):
        assert metric in exprs, f"no panel shows {metric}"
    assert {p["datasource"]["uid"] for p in dashboard["panels"]} <= uids


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_dockerfile_runs_the_service_unprivileged_on_its_port(name: str) -> None:
    dockerfile = (ROOT / f"services/{name}/Dockerfile").read_text()
    port = SERVICES[name]
    assert re.search(r"^FROM python:3\.11-slim", dockerfile, re.M)
    user = re.findall(r"^USER (\S+)", dockerfile, re.M)
    assert user and user[-1] not in {"root", "0"}
    assert re.search(rf"^EXPOSE {port}$", dockerfile, re.M)
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", dockerfile, re.M).group(1))  # type: ignore[union-attr]
    # routing's entrypoint starts its SLA timers before the HTTP side loads (routing.serve), the same app
    uvicorn = ["uvicorn", f"{name}.app:create_app", "--factory"]
    serves = ["python", "-m", "routing.serve"] if name == "routing" else uvicorn
    assert cmd[:3] == serves
    assert cmd[cmd.index("--port") + 1] == str(port)
