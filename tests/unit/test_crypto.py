"""Secrets at rest (common.crypto): encrypted under the first key, readable under any, rotated to the newest."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from pydantic import ValidationError

from common.crypto import DEVELOPMENT_KEY, SecretBox, SecretKeyError
from ingest.settings import IngestSettings
from routing.settings import RoutingSettings
from scoring.settings import ScoringSettings

pytestmark = pytest.mark.unit

TOKEN = "t" * 40


def test_a_sealed_secret_holds_no_plaintext_and_only_the_keys_can_open_it() -> None:
    key = Fernet.generate_key().decode()
    stored = SecretBox([key]).seal("whsec_plain-secret")
    assert stored.startswith("enc:v1:") and "plain-secret" not in stored
    assert SecretBox([key]).reveal(stored) == "whsec_plain-secret"
    with pytest.raises(SecretKeyError, match="cannot be decrypted"):
        SecretBox([Fernet.generate_key().decode()]).reveal(stored)


def test_rotation_old_key_decrypts_new_key_encrypts_and_clear_values_get_encrypted() -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    under_old = SecretBox([old]).seal("app-secret")
    both = SecretBox([new, old])  # HANDOFF_SECRET_KEY="new,old"
    assert both.reveal(under_old) == "app-secret"
    assert both.reveal("legacy-clear-value") == "legacy-clear-value"  # a row from before encryption
    rotated, was_clear = both.rotate(under_old), both.rotate("legacy-clear-value")
    new_only = SecretBox([new])
    assert new_only.reveal(rotated) == "app-secret"
    assert was_clear.startswith("enc:v1:") and new_only.reveal(was_clear) == "legacy-clear-value"
    assert SecretBox.from_setting(f" {new} , {old} ").reveal(rotated) == "app-secret"


@pytest.mark.parametrize("cls", [IngestSettings, RoutingSettings])
def test_production_without_a_secret_key_refuses_to_start_and_says_how_to_make_one(
    cls: type[IngestSettings | RoutingSettings], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HANDOFF_SECRET_KEY", raising=False)
    with pytest.raises(ValidationError, match="HANDOFF_SECRET_KEY is not set: production stores platform tokens"):
        cls(env="production", admin_token=TOKEN)
    # Development and tests run on the published development key, said here explicitly.
    assert cls(env="development").secret_box().reveal(SecretBox([DEVELOPMENT_KEY]).seal("x")) == "x"
    # Scoring stores no secrets and needs no key.
    assert ScoringSettings(env="production", admin_token=TOKEN).secret_key is None


def test_a_malformed_key_is_refused_without_echoing_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HANDOFF_SECRET_KEY", raising=False)
    good = Fernet.generate_key().decode()
    with pytest.raises(ValidationError, match="key #2 is not a Fernet key") as raised:
        IngestSettings(env="production", admin_token=TOKEN, secret_key=f"{good},not-a-real-key-value")
    assert "not-a-real-key-value" not in str(raised.value)
