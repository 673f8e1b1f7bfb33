"""Topics are created on the real broker with a retention that bounds how long personal data stays in them."""

from __future__ import annotations

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from common.kafka import ensure_topics
from common.settings import ServiceSettings
from common.topics import LEADS_RECEIVED, dead_letter_topic

pytestmark = [pytest.mark.integration, pytest.mark.kafka]

DAY_MS = 86_400_000


async def _retention_ms(bootstrap: str, topics: list[str]) -> dict[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, t) for t in topics])
    finally:
        await admin.close()
    found: dict[str, int] = {}
    for response in described:
        for resource in response.resources:
            _code, _message, _type, name, entries = resource[:5]
            found.update((name, int(entry[1])) for entry in entries if entry[0] == "retention.ms")
    return found


async def test_lead_and_dead_letter_topics_are_created_with_their_retention(
    kafka_bootstrap: str, namespace: str
) -> None:
    defaults = ServiceSettings(service_name="retention", kafka_bootstrap=kafka_bootstrap, topic_namespace=namespace)
    await ensure_topics(defaults, [LEADS_RECEIVED, dead_letter_topic("retention")])
    leads, dead = defaults.topic(LEADS_RECEIVED), defaults.topic("deadletter.retention.v1")
    assert await _retention_ms(kafka_bootstrap, [leads, dead]) == {leads: 7 * DAY_MS, dead: 14 * DAY_MS}

    other = f"{namespace}x."
    configured = ServiceSettings(
        service_name="retention",
        kafka_bootstrap=kafka_bootstrap,
        topic_namespace=other,
        leads_topic_retention_days=1.5,
        dead_letter_retention_days=30,
    )
    await ensure_topics(configured, [LEADS_RECEIVED, dead_letter_topic("retention")])
    got = await _retention_ms(kafka_bootstrap, [f"{other}{LEADS_RECEIVED}", f"{other}deadletter.retention.v1"])
    assert got == {f"{other}{LEADS_RECEIVED}": int(1.5 * DAY_MS), f"{other}deadletter.retention.v1": 30 * DAY_MS}
