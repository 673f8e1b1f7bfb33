"""Secure by default: with nothing said, every service is in production and will not start on a weak token."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from common.settings import DEV_ADMIN_TOKEN, ServiceSettings
from ingest.app import create_app as create_ingest_app
from ingest.settings import IngestSettings
from routing.settings import RoutingSettings
from scoring.settings import ScoringSettings

SERVICE_SETTINGS: list[type[ServiceSettings]] = [IngestSettings, ScoringSettings, RoutingSettings]
STRONG = "s3cret-" + "x" * 33


@pytest.fixture
def no_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment of an operator who set nothing (tests/conftest.py says development otherwise)."""
    monkeypatch.delenv("HANDOFF_ENV", raising=False)
    monkeypatch.delenv("HANDOFF_ADMIN_TOKEN", raising=False)


@pytest.mark.parametrize("cls", SERVICE_SETTINGS)
def test_with_no_mode_set_a_service_is_in_production(no_mode: None, cls: type[ServiceSettings]) -> None:
    assert cls(admin_token=STRONG).env == "production"  # type: ignore[arg-type]


@pytest.mark.parametrize("cls", SERVICE_SETTINGS)
def test_production_without_an_admin_token_refuses_to_start_and_says_why(
    no_mode: None, cls: type[ServiceSettings]
) -> None:
    with pytest.raises(ValidationError) as refused:
        cls()
    message = str(refused.value)
    assert "HANDOFF_ADMIN_TOKEN is not set" in message
    assert "at least 32 characters" in message


@pytest.mark.parametrize("cls", SERVICE_SETTINGS)
@pytest.mark.parametrize("token", ["short-token-0123456789", "x" * 31])
def test_production_refuses_a_token_shorter_than_32_characters(
    no_mode: None, cls: type[ServiceSettings], token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HANDOFF_ADMIN_TOKEN", token)
    with pytest.raises(ValidationError, match=f"is {len(token)} characters; production needs .* at least 32"):
        cls()


@pytest.mark.parametrize("cls", SERVICE_SETTINGS)
def test_production_refuses_the_published_development_token(no_mode: None, cls: type[ServiceSettings]) -> None:
    with pytest.raises(ValidationError, match="published development token"):
        cls(admin_token=DEV_ADMIN_TOKEN)  # type: ignore[arg-type]


@pytest.mark.parametrize("cls", SERVICE_SETTINGS)
def test_a_strong_token_from_the_environment_starts_production(
    no_mode: None, cls: type[ServiceSettings], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HANDOFF_ADMIN_TOKEN", STRONG)
    settings = cls()
    assert settings.env == "production"
    assert settings.admin_token.get_secret_value() == STRONG


@pytest.mark.parametrize("cls", SERVICE_SETTINGS)
def test_development_said_explicitly_runs_on_the_development_token(
    no_mode: None, cls: type[ServiceSettings], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HANDOFF_ENV", "development")
    settings = cls()
    assert settings.env == "development"
    assert settings.admin_token.get_secret_value() == DEV_ADMIN_TOKEN


def test_an_ingest_app_built_from_an_empty_environment_refuses_to_start(no_mode: None) -> None:
    with pytest.raises(ValidationError, match="HANDOFF_ADMIN_TOKEN is not set"):
        create_ingest_app()
