"""Signed action links (routing.access.links), pure: what a signature covers, expiry, and key rotation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography.fernet import Fernet

from routing.access import links

pytestmark = pytest.mark.unit

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def test_a_link_carries_its_lead_action_rep_and_expiry_and_a_fresh_nonce() -> None:
    keys = links.link_keys(None)
    first = links.sign(keys, "L1", "reject", "ana", NOW + timedelta(hours=1))
    second = links.sign(keys, "L1", "reject", "ana", NOW + timedelta(hours=1))
    a, b = links.verify(keys, first, NOW), links.verify(keys, second, NOW)
    assert (a.lead_id, a.action, a.rep_id, a.expires_at) == ("L1", "reject", "ana", NOW + timedelta(hours=1))
    assert a.nonce != b.nonce  # two links for the same action are two single uses


def test_expired_and_foreign_key_links_are_refused() -> None:
    keys = links.link_keys(None)
    token = links.sign(keys, "L1", "accept", "ana", NOW)
    with pytest.raises(links.LinkRefused, match="expired"):
        links.verify(keys, token, NOW)
    other = links.link_keys(Fernet.generate_key().decode())
    with pytest.raises(links.LinkRefused, match="not valid"):
        links.verify(other, token, NOW - timedelta(seconds=1))


def test_links_signed_before_a_key_rotation_still_verify_while_the_old_key_is_listed() -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    token = links.sign(links.link_keys(old), "L1", "touch", "ana", NOW + timedelta(days=1))
    assert links.verify(links.link_keys(f"{new},{old}"), token, NOW).rep_id == "ana"
    fresh = links.sign(links.link_keys(f"{new},{old}"), "L1", "touch", "ana", NOW + timedelta(days=1))
    assert links.verify(links.link_keys(new), fresh, NOW).lead_id == "L1"  # the newest key signs
    with pytest.raises(links.LinkRefused):
        links.verify(links.link_keys(new), token, NOW)  # the old key dropped: its links stop working
    with pytest.raises(ValueError, match="unknown link action"):
        links.sign(links.link_keys(new), "L1", "convert", "ana", NOW)
