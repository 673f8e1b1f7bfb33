"""Sources: creating them with their keys, changing them, and keeping their secrets encrypted."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from common.crypto import SecretBox, SecretKeyError, is_encrypted
from ingest.domain import hash_api_key, new_api_key, new_publishable_key
from ingest.domain.sources.registry import PLATFORMS, SECRET_CONFIG_KEYS
from ingest.store import IngestRepository, Source

log = structlog.get_logger(__name__)

__all__ = ["Source"]  # the row type routes name in their signatures


@dataclass(frozen=True)
class NewSource:
    source: Source
    api_key: str | None
    publishable_key: str | None


async def create_source(session: AsyncSession, fields: Mapping[str, Any], now: datetime) -> NewSource:
    """A web source gets a secret API key (shown once) and a publishable key for browser forms."""
    api_key = new_api_key() if fields["kind"] == "web" else None
    publishable = new_publishable_key() if fields["kind"] == "web" else None
    source = Source(
        id=str(uuid.uuid4()),
        kind=fields["kind"],
        name=fields["name"],
        enabled=True,
        default_region=fields.get("default_region"),
        field_mapping=dict(fields.get("field_mapping") or {}),
        config=dict(fields.get("config") or {}),
        api_key_hash=hash_api_key(api_key) if api_key else None,
        api_key_prefix=api_key[:12] if api_key else None,
        publishable_key=publishable,
        allowed_origins=list(fields.get("allowed_origins") or []),
        thank_you_url=fields.get("thank_you_url"),
        created_at=now,
        updated_at=now,
    )
    session.add(source)
    await session.flush()
    return NewSource(source, api_key, publishable)


async def rotate_source_key(session: AsyncSession, source: Source, now: datetime) -> str:
    api_key = new_api_key()
    source.api_key_hash = hash_api_key(api_key)
    source.api_key_prefix = api_key[:12]
    source.updated_at = now
    await session.flush()
    return api_key


def sealed_config(box: SecretBox, config: Mapping[str, Any]) -> dict[str, Any]:
    """The config with each secret encrypted; other settings (base URLs, property lists) and nulls as they are."""
    return {
        key: box.seal(value)
        if key in SECRET_CONFIG_KEYS and isinstance(value, str) and not is_encrypted(value)
        else value
        for key, value in config.items()
    }


async def reencrypt_source_secrets(session: AsyncSession, box: SecretBox) -> int:
    """Encrypt every stored source secret under the newest key (older keys' and clear ones alike); how many."""
    count = 0
    for source in await IngestRepository(session).sources():
        config = dict(source.config or {})
        for key, value in config.items():
            if key in SECRET_CONFIG_KEYS and isinstance(value, str):
                config[key] = box.rotate(value)
                count += 1
        source.config = config  # a new dict, so the JSON column is seen as changed
    await session.flush()
    return count


def merged_config(current: Mapping[str, Any] | None, changes: Mapping[str, Any]) -> dict[str, Any]:
    """A PATCH changes one secret without resending the others; a null value removes that setting."""
    merged = {**(current or {}), **changes}
    return {key: value for key, value in merged.items() if value is not None}


def update_source(source: Source, changes: Mapping[str, Any], now: datetime) -> None:
    """Apply validated changes; `config` here is already the merged whole (see `merged_config`)."""
    for name in ("name", "enabled", "default_region", "field_mapping", "allowed_origins", "thank_you_url", "config"):
        if name in changes:
            setattr(source, name, changes[name])
    source.updated_at = now


class ConfigInvalid(ValueError):
    """A source's config does not fit its kind: one {field, reason} per problem."""

    def __init__(self, problems: list[dict[str, str]]) -> None:
        self.problems = problems
        super().__init__("invalid config")


def config_problems(kind: str, config: dict[str, Any], check_url: Callable[[str], str]) -> list[dict[str, str]]:
    """What is wrong with a source's config for its kind (unknown keys, a URL that is not one).

    Each platform's settings go under the platform's own names; anything else is a typo that would silently break
    signature checks, so it is refused when the source is saved rather than discovered at the first webhook.
    `check_url` normalizes a URL setting in place or raises ValueError.
    """
    platform = PLATFORMS[kind]
    problems = []
    for key, value in config.items():
        field = f"config.{key}"
        if key not in platform.config_keys:
            known = ", ".join(sorted(platform.config_keys)) or "none"
            problems.append({"field": field, "reason": f"not a setting of {kind} sources (known: {known})"})
        elif (key in platform.list_keys) != isinstance(value, list):
            reason = "must be a list of strings" if key in platform.list_keys else "must be a string"
            problems.append({"field": field, "reason": reason})
        elif key in platform.url_keys:
            try:
                config[key] = check_url(value)
            except ValueError as exc:
                problems.append({"field": field, "reason": str(exc)})
    return problems


async def source(session: AsyncSession, source_id: str) -> Source | None:
    """One source."""
    return await IngestRepository(session).source(source_id)


async def sources(session: AsyncSession) -> list[Source]:
    """Every source, oldest first."""
    return await IngestRepository(session).sources()


async def change_source(
    session: AsyncSession,
    box: SecretBox,
    source_id: str,
    changes: dict[str, Any],
    now: datetime,
    check_url: Callable[[str], str],
) -> Source | None:
    """Apply a PATCH: config merged key by key, sealed and checked against the kind (ConfigInvalid); None if gone."""
    found = await IngestRepository(session).source(source_id)
    if found is None:
        return None
    if "config" in changes:
        changes["config"] = merged_config(found.config, sealed_config(box, changes["config"]))
        problems = config_problems(found.kind, changes["config"], check_url)
        if problems:
            raise ConfigInvalid(problems)
    update_source(found, changes, now)
    await session.flush()
    return found


async def rotate_web_source_key(session: AsyncSession, source_id: str, now: datetime) -> tuple[Source, str] | None:
    """A web source's new API key; None if there is no such web source. The old key stops working at this commit,
    and in other ingest processes within their key cache's bound (`source_keys`)."""
    found = await IngestRepository(session).source(source_id)
    if found is None or found.kind != "web":
        return None
    return found, await rotate_source_key(session, found, now)


def config_text(source: Source, key: str) -> str:
    """A config value as text; anything else counts as unset (an empty secret then fails verification)."""
    value = (source.config or {}).get(key)
    return value if isinstance(value, str) else ""


def source_secret(source: Source, key: str, box: SecretBox) -> str:
    """A secret config value decrypted; unset or unreadable counts as empty, so verification fails (no 500)."""
    try:
        return box.reveal(config_text(source, key))
    except SecretKeyError:
        log.error("source_secret_unreadable", source_id=source.id, key=key)
        return ""
